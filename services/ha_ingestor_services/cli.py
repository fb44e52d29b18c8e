"""``ha-ingestor-services``: start the enrichment, the storage, or both ("stack").

Every setting is a flag and an environment variable (``HA_INGESTOR_`` + the setting's
name in capitals, e.g. ``HA_INGESTOR_TOKEN``, ``HA_INGESTOR_SQLITE_PATH``), made from the
fields of the settings dataclasses (options.py); a flag wins over the environment. A bad
setting or an unreachable dependency at start ends the program with one line on stderr
and exit status 2. SIGINT or SIGTERM stops taking new connections, lets the requests in
progress finish, then closes the backends.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import ssl
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from . import __version__, tls
from . import announce as announcement
from .connections import ServiceRunner
from .contract import StartupError
from .enrichment.service import EnrichmentService
from .enrichment.settings import EnrichmentSettings
from .identity import DEFAULT_STATE_DIR, IdentitySource, Role, canonical_id
from .limits import DEFAULT_MAX_BATCH_EVENTS, DEFAULT_MAX_BODY_BYTES, Limits
from .logs import configure_logging
from .migrate import command as migrate
from .options import ENV_PREFIX, Option, option, options_of, parse_bool
from .storage.service import StorageService
from .storage.settings import StorageSettings
from .web import create_app, service_of, token_required

_LOGGER = logging.getLogger(__name__)

ENRICHMENT_PORT = 8002
STORAGE_PORT = 8004

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class SettingError(Exception):
    """A setting the program cannot start with; the message is the whole explanation."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """What every command shares: where to listen and how to answer (options.py)."""

    host: str = field(
        default="127.0.0.1",
        metadata=option(
            "address to listen on (default {default}; 0.0.0.0 for all, then with --tls-cert)"
        ),
    )
    token: str = field(
        default="",
        metadata=option("bearer token clients must send (required; prefer the env var)"),
    )
    tls_cert: str | None = field(
        default=None,
        metadata=option(
            "PEM certificate (chain): serve HTTPS only, with --tls-key", metavar="FILE"
        ),
    )
    tls_key: str | None = field(
        default=None, metadata=option("PEM private key of --tls-cert", metavar="FILE")
    )
    log_level: LogLevel = field(
        default="INFO", metadata=option("how much to log (default {default})", parse=str.upper)
    )
    json_logs: bool = field(default=False, metadata=option("log JSON lines instead of text"))
    max_body_bytes: int = field(
        default=DEFAULT_MAX_BODY_BYTES,
        metadata=option("largest request body accepted, after gzip (default 16 MiB)"),
    )
    max_batch_events: int = field(
        default=DEFAULT_MAX_BATCH_EVENTS,
        metadata=option("most events in one batch (default {default})"),
    )
    shutdown_timeout: float = field(
        default=30.0,
        metadata=option(
            "seconds requests in progress get to finish on SIGTERM (default {default})"
        ),
    )
    # identity.py: SQLite storage keeps its id in its file; the others in the state dir.
    service_id: str | None = field(
        default=None,
        metadata=option(
            "this service's fixed id (a UUID) instead of the one it keeps; for stack, "
            "storage's (the enrichment's is derived from it)",
            metavar="UUID",
        ),
    )
    state_dir: str = field(
        default=DEFAULT_STATE_DIR,
        metadata=option(
            "folder for the id file of the enrichment and of InfluxDB storage, made when "
            "missing (default {default})",
            metavar="DIR",
        ),
    )
    no_announce: bool = field(
        default=False, metadata=option("do not announce the service over mDNS/zeroconf")
    )


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a port number (1-65535)")
    return port


def _port_option(flag: str, text: str, default: int) -> Option:
    dest = flag.removeprefix("--").replace("-", "_")
    return Option(flag, dest, f"{text} (default {default})", _port, default=default)


SERVER_OPTIONS = options_of(ServerSettings)
ENRICHMENT_OPTIONS = options_of(EnrichmentSettings)
STORAGE_OPTIONS = options_of(StorageSettings)
# `stack` points its enrichment at its own storage.
STACK_ENRICHMENT_OPTIONS = tuple(
    setting
    for setting in ENRICHMENT_OPTIONS
    if setting.dest not in ("storage_urls", "storage_token", "storage_ca_file")
)
# Each command's ports: not settings of a service.
PORT_OPTIONS = {
    "enrichment": (_port_option("--port", "port to listen on", ENRICHMENT_PORT),),
    "storage": (_port_option("--port", "port to listen on", STORAGE_PORT),),
    "stack": (
        _port_option("--storage-port", "storage's port", STORAGE_PORT),
        _port_option("--enrichment-port", "the enrichment's port", ENRICHMENT_PORT),
    ),
}


def _add_options(parser: argparse._ActionsContainer, options: Sequence[Option]) -> None:
    # Defaults stay None here: a missing flag falls back to the environment, then to the
    # settings' own default, so the defaults live in one place (the settings classes).
    for setting in options:
        # Choices are checked in `_values`, so a flag and its env var are read the same way.
        metavar = setting.metavar or setting.flag.removeprefix("--").upper().replace("-", "_")
        if setting.choices:
            metavar = "{" + ",".join(setting.choices) + "}"
        # A true/false flag alone means true: ``--no-announce`` as well as ``--no-announce true``.
        flag_alone: dict[str, Any] = (
            {"nargs": "?", "const": "true"} if setting.parse is parse_bool else {}
        )
        parser.add_argument(
            setting.flag,
            dest=setting.dest,
            default=None,
            metavar=metavar,
            help=f"{setting.help} [env {setting.env}]",
            **flag_alone,
        )


def _values(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """Each given setting, read from its flag or else its environment variable."""
    values: dict[str, Any] = {}
    for setting in options:
        raw, source = getattr(args, setting.dest, None), setting.flag
        if raw is None:
            raw, source = os.environ.get(setting.env), setting.env
        if raw is None:
            continue
        try:
            value = setting.parse(raw)
        except ValueError as err:
            raise SettingError(f"{source}: {err}") from None
        if setting.choices is not None and value not in setting.choices:
            raise SettingError(f"{source}: {raw!r} is not one of {', '.join(setting.choices)}")
        values[setting.dest] = value
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
    service_id: str | None = None
    state_dir: str | None = None
    announce: bool = True

    def identity(self, role: Role, *, stack: bool = False) -> IdentitySource:
        """Where the ``role`` service finds its id. In `stack` a given id is storage's
        and the enrichment's is derived from it, so the two never share one."""
        given = self.service_id
        if given is not None and stack and role == "enrichment":
            given = str(uuid.uuid5(uuid.UUID(given), "enrichment"))
        return IdentitySource(role, given, self.state_dir)


def _server(args: argparse.Namespace) -> _Server:
    settings = ServerSettings(**_values(args, SERVER_OPTIONS))
    configure_logging(settings.log_level, json=settings.json_logs)
    token = settings.token.strip()
    if not token:
        raise SettingError(f"a bearer token is needed: set {ENV_PREFIX}TOKEN or pass --token")
    limits = Limits(
        max_body_bytes=settings.max_body_bytes, max_batch_events=settings.max_batch_events
    )
    if limits.max_body_bytes < 1024 or limits.max_batch_events < 1:
        raise SettingError(
            "--max-body-bytes must be at least 1024 and --max-batch-events at least 1"
        )
    try:
        context = tls.server_context(settings.tls_cert, settings.tls_key)
    except ValueError as err:
        raise SettingError(str(err)) from None
    service_id = settings.service_id
    if service_id is not None:
        try:
            service_id = canonical_id(service_id)
        except ValueError as err:
            raise SettingError(f"--service-id: {err}") from None
    if not settings.state_dir.strip():
        raise SettingError("--state-dir: is empty; give a folder for the service's id file")
    return _Server(
        settings.host,
        token,
        limits,
        settings.shutdown_timeout,
        settings.tls_cert,
        context,
        service_id=service_id,
        state_dir=settings.state_dir,
        announce=not settings.no_announce,
    )


def _ports(args: argparse.Namespace) -> list[int]:
    """The command's ports, from flag, environment or default, in `PORT_OPTIONS`' order."""
    options = PORT_OPTIONS[args.command]
    given = _values(args, options)
    return [given.get(port.dest, port.default) for port in options]


def _enrichment_settings(
    args: argparse.Namespace, server: _Server, **fixed: Any
) -> EnrichmentSettings:
    values = {"storage_token": server.token, **_values(args, ENRICHMENT_OPTIONS), **fixed}
    return _settings(EnrichmentSettings, values)


def _storage_settings(args: argparse.Namespace) -> StorageSettings:
    return _settings(StorageSettings, _values(args, STORAGE_OPTIONS))


Plan = list[tuple[str, web.Application, int]]


def _plan_enrichment(args: argparse.Namespace, server: _Server) -> Plan:
    service = EnrichmentService(
        _enrichment_settings(args, server), identity=server.identity("enrichment")
    )
    app = create_app(service, token=server.token, limits=server.limits)
    (port,) = _ports(args)
    return [("enrichment", app, port)]


def _plan_storage(args: argparse.Namespace, server: _Server) -> Plan:
    service = StorageService(_storage_settings(args), identity=server.identity("storage"))
    app = create_app(service, token=server.token, limits=server.limits)
    (port,) = _ports(args)
    return [("storage", app, port)]


def _plan_stack(args: argparse.Namespace, server: _Server) -> Plan:
    """Storage first (the enrichment's dependency), then the enrichment pointing at it."""
    storage_port, enrichment_port = _ports(args)
    if storage_port == enrichment_port:
        raise SettingError(f"--storage-port and --enrichment-port are both {storage_port}")
    # Listening everywhere, storage is reached on loopback: ::1 for "::", which asyncio
    # binds IPv6 only. An IPv6 address goes in brackets in the URL.
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(server.host, server.host)
    local = f"[{local}]" if ":" in local else local
    storage = StorageService(
        _storage_settings(args), identity=server.identity("storage", stack=True)
    )
    fixed: dict[str, Any] = {"storage_urls": (f"http://{local}:{storage_port}",)}
    if server.ssl_context is not None:
        # Storage speaks HTTPS only: the enrichment trusts exactly its certificate.
        fixed = {
            "storage_urls": (f"https://{local}:{storage_port}",),
            "storage_ca_file": server.tls_cert,
            "storage_check_hostname": False,
        }
    enrichment = EnrichmentService(
        _enrichment_settings(args, server, **fixed),
        identity=server.identity("enrichment", stack=True),
    )
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
    announce: bool = False,
) -> None:
    """Start each app in order, run until SIGINT/SIGTERM (or ``stop``), stop in reverse.

    With ``ssl_context`` every app speaks HTTPS only; with ``announce`` each is announced
    over mDNS/zeroconf while it runs (announce.py).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runners: list[ServiceRunner] = []
    try:
        for name, app, port in plan:
            if announce:
                tls = ssl_context is not None
                token = token_required(app)
                announcement.attach(app, service_of(app), host, port, token=token, tls=tls)
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
        # Everything made at start lives as long as the process: out of the collector's
        # scans (docs/ARCHITECTURE.md, "CPU per event").
        gc.collect()
        gc.freeze()
        await stop.wait()
        _LOGGER.info("stopping: finishing the requests in progress")
    finally:
        gc.unfreeze()
        for runner in reversed(runners):
            await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@dataclass(frozen=True, slots=True)
class _Command:
    help: str
    plan: Callable[[argparse.Namespace, _Server], Plan]
    groups: tuple[tuple[str, Sequence[Option]], ...]  # settings groups after "server"


COMMANDS = {
    "enrichment": _Command(
        "Run the enrichment service (weather, normalization, metadata) in front of storage.",
        _plan_enrichment,
        (("enrichment", ENRICHMENT_OPTIONS),),
    ),
    "storage": _Command(
        "Run the storage service (SQLite, InfluxDB 1.x or 2.x/3.x).",
        _plan_storage,
        (("storage", STORAGE_OPTIONS),),
    ),
    "stack": _Command(
        "Run both in one process: storage (SQLite by default) and the enrichment in front of it.",
        _plan_stack,
        (("storage", STORAGE_OPTIONS), ("enrichment", STACK_ENRICHMENT_OPTIONS)),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ha-ingestor-services",
        description="HA Ingestor's companion services: enrichment and storage.",
        epilog=f"Every flag can also be set by its environment variable ({ENV_PREFIX}...).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        sub.set_defaults(plan=command.plan)
        _add_options(sub.add_argument_group("server"), SERVER_OPTIONS)
        _add_options(sub, PORT_OPTIONS[name])
        for title, options in command.groups:
            _add_options(sub.add_argument_group(title), options)
    migrate.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "migrate":
        return int(args.run(args))
    try:
        server = _server(args)
        plan = args.plan(args, server)
        asyncio.run(
            serve(
                plan,
                server.host,
                server.shutdown_timeout,
                ssl_context=server.ssl_context,
                announce=server.announce,
            )
        )
    except (SettingError, StartupError) as err:
        print(f"ha-ingestor-services {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
