"""No secret is ever shown (issue 10: InfluxDB credentials in the URL were printed in the
open health answer, stats and start-up errors).

Credentials in a URL are refused, naming the options to use instead; then the services
run with every secret set (token, InfluxDB password and token, OpenWeatherMap key, with
an upstream that echoes the request URL) and every output is searched for them: health
with and without the token, stats, metrics, the status page, the OpenAPI document, error
answers, the logs at DEBUG, and start-up errors.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest

from benchmarks.influxd import Influxd, free_port
from ha_ingestor_services import cli
from tests.services.enrichment.test_weather_limits import echo_app
from tests.services.storage.influx_v2_standin import InfluxV2StandIn

from .conftest import Serve
from .test_cli import env, quiet_root_logger
from .test_tls import run_cli, stop, wait_healthy

__all__ = ["env", "quiet_root_logger"]  # fixtures shared with test_cli

TOKEN = "tOkEn-5ecret-for-the-services"
INFLUX_PASSWORD = "pAsS-5ecret-influx"
INFLUX_TOKEN = "iNfLuX-5ecret-api-token"
OWM_KEY = "oWm-5ecret/key+with spaces"
SECRETS = (TOKEN, INFLUX_PASSWORD, INFLUX_TOKEN, OWM_KEY)


def forms(secret: str) -> set[str]:
    """The secret and its start, as is and URL-encoded."""
    found = set()
    for form in (secret, quote(secret, safe=""), quote_plus(secret)):
        found |= {form, form[:10]}
    return found


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in text, f"{where} shows {form!r}:\n{text[:2000]}"


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (
            [
                "storage",
                "--backend",
                "influxdb",
                "--influx-url",
                f"http://admin:{INFLUX_PASSWORD}@127.0.0.1:8086",
            ],
            ("--influx-username", "--influx-password", "influx_url"),
        ),
        (
            ["enrichment", "--storage-url", f"https://user:{INFLUX_PASSWORD}@storage.lan:8004"],
            ("storage_urls", "user name or password"),
        ),
        (
            [
                "enrichment",
                "--weather-provider",
                "openweathermap",
                "--openweathermap-api-key",
                "k",
                "--openweathermap-url",
                f"https://u:{INFLUX_PASSWORD}@owm.example",
            ],
            ("openweathermap_url", "user name or password"),
        ),
    ],
)
def test_credentials_in_a_url_are_refused_without_showing_them(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], names: list[str]
) -> None:
    assert cli.main([*argv, "--token", "t"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    for name in names:
        assert name in lines[0]
    assert_no_secret("the start-up error", lines[0])


async def read_everything(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """Every answer of a service, by what was asked, as text."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    asks: dict[str, tuple[str, dict[str, str]]] = {
        "health without token": ("/api/v1/health", {}),
        "health with token": ("/api/v1/health", auth),
        "status page": ("/", {}),
        "stats": ("/api/v1/stats", auth),
        "metrics": ("/metrics", auth),
        "openapi": ("/api/v1/openapi.json", auth),
        "wrong token": ("/api/v1/stats", {"Authorization": "Bearer wrong"}),
        "no token": ("/api/v1/stats", {}),
        "not found": ("/api/v1/nothing", auth),
    }
    answers = {}
    for name, (path, headers) in asks.items():
        async with session.get(url + path, headers=headers) as answer:
            answers[name] = f"{answer.headers}\n{await answer.text()}"
    return answers


def batch(count: int) -> dict[str, Any]:
    """Events at several places, so the weather upstream is asked (and fails)."""
    return {
        "events": [
            {
                "event_id": f"secret-{index}",
                "timestamp": "2026-11-26T10:00:00Z",
                "source": "ha_ingestor",
                "data": {"event_type": "state_changed", "entity_id": "sensor.t", "state": "1"},
                "context": {"location": {"latitude": 10.0 + index, "longitude": 1.0}},
            }
            for index in range(count)
        ]
    }


async def test_no_secret_in_any_output(
    serve: Serve, influxd_server: Influxd, tmp_path: Path
) -> None:
    """stack on InfluxDB 1.x (with a user and password; influxd here has auth off, so it
    takes them), the enrichment asking an OpenWeatherMap stand-in that echoes the URL;
    and a storage on the InfluxDB 2.x stand-in with its API token."""
    owm_url = await serve(echo_app())
    standin = InfluxV2StandIn(token=INFLUX_TOKEN)
    v2_url = await serve(standin.app())
    storage_port, enrichment_port, v2_port = free_port(), free_port(), free_port()
    secrets_env = {
        "HA_INGESTOR_TOKEN": TOKEN,
        "HA_INGESTOR_INFLUX_PASSWORD": INFLUX_PASSWORD,
        "HA_INGESTOR_OPENWEATHERMAP_API_KEY": OWM_KEY,
        "HA_INGESTOR_LOG_LEVEL": "DEBUG",
    }
    stack = run_cli(
        "stack",
        "--storage-port",
        str(storage_port),
        "--enrichment-port",
        str(enrichment_port),
        "--backend",
        "influxdb",
        "--influx-url",
        influxd_server.url,
        "--influx-database",
        "secrets_test",
        "--influx-username",
        "admin",
        "--weather-provider",
        "openweathermap",
        "--openweathermap-url",
        owm_url,
        extra_env=secrets_env,
    )
    v2 = run_cli(
        "storage",
        "--port",
        str(v2_port),
        "--backend",
        "influxdb",
        "--influx-api",
        "v2",
        "--influx-url",
        v2_url,
        "--influx-org",
        "home",
        "--influx-bucket",
        "events",
        extra_env={**secrets_env, "HA_INGESTOR_INFLUX_TOKEN": INFLUX_TOKEN},
    )
    answers: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as session:
            urls = [f"http://127.0.0.1:{port}" for port in (storage_port, enrichment_port, v2_port)]
            for url in urls:
                await wait_healthy(session, url)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(
                urls[1] + "/api/v1/events/batch", json=batch(5), headers=auth
            ) as answer:
                answers["batch"] = await answer.text()
                assert answer.status == 200, answers["batch"]
            async with session.post(
                urls[2] + "/api/v1/events/batch", json=batch(2), headers=auth
            ) as answer:
                answers["v2 batch"] = await answer.text()
                assert answer.status == 200, answers["v2 batch"]
            await asyncio.sleep(0.2)
            for url in urls:
                for name, text in (await read_everything(session, url)).items():
                    answers[f"{url} {name}"] = text
    finally:
        logs = stop(stack, v2)
    assert standin.writes, "the v2 storage wrote nothing: the test proves little"
    assert "weather" in answers[f"{urls[1]} stats"]
    assert "HTTP 400" in answers[f"{urls[1]} stats"]  # the echoing upstream was asked
    assert "DEBUG" in logs
    for name, text in answers.items():
        assert_no_secret(name, text)
    assert_no_secret("the logs", logs)


async def test_no_secret_in_start_up_errors(serve: Serve, socket_enabled: None) -> None:
    """InfluxDB unreachable (1.x with a password) or refusing the token (2.x)."""
    v2_url = await serve(InfluxV2StandIn(token="another").app())
    unreachable = run_cli(
        "storage",
        "--port",
        str(free_port()),
        "--backend",
        "influxdb",
        "--influx-url",
        f"http://127.0.0.1:{free_port()}",
        "--influx-username",
        "admin",
        "--backend-timeout",
        "2",
        extra_env={"HA_INGESTOR_INFLUX_PASSWORD": INFLUX_PASSWORD, "HA_INGESTOR_TOKEN": TOKEN},
    )
    refused = run_cli(
        "storage",
        "--port",
        str(free_port()),
        "--backend",
        "influxdb",
        "--influx-api",
        "v2",
        "--influx-url",
        v2_url,
        "--influx-org",
        "home",
        "--influx-bucket",
        "events",
        extra_env={"HA_INGESTOR_INFLUX_TOKEN": INFLUX_TOKEN, "HA_INGESTOR_TOKEN": TOKEN},
    )
    for process in (unreachable, refused):
        _, err = await asyncio.to_thread(process.communicate, timeout=60)
        assert process.returncode == 2, err
        assert "error:" in err
        assert_no_secret("the start-up error", err)
