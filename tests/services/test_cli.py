"""The ha-ingestor-services command: settings, one-line errors, serving, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from benchmarks.influxd import free_port
from ha_ingestor_services import cli
from ha_ingestor_services.contract import StartupError
from ha_ingestor_services.web import service_of

from .conftest import AUTH, TOKEN

JSON_AUTH = {**AUTH, "Content-Type": "application/json"}


def envelopes(count: int, prefix: str = "cli") -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}-{index}",
            "timestamp": f"2026-11-26T10:00:{index % 60:02d}Z",
            "source": "ha_ingestor",
            "data": {
                "event_type": "state_changed",
                "entity_id": f"sensor.t{index}",
                "state": str(index),
            },
            "context": {"instance_id": "home"},
        }
        for index in range(count)
    ]


def rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No HA_INGESTOR_* setting leaks in from the machine running the tests; ids are
    kept in the test's folder and nothing is announced on the network."""
    for name in list(os.environ):
        if name.startswith(cli.ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HA_INGESTOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HA_INGESTOR_NO_ANNOUNCE", "true")
    return monkeypatch


@pytest.fixture(autouse=True)
def quiet_root_logger() -> Iterator[None]:
    """main() configures logging; put pytest's handlers back afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("argv", "environment", "message"),
    [
        (["storage"], {}, "a bearer token is needed: set HA_INGESTOR_TOKEN or pass --token"),
        (
            ["storage", "--token", "t", "--backend", "postgres"],
            {},
            "--backend: 'postgres' is not one of sqlite, influxdb",
        ),
        (["storage", "--token", "t", "--port", "99999"], {}, "--port: 99999 is not a port number"),
        (
            ["storage", "--token", "t", "--retention-days", "soon"],
            {},
            "--retention-days: invalid literal",
        ),
        (
            ["storage", "--token", "t", "--backend", "influxdb", "--influx-url", "influx:8086"],
            {},
            "influx_url: 'influx:8086' is not an http(s) URL",
        ),
        (
            ["storage", "--token", "t", "--backend", "influxdb", "--influx-api", "v2"],
            {},
            "is required for InfluxDB API v2",
        ),
        (
            ["enrichment"],
            {"HA_INGESTOR_TOKEN": "t", "HA_INGESTOR_STORAGE_URLS": "ftp://x"},
            "storage_urls: 'ftp://x' is not an http:// or https:// URL",
        ),
        (
            ["enrichment", "--token", "t", "--weather-provider", "openweathermap"],
            {},
            "openweathermap_api_key: an API key is needed",
        ),
        (
            ["stack", "--token", "t", "--storage-port", "8100", "--enrichment-port", "8100"],
            {},
            "--storage-port and --enrichment-port are both 8100",
        ),
        (
            ["stack", "--token", "t", "--log-level", "loud"],
            {},
            "--log-level: 'loud' is not one of DEBUG",
        ),
        (
            ["stack", "--token", "t", "--json-logs", "maybe"],
            {},
            "--json-logs: 'maybe' is not true or false",
        ),
        (
            ["storage", "--token", "t", "--max-batch-events", "0"],
            {},
            "--max-batch-events at least 1",
        ),
    ],
)
def test_bad_settings_end_with_one_line(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environment: dict[str, str],
    message: str,
) -> None:
    for name, value in environment.items():
        env.setenv(name, value)
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ha-ingestor-services {argv[0]}: error: ")
    assert message in lines[0]


def test_help_names_every_setting_and_its_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    for command, options in (
        ("storage", cli.STORAGE_OPTIONS),
        ("enrichment", cli.ENRICHMENT_OPTIONS),
    ):
        with pytest.raises(SystemExit) as leaving:
            cli.main([command, "--help"])
        assert leaving.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for option in (*cli.SERVER_OPTIONS, *options):
            assert option.flag in text
            assert option.env in text


def test_flags_win_over_the_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("HA_INGESTOR_SQLITE_PATH", str(tmp_path / "from-env.db"))
    env.setenv("HA_INGESTOR_RETENTION_DAYS", "30")
    args = cli.build_parser().parse_args(["storage", "--retention-days", "7"])
    settings = cli._storage_settings(args)
    assert settings.sqlite_path == str(tmp_path / "from-env.db")
    assert settings.retention_days == 7


@pytest.mark.parametrize(
    ("host", "storage_url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8004"),
        ("", "http://127.0.0.1:8004"),
        ("::", "http://[::1]:8004"),  # asyncio binds "::" IPv6 only
        ("::1", "http://[::1]:8004"),
        ("192.0.2.2", "http://192.0.2.2:8004"),
    ],
)
def test_stack_points_its_enrichment_at_its_storage(
    env: pytest.MonkeyPatch, tmp_path: Path, host: str, storage_url: str
) -> None:
    """Only the URL: the test harness refuses connections to ::1."""
    args = cli.build_parser().parse_args(
        ["stack", "--host", host, "--token", TOKEN, "--sqlite-path", str(tmp_path / "s.db")]
    )
    (_, _, _), (_, enrichment, _) = args.plan(args, cli._server(args))
    settings = service_of(enrichment).settings
    assert settings.storage_urls == (storage_url,)


async def test_stack_serves_both_and_stops_on_request(
    socket_enabled: None, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    storage_port, enrichment_port = free_port(), free_port()
    database = tmp_path / "stack.db"
    args = cli.build_parser().parse_args(
        [
            "stack",
            "--token",
            TOKEN,
            "--sqlite-path",
            str(database),
            "--storage-port",
            str(storage_port),
            "--enrichment-port",
            str(enrichment_port),
        ]
    )
    server = cli._server(args)
    stop = asyncio.Event()
    serving = asyncio.create_task(cli.serve(args.plan(args, server), server.host, 5, stop))
    enrichment = f"http://127.0.0.1:{enrichment_port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(enrichment + "/api/v1/health") as answer:
                    if answer.status == 200:
                        break
            await asyncio.sleep(0.05)
        body = orjson.dumps({"events": envelopes(5)})
        async with session.post(
            enrichment + "/api/v1/events/batch", data=body, headers=JSON_AUTH
        ) as answer:
            assert answer.status == 200
            assert {item["status"] for item in (await answer.json())["results"]} == {"stored"}
    stop.set()
    await asyncio.wait_for(serving, 10)
    assert rows(database) == 5


async def test_a_taken_port_is_a_one_line_error(
    socket_enabled: None, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = cli.build_parser().parse_args(
            [
                "storage",
                "--token",
                TOKEN,
                "--sqlite-path",
                str(tmp_path / "x.db"),
                "--port",
                str(port),
            ]
        )
        server = cli._server(args)
        with pytest.raises(StartupError, match=f"storage: cannot listen on 127.0.0.1:{port}"):
            await cli.serve(args.plan(args, server), server.host, 5)


def run_cli(*argv: str, **kwargs: Any) -> subprocess.Popen[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(cli.ENV_PREFIX)
    }
    environment["HA_INGESTOR_TOKEN"] = TOKEN
    environment["HA_INGESTOR_NO_ANNOUNCE"] = "true"
    return subprocess.Popen(
        [sys.executable, "-m", "ha_ingestor_services", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        **kwargs,
    )


def test_unreachable_influxdb_is_a_one_line_error(socket_enabled: None) -> None:
    process = run_cli(
        "storage",
        "--port",
        str(free_port()),
        "--backend",
        "influxdb",
        "--influx-url",
        f"http://127.0.0.1:{free_port()}",
        "--backend-timeout",
        "2",
    )
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("ha-ingestor-services storage: error: ")
    assert "127.0.0.1" in lines[-1]
    assert "Traceback" not in err


async def test_sigterm_finishes_what_was_accepted(socket_enabled: None, tmp_path: Path) -> None:
    """A batch in progress when SIGTERM arrives is answered and stored; then the process ends."""
    port = free_port()
    database = tmp_path / "graceful.db"
    # A long group-commit wait keeps the batch in progress when the signal lands: it waits
    # for another request, whose body never finishes arriving.
    process = run_cli(
        "storage", "--port", str(port), "--sqlite-path", str(database), "--flush-interval-ms", "800"
    )
    url = f"http://127.0.0.1:{port}"
    never = asyncio.Event()

    async def unfinished() -> AsyncIterator[bytes]:
        yield b'{"events": ['
        await never.wait()

    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(url + "/api/v1/health") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    assert time.monotonic() < deadline, "storage did not start"
                    await asyncio.sleep(0.1)
            other = asyncio.create_task(
                session.post(url + "/api/v1/events/batch", data=unfinished(), headers=JSON_AUTH)
            )
            await asyncio.sleep(0.2)
            body = orjson.dumps({"events": envelopes(200, "graceful")})
            posting = asyncio.create_task(
                session.post(url + "/api/v1/events/batch", data=body, headers=JSON_AUTH)
            )
            await asyncio.sleep(0.3)
            assert not posting.done()
            process.send_signal(signal.SIGTERM)
            async with await posting as answer:
                assert answer.status == 200
                results = (await answer.json())["results"]
            other.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await other
        assert [item["status"] for item in results] == ["stored"] * 200
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert rows(database) == 200
