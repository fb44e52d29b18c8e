"""``migrate verify`` against a real influxd and a real storage service."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from typing import Any

import aiohttp
import pytest

from benchmarks.influxd import Influxd, free_port
from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.storage.backends.line_protocol import to_line
from ha_ingestor_services.storage.records import to_record
from tests.services.conftest import TOKEN, Serve
from tests.services.storage.conftest import StartStorage
from tests.services.storage.influx_v2_standin import InfluxV2StandIn

from .conftest import (
    envelopes,
    home_assistant_database,
    sample_states,
    store_all,
    verify,
    window,
    write_lines,
)

SKIPPED = 2  # one "unavailable" and one "unknown" in `STATES`


def execute(server: Influxd, database: str, statement: str) -> None:
    body = urllib.parse.urlencode({"db": database, "q": statement}).encode()
    with urllib.request.urlopen(f"{server.url}/query", data=body, timeout=10) as answer:
        assert "error" not in answer.read().decode()


def v1(side: str, server: Influxd, database: str, layout: str) -> list[str]:
    return [
        f"--{side}-url",
        server.url,
        f"--{side}-database",
        database,
        f"--{side}-layout",
        layout,
    ]


async def test_the_same_states_in_both_layouts_agree(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influx_settings: dict[str, Any],
    influxd_server: Influxd,
) -> None:
    states = sample_states(count_power=9)
    reference = home_assistant_database(influxd_server, states)
    url, _ = await start_storage(**influx_settings)
    await store_all(client, url, envelopes(states))
    candidate = influx_settings["influx_database"]
    argv = [
        *v1("from", influxd_server, reference, "home_assistant"),
        *v1("to", influxd_server, candidate, "ha_ingestor"),
        *window(states),
    ]
    outcome = await verify(*argv)
    assert outcome.status == 0, outcome
    assert "the stores agree: 5 entities" in outcome.out
    assert outcome.err == ""
    # The retention policy named (the storage service's own): the same.
    named = await verify(*argv, "--to-retention-policy", "ha_ingestor")
    assert named.status == 0, named
    # A storage service writing Home Assistant's layout (--influx-layout home_assistant).
    mirror = {**influx_settings, "influx_database": f"{candidate}_ha"}
    mirror_url, _ = await start_storage(**mirror, influx_layout="home_assistant")
    await store_all(client, mirror_url, envelopes(states))
    mirrored = list(argv)
    mirrored[argv.index(candidate)] = mirror["influx_database"]
    mirrored[argv.index("ha_ingestor")] = "home_assistant"
    outcome = await verify(*mirrored, "--page-size", "3")
    assert outcome.status == 0, outcome
    assert "the stores agree: 5 entities" in outcome.out
    # Paged in twos (the power readings span two measurements): the same verdict.
    document = json.loads((await verify(*argv, "--json", "--page-size", "2")).out)
    assert document["agree"] is True
    assert document["totals"]["entities"] == 5
    assert document["totals"]["matched"] == len(states) - SKIPPED
    assert document["totals"]["skipped"] == SKIPPED
    assert {entity["entity_id"] for entity in document["entities"]} == {
        "sensor.temperature",
        "binary_sensor.door",
        "sensor.mode",
        "light.kitchen",
        "sensor.power",
    }


async def test_planted_differences_are_found(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influx_settings: dict[str, Any],
    influxd_server: Influxd,
) -> None:
    states = sample_states(count_power=6)
    reference = home_assistant_database(influxd_server, states)
    url, _ = await start_storage(**influx_settings)
    events = envelopes(states)
    await store_all(client, url, events)
    candidate = influx_settings["influx_database"]
    records = {
        (event["data"]["entity_id"], event["data"]["state"]): to_record(check_envelope(event))
        for event in events
    }
    # A deleted point, a changed value and an extra point, in the candidate.
    deleted = records[("sensor.mode", "comfort")]
    execute(
        influxd_server,
        candidate,
        f'DELETE FROM "state_changed" WHERE "entity_id" = \'sensor.mode\' '
        f"AND time >= {deleted.time_ns} AND time <= {deleted.time_ns}",
    )
    changed = records[("binary_sensor.door", "off")]
    write_lines(influxd_server, candidate, to_line(changed._replace(state="on")), "ha_ingestor")
    extra = to_record(check_envelope(events[0]))._replace(
        time_ns=records[("sensor.power", "0")].time_ns - 5 * 10**8
    )
    extra = extra._replace(event_id="planted", entity_id="sensor.power", state="5", value=5.0)
    write_lines(influxd_server, candidate, to_line(extra), "ha_ingestor")

    argv = [
        *v1("from", influxd_server, reference, "home_assistant"),
        *v1("to", influxd_server, candidate, "ha_ingestor"),
        *window(states),
    ]
    text = await verify(*argv, "--verbose")
    assert text.status == 1, text
    assert "sensor.mode: 1 missing, 0 extra, 0 differing" in text.out
    assert "binary_sensor.door: 0 missing, 0 extra, 1 differing" in text.out
    assert "sensor.power: 0 missing, 1 extra, 0 differing" in text.out
    assert "from 'off' to 'on'" in text.out
    assert "the stores differ: 3 of 5 entities" in text.out
    for page_size in ("2", "1000"):
        outcome = await verify(*argv, "--json", "--page-size", page_size)
        assert outcome.status == 1
        document = json.loads(outcome.out)
        assert document["agree"] is False
        by_entity = {entity["entity_id"]: entity for entity in document["entities"]}
        counts = {
            entity_id: (entity["missing"], entity["extra"], entity["differing"])
            for entity_id, entity in by_entity.items()
        }
        assert counts == {
            "sensor.mode": (1, 0, 0),
            "binary_sensor.door": (0, 0, 1),
            "sensor.power": (0, 1, 0),
            "sensor.temperature": (0, 0, 0),
            "light.kitchen": (0, 0, 0),
        }
        assert document["totals"]["entities_differing"] == 3
        (missing,) = by_entity["sensor.mode"]["examples"]["missing"]
        assert missing["value"] == "comfort"
        (differing,) = by_entity["binary_sensor.door"]["examples"]["differing"]
        assert (differing["from"], differing["to"]) == ("off", "on")
        (planted,) = by_entity["sensor.power"]["examples"]["extra"]
        assert planted["value"] == "5"
        assert document["from"]["layout"] == "home_assistant"
        assert document["to"] == {
            "kind": "influxdb-v1",
            "url": influxd_server.url,
            "layout": "ha_ingestor",
            "database": candidate,
        }
    # The other way round, missing and extra swap.
    swapped = [
        *v1("from", influxd_server, candidate, "ha_ingestor"),
        *v1("to", influxd_server, reference, "home_assistant"),
        *window(states),
        "--from-retention-policy",
        "ha_ingestor",
        "--entity",
        "sensor.power",
        "--json",
    ]
    (power,) = json.loads((await verify(*swapped)).out)["entities"]
    assert (power["missing"], power["extra"]) == (1, 0)


async def test_a_storage_service_api_as_one_side(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influxd_server: Influxd,
    socket_enabled: None,
) -> None:
    states = sample_states(count_power=7)
    reference = home_assistant_database(influxd_server, states)
    url, _ = await start_storage()  # SQLite
    events = envelopes(states)
    await store_all(client, url, events[1:])  # the first state is not there
    argv = [
        *v1("from", influxd_server, reference, "home_assistant"),
        "--to-api",
        url,
        "--to-token",
        TOKEN,
        *window(states),
        "--json",
    ]
    for page_size in ("2", "3", "5000"):
        outcome = await verify(*argv, "--page-size", page_size)
        assert outcome.status == 1, outcome
        document = json.loads(outcome.out)
        assert document["to"] == {"kind": "api", "url": url}
        assert document["totals"]["missing"] == 1
        assert document["totals"]["extra"] == document["totals"]["differing"] == 0
        assert document["totals"]["entities"] == 5
        assert document["totals"]["matched"] == len(states) - SKIPPED - 1
    await store_all(client, url, events[:1])
    outcome = await verify(*argv, "--page-size", "2")
    assert outcome.status == 0, outcome


async def test_the_token_of_the_api_side_from_the_environment(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    states = sample_states()
    url, _ = await start_storage()
    await store_all(client, url, envelopes(states))
    monkeypatch.setenv("HA_INGESTOR_MIGRATE_FROM_TOKEN", TOKEN)
    monkeypatch.setenv("HA_INGESTOR_MIGRATE_TO_TOKEN", TOKEN)
    outcome = await verify("--from-api", url, "--to-api", url, *window(states))
    assert outcome.status == 0, outcome
    # Both sides in our layout: unknown and unavailable are compared too.
    assert f"the stores agree: 4 entities, {len(states)} points" in outcome.out
    monkeypatch.setenv("HA_INGESTOR_MIGRATE_TO_TOKEN", "wrong")
    outcome = await verify("--from-api", url, "--to-api", url, *window(states))
    assert outcome.status == 2
    assert outcome.err == (
        f"ha-ingestor-services migrate verify: error: to (api {url} (query API)): "
        "refused the token (HTTP 403)\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the from side needs exactly one of --from-url and --from-api"),
        (
            ["--from-api", "http://a", "--from-url", "http://b", "--to-api", "http://c"],
            "the from side needs exactly one of --from-url and --from-api",
        ),
        (
            ["--from-url", "http://a", "--to-api", "http://c"],
            "--from-url needs --from-database (InfluxDB 1.x) or --from-bucket (2.x)",
        ),
        (
            ["--from-url", "http://a", "--from-bucket", "b", "--to-api", "http://c"],
            "--from-bucket needs --from-org",
        ),
        (
            [
                "--from-api",
                "http://a",
                "--to-url",
                "http://c",
                "--to-database",
                "d",
                "--to-layout",
                "influx",
            ],
            "--to-layout: 'influx' is not one of ha_ingestor, home_assistant",
        ),
        (["--start", "yesterday"], "--start: "),
        (["--start", "-1h", "--end", "-2h"], "--start is not before --end"),
        (["--page-size", "1"], "--page-size must be at least 2"),
    ],
)
async def test_bad_arguments_exit_2_with_one_line(argv: list[str], message: str) -> None:
    outcome = await verify(*argv)
    assert outcome.status == 2
    assert outcome.out == ""
    assert outcome.err.startswith(f"ha-ingestor-services migrate verify: error: {message}")
    assert outcome.err.count("\n") == 1


async def test_unreachable_and_unknown_sources_exit_2(
    influxd_server: Influxd, socket_enabled: None
) -> None:
    port = free_port()
    outcome = await verify(
        "--from-url", f"http://127.0.0.1:{port}", "--from-database", "home_assistant",
        "--to-api", "http://127.0.0.1:1", "--to-token", "t",
    )  # fmt: skip
    assert outcome.status == 2
    assert outcome.err.startswith(
        "ha-ingestor-services migrate verify: error: from (influxdb-v1 "
        f"http://127.0.0.1:{port} (database home_assistant, home_assistant layout)): "
        "unreachable ("
    )
    assert outcome.err.count("\n") == 1
    outcome = await verify(
        "--from-url", influxd_server.url, "--from-database", "no_such_database",
        "--to-api", "http://127.0.0.1:1",
    )  # fmt: skip
    assert outcome.status == 2
    assert outcome.err.endswith("database 'no_such_database' not found\n")


def test_the_installed_command_exits_2_on_an_unreachable_url(socket_enabled: None) -> None:
    port = free_port()
    command = [sys.executable, "-m", "ha_ingestor_services", "migrate", "verify"]
    command += ["--from-api", f"http://127.0.0.1:{port}", "--to-api", f"http://127.0.0.1:{port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"ha-ingestor-services migrate verify: error: from (api http://127.0.0.1:{port} "
        "(query API)): unreachable ("
    )


async def test_an_influxdb_2_bucket_as_one_side(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influxd_server: Influxd,
    serve: Serve,
) -> None:
    """No InfluxDB 2.x server can run here: the storage tests' stand-in answers the Flux."""
    standin = InfluxV2StandIn()
    influx_url = await serve(standin.app())
    states = sample_states(count_power=5)
    reference = home_assistant_database(influxd_server, states)
    url, _ = await start_storage(
        backend="influxdb",
        influx_api="v2",
        influx_url=influx_url,
        influx_org=standin.org,
        influx_bucket=standin.bucket,
        influx_token=standin.token,
    )
    await store_all(client, url, envelopes(states))
    argv = [
        *v1("from", influxd_server, reference, "home_assistant"),
        *["--to-url", influx_url, "--to-org", standin.org, "--to-bucket", standin.bucket],
        *["--to-token", standin.token, "--entity", "sensor.power", "--entity", "sensor.mode"],
        *window(states),
        "--json",
    ]
    for page_size in ("2", "100"):
        outcome = await verify(*argv, "--page-size", page_size)
        assert outcome.status == 0, outcome
        document = json.loads(outcome.out)
        assert document["to"]["kind"] == "influxdb-v2"
        assert [entity["matched"] for entity in document["entities"]] == [4, 5]
    assert 'r.entity_id == "sensor.power"' in standin.queries[-1]


async def test_progress_goes_to_stderr_when_asked(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    states = sample_states()
    url, _ = await start_storage()
    await store_all(client, url, envelopes(states))
    sides = ["--from-api", url, "--from-token", TOKEN, "--to-api", url, "--to-token", TOKEN]
    quiet = await verify(*sides, *window(states), "--json")
    assert quiet.err == ""  # stderr is no terminal here
    shown = await verify(*sides, *window(states), "--json", "--progress", "--page-size", "2")
    assert shown.status == 0
    assert shown.err.startswith("listing the entities of both sides...\n")
    assert shown.err.endswith("] 4/4 entities, 38 points read\n")
    assert json.loads(shown.out)["totals"]["matched"] == len(states) == 19
