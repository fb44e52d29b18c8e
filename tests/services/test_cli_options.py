"""The command line made from the settings dataclasses (options.py) offers exactly the
flags, environment variables and defaults of the hand-written one it replaced."""

from __future__ import annotations

import argparse
import itertools
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import pytest

from ha_ingestor_services import cli
from ha_ingestor_services.limits import Limits
from ha_ingestor_services.options import (
    ENV_PREFIX,
    Option,
    comma_list,
    option,
    options_of,
    parse_bool,
)

# Captured from the hand-written cli.py before issue 11: flag, env var, default.
SERVER = [
    ("--host", "HA_INGESTOR_HOST", "127.0.0.1"),
    ("--token", "HA_INGESTOR_TOKEN", ""),
    ("--tls-cert", "HA_INGESTOR_TLS_CERT", None),
    ("--tls-key", "HA_INGESTOR_TLS_KEY", None),
    ("--log-level", "HA_INGESTOR_LOG_LEVEL", "INFO"),
    ("--json-logs", "HA_INGESTOR_JSON_LOGS", False),
    ("--max-body-bytes", "HA_INGESTOR_MAX_BODY_BYTES", 16 * 1024 * 1024),
    ("--max-batch-events", "HA_INGESTOR_MAX_BATCH_EVENTS", 5000),
    ("--shutdown-timeout", "HA_INGESTOR_SHUTDOWN_TIMEOUT", 30.0),
    # issue 15: the service's id and its announcement
    ("--service-id", "HA_INGESTOR_SERVICE_ID", None),
    ("--state-dir", "HA_INGESTOR_STATE_DIR", "~/.local/state/ha-ingestor"),
    ("--no-announce", "HA_INGESTOR_NO_ANNOUNCE", False),
]
PORTS = {
    "enrichment": [("--port", "HA_INGESTOR_PORT", 8002)],
    "storage": [("--port", "HA_INGESTOR_PORT", 8004)],
    "stack": [
        ("--storage-port", "HA_INGESTOR_STORAGE_PORT", 8004),
        ("--enrichment-port", "HA_INGESTOR_ENRICHMENT_PORT", 8002),
    ],
}
ENRICHMENT = [
    ("--storage-url", "HA_INGESTOR_STORAGE_URLS", ("http://127.0.0.1:8004",)),
    ("--storage-token", "HA_INGESTOR_STORAGE_TOKEN", None),  # the CLI gives --token's
    ("--storage-ca-file", "HA_INGESTOR_STORAGE_CA_FILE", None),
    ("--storage-timeout", "HA_INGESTOR_STORAGE_TIMEOUT_S", 20.0),
    ("--storage-connect-timeout", "HA_INGESTOR_STORAGE_CONNECT_TIMEOUT_S", 3.0),
    ("--storage-attempts", "HA_INGESTOR_STORAGE_ATTEMPTS", 2),
    ("--weather-provider", "HA_INGESTOR_WEATHER_PROVIDER", "none"),
    ("--openweathermap-api-key", "HA_INGESTOR_OPENWEATHERMAP_API_KEY", None),
    ("--openweathermap-url", "HA_INGESTOR_OPENWEATHERMAP_URL", "https://api.openweathermap.org"),
    ("--weather-cache-ttl", "HA_INGESTOR_WEATHER_CACHE_TTL_S", 900.0),
    ("--weather-failure-ttl", "HA_INGESTOR_WEATHER_FAILURE_TTL_S", 60.0),
    ("--weather-location-precision", "HA_INGESTOR_WEATHER_LOCATION_PRECISION", 2),
    ("--weather-timeout", "HA_INGESTOR_WEATHER_TIMEOUT_S", 2.0),
    ("--weather-max-lookups", "HA_INGESTOR_WEATHER_MAX_LOOKUPS", 20),
]
STORAGE = [
    ("--backend", "HA_INGESTOR_BACKEND", "sqlite"),
    ("--sqlite-path", "HA_INGESTOR_SQLITE_PATH", "ha_ingestor_events.db"),
    ("--sqlite-synchronous", "HA_INGESTOR_SQLITE_SYNCHRONOUS", "full"),
    ("--retention-days", "HA_INGESTOR_RETENTION_DAYS", 0),
    ("--influx-url", "HA_INGESTOR_INFLUX_URL", "http://127.0.0.1:8086"),
    ("--influx-api", "HA_INGESTOR_INFLUX_API", "v1"),
    ("--influx-layout", "HA_INGESTOR_INFLUX_LAYOUT", "ha_ingestor"),  # issue 13
    ("--influx-database", "HA_INGESTOR_INFLUX_DATABASE", "ha_ingestor"),
    ("--influx-retention-policy", "HA_INGESTOR_INFLUX_RETENTION_POLICY", "ha_ingestor"),
    ("--influx-username", "HA_INGESTOR_INFLUX_USERNAME", None),
    ("--influx-password", "HA_INGESTOR_INFLUX_PASSWORD", None),
    ("--influx-org", "HA_INGESTOR_INFLUX_ORG", None),
    ("--influx-bucket", "HA_INGESTOR_INFLUX_BUCKET", None),
    ("--influx-token", "HA_INGESTOR_INFLUX_TOKEN", None),
    ("--flush-max-events", "HA_INGESTOR_FLUSH_MAX_EVENTS", 5000),
    ("--flush-interval-ms", "HA_INGESTOR_FLUSH_INTERVAL_MS", 2.0),
    ("--backend-timeout", "HA_INGESTOR_TIMEOUT_S", 10.0),
    ("--retry-after", "HA_INGESTOR_RETRY_AFTER_S", 5.0),
]
# `stack` points its enrichment at its own storage.
STACK_ENRICHMENT = ENRICHMENT[3:]
TODAY = {
    "enrichment": [*SERVER, *PORTS["enrichment"], *ENRICHMENT],
    "storage": [*SERVER, *PORTS["storage"], *STORAGE],
    "stack": [*SERVER, *PORTS["stack"], *STORAGE, *STACK_ENRICHMENT],
}


def subcommand(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = commands.choices[command]
    return chosen


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


def all_options(command: str) -> list[Option]:
    groups = [group for _, group in cli.COMMANDS[command].groups]
    return [*cli.SERVER_OPTIONS, *cli.PORT_OPTIONS[command], *itertools.chain(*groups)]


@pytest.mark.parametrize("command", sorted(TODAY))
def test_the_flags_env_vars_and_defaults_are_todays(command: str) -> None:
    options = {setting.flag: setting for setting in all_options(command)}
    offered = []
    for action in subcommand(command)._actions:
        if action.dest == "help":
            continue
        assert action.default is None  # else the environment could never fill it
        flag = action.option_strings[0]
        env_var = re.fullmatch(r".* \[env (\w+)\]", action.help or "")
        assert env_var is not None, flag
        assert env_var[1] == options[flag].env
        offered.append((flag, env_var[1], options[flag].default))
    assert offered == TODAY[command]


@pytest.mark.parametrize("command", sorted(TODAY))
def test_the_defaults_shown_are_the_ones_used(command: str, env: pytest.MonkeyPatch) -> None:
    """Nothing given: every setting is the default its help shows."""
    args = cli.build_parser().parse_args([command])
    used = asdict(cli.ServerSettings(**cli._values(args, cli.SERVER_OPTIONS)))
    ports = zip(cli.PORT_OPTIONS[command], cli._ports(args), strict=True)
    used |= {port.dest: value for port, value in ports}
    if command != "enrichment":
        used |= asdict(cli._storage_settings(args))
    if command != "storage":
        server = cli._Server("127.0.0.1", "t", Limits(), 30.0)
        used |= asdict(cli._enrichment_settings(args, server)) | {"storage_token": None}
    for setting in all_options(command):
        assert used[setting.dest] == setting.default, setting.flag


def test_types_give_the_reading() -> None:
    @dataclass(frozen=True)
    class Example:
        mode: Literal["a", "b"] = field(default="a", metadata=option("mode (default {default})"))
        on: bool = field(default=False, metadata=option("on or off"))
        count: int = field(default=3, metadata=option("how many"))
        seconds_s: float = field(default=1.5, metadata=option("wait (default {default})"))
        urls: tuple[str, ...] = field(default=("x", "y"), metadata=option("urls ({default})"))
        name: str | None = field(default=None, metadata=option("name", flag="--called"))
        hidden: bool = True

    mode, on, count, seconds, urls, name = options_of(Example)
    assert (mode.flag, mode.choices, mode.help, mode.env) == (
        "--mode",
        ("a", "b"),
        "mode (default a)",
        "HA_INGESTOR_MODE",
    )
    assert (on.parse, on.metavar) == (parse_bool, "true|false")
    assert count.parse is int
    assert (seconds.flag, seconds.parse, seconds.help) == ("--seconds", float, "wait (default 1.5)")
    assert (urls.parse, urls.help) == (comma_list, "urls (x,y)")
    assert (name.flag, name.parse, name.dest) == ("--called", str, "name")


def test_a_type_without_a_reading_is_refused() -> None:
    @dataclass(frozen=True)
    class Example:
        ratio: complex = field(default=1j, metadata=option("no"))

    with pytest.raises(TypeError, match="no command-line reader"):
        options_of(Example)


@pytest.mark.parametrize(
    ("text", "value"), [("1", True), ("Yes", True), ("on", True), ("off", False), ("", False)]
)
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_parse_bool_refuses_other_words() -> None:
    with pytest.raises(ValueError, match="'maybe' is not true or false"):
        parse_bool("maybe")


def test_comma_list() -> None:
    assert comma_list(" http://a:8004/ , https://b/,") == ("http://a:8004/", "https://b/")
