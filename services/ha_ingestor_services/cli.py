"""``ha-ingestor-services``: start the enrichment, the storage, or both ("stack").

Every setting is a flag and an environment variable (``HA_INGESTOR_`` + the setting's
name in capitals, e.g. ``HA_INGESTOR_TOKEN``, ``HA_INGESTOR_SQLITE_PATH``); a flag wins
over the environment. A bad setting or an unreachable dependency at start ends the
program with one line on stderr and exit status 2. SIGINT or SIGTERM stops taking new
connections, lets the requests in progress finish, then closes the backends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import __version__, tls
from .connections import ServiceRunner
from .enrichment.service import EnrichmentService
from .enrichment.settings import EnrichmentSettings, parse_url_list
from .limits import DEFAULT_MAX_BATCH_EVENTS, DEFAULT_MAX_BODY_BYTES, Limits
from .logs import configure_logging
from .storage.service import StorageService
from .storage.settings import StorageSettings
from .contract import StartupError
from .web import create_app

_LOGGER = logging.getLogger(__name__)

ENV_PREFIX = "HA_INGESTOR_"
ENRICHMENT_PORT = 8002
STORAGE_PORT = 8004


class SettingError(Exception):
    """A setting the program cannot start with; the message is the whole explanation."""


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag, the settings field it fills, how to read it, its help."""

    flag: str
    dest: str
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not true or false")


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a port number (1-65535)")
    return port


SERVER_OPTIONS = (
    Option(
        "--host",
        "host",
        "address to listen on (default 127.0.0.1; 0.0.0.0 for all, then with --tls-cert)",
    ),
    Option("--token", "token", "bearer token clients must send (required; prefer the env var)"),
    Option(
        "--tls-cert",
        "tls_cert",
        "PEM certificate (chain): serve HTTPS only, with --tls-key",
        metavar="FILE",
    ),
    Option("--tls-key", "tls_key", "PEM private key of --tls-cert", metavar="FILE"),
    Option(
        "--log-level",
        "log_level",
        "how much to log (default INFO)",
        str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    Option(
        "--json-logs", "json_logs", "log JSON lines instead of text", _flag, metavar="true|false"
    ),
    Option(
        "--max-body-bytes",
        "max_body_bytes",
        "largest request body accepted, after gzip (default 16 MiB)",
        int,
    ),
    Option(
        "--max-batch-events",
        "max_batch_events",
        f"most events in one batch (default {DEFAULT_MAX_BATCH_EVENTS})",
        int,
    ),
    Option(
        "--shutdown-timeout",
        "shutdown_timeout",
        "seconds requests in progress get to finish on SIGTERM (default 30)",
        float,
    ),
)

ENRICHMENT_OPTIONS = (
    Option(
        "--storage-url",
        "storage_urls",
        "storage base URL; several, comma-separated, fail over in order (default http://127.0.0.1:8004)",
        parse_url_list,
        metavar="URL[,URL...]",
    ),
    Option("--storage-token", "storage_token", "bearer token storage expects (default: --token)"),
    Option(
        "--storage-ca-file",
        "storage_ca_file",
        "PEM certificate(s) to trust for https:// storage URLs, e.g. storage's self-signed one",
        metavar="FILE",
    ),
    Option(
        "--storage-timeout",
        "storage_timeout_s",
        "seconds storage gets to take a batch before the answer is 503 (default 20)",
        float,
    ),
    Option(
        "--storage-connect-timeout",
        "storage_connect_timeout_s",
        "seconds to connect to storage (default 3)",
        float,
    ),
    Option(
        "--storage-attempts",
        "storage_attempts",
        "tries per request before answering 503 (default 2)",
        int,
    ),
    Option(
        "--weather-provider",
        "weather_provider",
        "weather when Home Assistant sends none (default none)",
        choices=("none", "openweathermap"),
    ),
    Option(
        "--openweathermap-api-key",
        "openweathermap_api_key",
        "OpenWeatherMap API key (for --weather-provider openweathermap)",
    ),
    Option(
        "--openweathermap-url",
        "openweathermap_url",
        "OpenWeatherMap API base URL (default https://api.openweathermap.org)",
    ),
    Option(
        "--weather-cache-ttl",
        "weather_cache_ttl_s",
        "seconds a weather answer is reused per location (default 900)",
        float,
    ),
    Option(
        "--weather-failure-ttl",
        "weather_failure_ttl_s",
        "seconds a failed weather call is remembered (default 60)",
        float,
    ),
    Option(
        "--weather-location-precision",
        "weather_location_precision",
        "decimals locations are rounded to for weather (default 2, about 1 km)",
        int,
    ),
    Option(
        "--weather-timeout",
        "weather_timeout_s",
        "seconds one weather call may take (default 2)",
        float,
    ),
    Option(
        "--weather-max-lookups",
        "weather_max_lookups",
        "most uncached locations one batch looks up; the rest go without (default 20)",
        int,
    ),
)

STORAGE_OPTIONS = (
    Option(
        "--backend",
        "backend",
        "where events are kept (default sqlite)",
        choices=("sqlite", "influxdb"),
    ),
    Option(
        "--sqlite-path",
        "sqlite_path",
        "SQLite database file, created when missing (default ha_ingestor_events.db)",
    ),
    Option(
        "--sqlite-synchronous",
        "sqlite_synchronous",
        "full: each commit synced to disk (default); normal: safe from a service crash only",
        choices=("full", "normal"),
    ),
    Option(
        "--retention-days",
        "retention_days",
        "days to keep events; 0 keeps them forever (default 0)",
        int,
    ),
    Option("--influx-url", "influx_url", "InfluxDB base URL (default http://127.0.0.1:8086)"),
    Option(
        "--influx-api",
        "influx_api",
        "v1 for InfluxDB 1.x; v2 for 2.x, 3.x and Cloud (default v1)",
        choices=("v1", "v2"),
    ),
    Option(
        "--influx-database",
        "influx_database",
        "InfluxDB 1.x database, created at start (default ha_ingestor)",
    ),
    Option(
        "--influx-retention-policy",
        "influx_retention_policy",
        "InfluxDB 1.x retention policy, made the default (default ha_ingestor)",
    ),
    Option("--influx-username", "influx_username", "InfluxDB 1.x user, when authentication is on"),
    Option("--influx-password", "influx_password", "InfluxDB 1.x password (prefer the env var)"),
    Option("--influx-org", "influx_org", "InfluxDB 2.x+ organization"),
    Option("--influx-bucket", "influx_bucket", "InfluxDB 2.x+ bucket (must exist)"),
    Option("--influx-token", "influx_token", "InfluxDB 2.x+ API token (prefer the env var)"),
    Option(
        "--flush-max-events",
        "flush_max_events",
        "most events in one group commit (default 5000)",
        int,
    ),
    Option(
        "--flush-interval-ms",
        "flush_interval_ms",
        "milliseconds a write waits for others to join it (default 2)",
        float,
    ),
    Option(
        "--backend-timeout",
        "timeout_s",
        "seconds a backend call may take before the answer is 503 (default 10)",
        float,
    ),
    Option(
        "--retry-after", "retry_after_s", "Retry-After seconds sent with a 503 (default 5)", float
    ),
)


def _add_options(parser: argparse._ActionsContainer, options: Sequence[Option]) -> None:
    # Defaults stay None here: a missing flag falls back to the environment, then to the
    # settings' own default, so the defaults live in one place (the settings classes).
    for option in options:
        # Choices are checked in `_values`, so a flag and its env var are read the same way.
        metavar = option.metavar or option.flag.removeprefix("--").upper().replace("-", "_")
        if option.choices:
            metavar = "{" + ",".join(option.choices) + "}"
        parser.add_argument(
            option.flag,
            dest=option.dest,
            default=None,
            metavar=metavar,
            help=f"{option.help} [env {option.env}]",
        )


def _values(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """Each given setting, read from its flag or else its environment variable."""
    values: dict[str, Any] = {}
    for option in options:
        raw, source = getattr(args, option.dest, None), option.flag
        if raw is None:
            raw, source = os.environ.get(option.env), option.env
        if raw is None:
            continue
        try:
            value = option.parse(raw)
        except ValueError as err:
            raise SettingError(f"{source}: {err}") from None
        if option.choices is not None and value not in option.choices:
            raise SettingError(f"{source}: {raw!r} is not one of {', '.join(option.choices)}")
        values[option.dest] = value
    return values


def _settings[T](cls: Callable[..., T], values: dict[str, Any]) -> T:
    try:
        return cls(**values)
    except ValueError as err:  # the settings classes explain themselves in one line
        raise SettingError(str(err)) from None


@dataclass(frozen=True, slots=True)
class _Server:
    """What every command shares: where to listen and how to answer."""

    host: str
    token: str
    limits: Limits
    shutdown_timeout: float
    tls_cert: str | None = None
    ssl_context: ssl.SSLContext | None = None  # None: plain HTTP


def _server(args: argparse.Namespace) -> _Server:
    values = _values(args, SERVER_OPTIONS)
    configure_logging(values.get("log_level", "INFO"), json=values.get("json_logs", False))
    token = values.get("token", "").strip()
    if not token:
        raise SettingError(f"a bearer token is needed: set {ENV_PREFIX}TOKEN or pass --token")
    limits = Limits(
        max_body_bytes=values.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        max_batch_events=values.get("max_batch_events", DEFAULT_MAX_BATCH_EVENTS),
    )
    if limits.max_body_bytes < 1024 or limits.max_batch_events < 1:
        raise SettingError(
            "--max-body-bytes must be at least 1024 and --max-batch-events at least 1"
        )
    try:
        context = tls.server_context(values.get("tls_cert"), values.get("tls_key"))
    except ValueError as err:
        raise SettingError(str(err)) from None
    return _Server(
        values.get("host", "127.0.0.1"),
        token,
        limits,
        values.get("shutdown_timeout", 30.0),
        values.get("tls_cert"),
        context,
    )


def _port_of(args: argparse.Namespace, dest: str, default: int) -> int:
    raw, source = getattr(args, dest), "--" + dest.replace("_", "-")
    if raw is None:
        raw, source = os.environ.get(ENV_PREFIX + dest.upper()), ENV_PREFIX + dest.upper()
    if raw is None:
        return default
    try:
        return _port(raw)
    except ValueError as err:
        raise SettingError(f"{source}: {err}") from None


def _enrichment_settings(
    args: argparse.Namespace, server: _Server, **fixed: Any
) -> EnrichmentSettings:
    values = {"storage_token": server.token, **_values(args, ENRICHMENT_OPTIONS), **fixed}
    return _settings(EnrichmentSettings, values)


def _storage_settings(args: argparse.Namespace) -> StorageSettings:
    return _settings(StorageSettings, _values(args, STORAGE_OPTIONS))


Plan = list[tuple[str, web.Application, int]]


def _plan_enrichment(args: argparse.Namespace, server: _Server) -> Plan:
    service = EnrichmentService(_enrichment_settings(args, server))
    app = create_app(service, token=server.token, limits=server.limits)
    return [("enrichment", app, _port_of(args, "port", ENRICHMENT_PORT))]


def _plan_storage(args: argparse.Namespace, server: _Server) -> Plan:
    service = StorageService(_storage_settings(args))
    app = create_app(service, token=server.token, limits=server.limits)
    return [("storage", app, _port_of(args, "port", STORAGE_PORT))]


def _plan_stack(args: argparse.Namespace, server: _Server) -> Plan:
    """Storage first (the enrichment's dependency), then the enrichment pointing at it."""
    storage_port = _port_of(args, "storage_port", STORAGE_PORT)
    enrichment_port = _port_of(args, "enrichment_port", ENRICHMENT_PORT)
    if storage_port == enrichment_port:
        raise SettingError(f"--storage-port and --enrichment-port are both {storage_port}")
    local = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    storage = StorageService(_storage_settings(args))
    fixed: dict[str, Any] = {"storage_urls": (f"http://{local}:{storage_port}",)}
    if server.ssl_context is not None:
        # Storage speaks HTTPS only: the enrichment trusts exactly its certificate.
        fixed = {
            "storage_urls": (f"https://{local}:{storage_port}",),
            "storage_ca_file": server.tls_cert,
            "storage_check_hostname": False,
        }
    enrichment = EnrichmentService(_enrichment_settings(args, server, **fixed))
    return [
        ("storage", create_app(storage, token=server.token, limits=server.limits), storage_port),
        (
            "enrichment",
            create_app(enrichment, token=server.token, limits=server.limits),
            enrichment_port,
        ),
    ]


async def serve(
    plan: Plan,
    host: str,
    shutdown_timeout: float,
    stop: asyncio.Event | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Start each app in order, run until SIGINT/SIGTERM (or ``stop``), stop in reverse.

    With ``ssl_context`` every app speaks HTTPS only.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runners: list[ServiceRunner] = []
    try:
        for name, app, port in plan:
            # ServiceRunner: aiohttp's, with the connection bounds of the app's Limits.
            runner = ServiceRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
            await runner.setup()  # runs the service's start(): StartupError on a bad backend
            runners.append(runner)
            try:
                await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
            except OSError as err:
                raise StartupError(
                    f"{name}: cannot listen on {host}:{port}: {err.strerror}"
                ) from None
            scheme = "https" if ssl_context is not None else "http"
            _LOGGER.info("%s %s listening on %s://%s:%d", name, __version__, scheme, host, port)
        await stop.wait()
        _LOGGER.info("stopping: finishing the requests in progress")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ha-ingestor-services",
        description="HA Ingestor's companion services: enrichment pipeline and data storage.",
        epilog=f"Every flag can also be set by its environment variable ({ENV_PREFIX}...).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        help_text: str,
        plan: Callable[[argparse.Namespace, _Server], Plan],
        ports: dict[str, str],
    ) -> argparse.ArgumentParser:
        """A subcommand with the server options and its port flags (flag: what it is for)."""
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(plan=plan)
        _add_options(sub.add_argument_group("server"), SERVER_OPTIONS)
        for flag, text in ports.items():
            env = ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()
            sub.add_argument(flag, default=None, help=f"{text} [env {env}]")
        return sub

    enrichment = command(
        "enrichment",
        "Run the enrichment pipeline (weather, normalization, metadata) in front of storage.",
        _plan_enrichment,
        {"--port": f"port to listen on (default {ENRICHMENT_PORT})"},
    )
    _add_options(enrichment.add_argument_group("enrichment"), ENRICHMENT_OPTIONS)

    storage = command(
        "storage",
        "Run the data storage service (SQLite, InfluxDB 1.x or 2.x/3.x).",
        _plan_storage,
        {"--port": f"port to listen on (default {STORAGE_PORT})"},
    )
    _add_options(storage.add_argument_group("storage"), STORAGE_OPTIONS)

    stack = command(
        "stack",
        "Run both in one process: storage (SQLite by default) and the enrichment in front of it.",
        _plan_stack,
        {
            "--storage-port": f"storage's port (default {STORAGE_PORT})",
            "--enrichment-port": f"the enrichment's port (default {ENRICHMENT_PORT})",
        },
    )
    _add_options(stack.add_argument_group("storage"), STORAGE_OPTIONS)
    stack_enrichment = [
        option
        for option in ENRICHMENT_OPTIONS
        if option.dest not in ("storage_urls", "storage_token", "storage_ca_file")
    ]
    _add_options(stack.add_argument_group("enrichment"), stack_enrichment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        server = _server(args)
        plan = args.plan(args, server)
        asyncio.run(
            serve(plan, server.host, server.shutdown_timeout, ssl_context=server.ssl_context)
        )
    except (SettingError, StartupError) as err:
        print(f"ha-ingestor-services {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
