"""``ha-ingestor-services migrate verify``: do two stores hold the same states?

The reference side is ``--from-…`` (what you have: by default Home Assistant's own
``influxdb`` integration's layout), the candidate ``--to-…`` (by default HA Ingestor's
layout). Each side is an InfluxDB 1.x database (``--X-url`` and ``--X-database``), an
InfluxDB 2.x bucket (``--X-url``, ``--X-org``, ``--X-bucket``, ``--X-token``) or a
storage service's query API (``--X-api`` and ``--X-token``). Every side flag can also be
set by its variable ``HA_INGESTOR_MIGRATE_<SIDE>_<NAME>`` (e.g.
``HA_INGESTOR_MIGRATE_FROM_TOKEN``): prefer those for secrets.

Exit status: 0 the stores agree, 1 they differ, 2 a usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO

import voluptuous as vol

from ha_ingestor_services.storage.query import parse_time
from ha_ingestor_services.storage.records import MAX_TIME_NS, MIN_TIME_NS, ns_to_rfc3339

from . import report
from .compare import EntityResult, Point, Value, compare_entity
from .readers import (
    HOME_ASSISTANT_SKIPS,
    LAYOUTS,
    Layout,
    Reader,
    Source,
    SourceError,
    reader,
)

PROG = "ha-ingestor-services migrate verify"
ENV_PREFIX = "HA_INGESTOR_MIGRATE_"
SIDES = ("from", "to")
DEFAULT_LAYOUT = {"from": "home_assistant", "to": "ha_ingestor"}
PRECISIONS = {"ns": 1, "us": 1000, "ms": 10**6, "s": 10**9}
DEFAULT_PAGE_SIZE = 5000
_RELATIVE_TIME = re.compile(r"^-\d+(\.\d+)?[a-z]*$|^-\d*\.\d+$")

# name, metavar, help ({side} is "from" or "to")
_SIDE_FLAGS = (
    (
        "url",
        "URL",
        "InfluxDB URL of the {side} side (1.x with --{side}-database, 2.x with --{side}-bucket)",
    ),
    ("api", "URL", "or: a storage service's URL; the {side} side is read from its query API"),
    (
        "layout",
        "{" + ",".join(LAYOUTS) + "}",
        "how the {side} InfluxDB holds states (default {default})",
    ),
    ("database", "NAME", "InfluxDB 1.x database"),
    ("retention_policy", "NAME", "InfluxDB 1.x retention policy (default: the database's)"),
    ("username", "NAME", "InfluxDB 1.x user"),
    ("password", "TEXT", "InfluxDB 1.x password (prefer the env var)"),
    ("org", "NAME", "InfluxDB 2.x organization"),
    ("bucket", "NAME", "InfluxDB 2.x bucket"),
    (
        "token",
        "TEXT",
        "InfluxDB 2.x token, or the storage service's bearer token (prefer the env var)",
    ),
)


class UsageError(Exception):
    """A bad command line; the message is the whole explanation."""


def _env(side: str, name: str) -> str:
    return f"{ENV_PREFIX}{side.upper()}_{name.upper()}"


def add_command(commands: Any) -> None:
    """Add ``migrate`` (with ``verify``) to the program's subcommands."""
    migrate = commands.add_parser(
        "migrate",
        help="Tools for moving from Home Assistant's influxdb integration.",
        description="Tools for moving from Home Assistant's influxdb integration.",
    )
    tools = migrate.add_subparsers(dest="migrate_command", required=True, metavar="TOOL")
    text = "Compare what two stores hold for a time window, per entity."
    verify = tools.add_parser(
        "verify",
        help=text,
        description=text + " Exit status 0: they agree, 1: they differ, 2: an error.",
        epilog=f"Every --from-/--to- flag can also be set by its variable "
        f"({ENV_PREFIX}FROM_TOKEN, {ENV_PREFIX}TO_URL, ...).",
    )
    verify.set_defaults(run=run)
    # "-24h" is a value, not an option (argparse only lets negative numbers through).
    verify._negative_number_matcher = _RELATIVE_TIME
    verify.add_argument(
        "--start",
        default="-24h",
        help="window start: RFC 3339 or relative like -24h, '2d ago' (default -24h)",
    )
    verify.add_argument("--end", default="now", help="window end, excluded (default now)")
    verify.add_argument(
        "--entity",
        action="append",
        default=[],
        metavar="ENTITY_ID",
        help="compare only this entity (repeatable; default: every entity found on either side)",
    )
    verify.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="us",
        help="times are equal when equal to this precision (default us; "
        "s, ms if Home Assistant's influxdb 'precision' was set)",
    )
    verify.add_argument(
        "--page-size",
        type=int,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"points per query (default {DEFAULT_PAGE_SIZE})",
    )
    verify.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds one query may take (default 30)",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON document")
    verify.add_argument(
        "--verbose",
        action="store_true",
        help="also list agreeing entities and the first differences of each",
    )
    verify.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar even when stderr is not a terminal",
    )
    for side in SIDES:
        group = verify.add_argument_group(
            f"the {side} side" + (" (the reference)" if side == "from" else "")
        )
        for name, metavar, help_text in _SIDE_FLAGS:
            flag = f"--{side}-{name.replace('_', '-')}"
            shown = help_text.format(side=side, default=DEFAULT_LAYOUT[side])
            group.add_argument(
                flag,
                dest=f"{side}_{name}",
                metavar=metavar,
                help=f"{shown} [env {_env(side, name)}]",
            )


def _side_value(args: argparse.Namespace, side: str, name: str) -> str | None:
    value = getattr(args, f"{side}_{name}", None)
    if value is None:
        value = os.environ.get(_env(side, name))
    return value if value else None


def source_of(args: argparse.Namespace, side: str) -> Source:
    """One side's `Source` from its flags and variables; `UsageError` naming the flag."""

    def given(name: str) -> str | None:
        return _side_value(args, side, name)

    url, api = given("url"), given("api")
    if bool(url) == bool(api):
        raise UsageError(f"the {side} side needs exactly one of --{side}-url and --{side}-api")
    named = given("layout") or DEFAULT_LAYOUT[side]
    if named not in LAYOUTS:
        raise UsageError(f"--{side}-layout: {named!r} is not one of {', '.join(LAYOUTS)}")
    layout: Layout = "home_assistant" if named == "home_assistant" else "ha_ingestor"
    common: dict[str, Any] = {"token": given("token"), "timeout_s": args.timeout}
    if api:
        return Source("api", api, **common)
    database, bucket = given("database"), given("bucket")
    if bool(database) == bool(bucket):
        raise UsageError(
            f"--{side}-url needs --{side}-database (InfluxDB 1.x) or --{side}-bucket (2.x)"
        )
    if database:
        return Source(
            "influxdb-v1",
            str(url),
            layout,
            database=database,
            retention_policy=given("retention_policy"),
            username=given("username"),
            password=given("password"),
            **common,
        )
    if not given("org"):
        raise UsageError(f"--{side}-bucket needs --{side}-org")
    return Source("influxdb-v2", str(url), layout, org=given("org"), bucket=bucket, **common)


def window(args: argparse.Namespace, now_ns: int) -> tuple[int, int]:
    times = []
    for flag, text in (("--start", args.start), ("--end", args.end)):
        try:
            moment = parse_time(text, now_ns)
        except vol.Invalid as err:
            raise UsageError(f"{flag}: {err.msg}") from None
        if not MIN_TIME_NS <= moment <= MAX_TIME_NS:
            raise UsageError(f"{flag}: is out of range (years 1678 to 2261)")
        times.append(moment)
    start, end = times
    if start >= end:
        raise UsageError("--start is not before --end")
    return start, end


class _Side:
    """A reader whose failures name its side."""

    def __init__(self, name: str, source: Source, page_size: int) -> None:
        self.name, self.source = name, source
        self.reader: Reader = reader(source, page_size)

    def _error(self, err: SourceError) -> SourceError:
        return SourceError(f"{self.name} ({self.source.describe()}): {err}")

    async def open(self) -> None:
        try:
            await self.reader.open()
        except SourceError as err:
            raise self._error(err) from None

    async def entities(self, start_ns: int, end_ns: int) -> set[str]:
        try:
            return await self.reader.entities(start_ns, end_ns)
        except SourceError as err:
            raise self._error(err) from None

    async def pages(self, entity_id: str, start_ns: int, end_ns: int) -> AsyncIterator[list[Point]]:
        try:
            async for page in self.reader.pages(entity_id, start_ns, end_ns):
                yield page
        except SourceError as err:
            raise self._error(err) from None


def _terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


async def verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Compare both sides; the exit status (0 agree, 1 differ). Raises on errors."""
    now = time.time_ns()
    start, end = window(args, now)
    if args.page_size < 2:
        raise UsageError("--page-size must be at least 2")
    sides = [_Side(side, source_of(args, side), args.page_size) for side in SIDES]
    skip: frozenset[Value] = frozenset()
    if any(side.source.kind != "api" and side.source.layout == "home_assistant" for side in sides):
        skip = HOME_ASSISTANT_SKIPS
    progress = report.Progress(err, 0, args.progress or _terminal(err))
    try:
        for side in sides:
            await side.open()
        if args.entity:
            entities = sorted(set(args.entity))
        else:
            if progress.enabled:
                err.write("listing the entities of both sides...\n")
            found = [await side.entities(start, end) for side in sides]
            entities = sorted(found[0] | found[1])
        progress.total = len(entities)
        results: list[EntityResult] = []
        printed = False
        for entity_id in entities:
            result = await compare_entity(
                entity_id,
                sides[0].pages(entity_id, start, end),
                sides[1].pages(entity_id, start, end),
                divisor=PRECISIONS[args.precision],
                skip=skip,
            )
            progress.step(result)
            if not (result.from_points or result.to_points or result.skipped or args.entity):
                continue  # listed in the tag index, no points in the window
            results.append(result)
            if not args.json and (args.verbose or not result.agrees):
                if progress.enabled:
                    err.write("\r\x1b[K")
                out.write("\n".join(report.entity_lines(result, verbose=args.verbose)) + "\n")
                out.flush()
                printed = True
        progress.finish()
    finally:
        for side in sides:
            await side.reader.close()
    if args.json:
        header = {
            "window": {"start": ns_to_rfc3339(start), "end": ns_to_rfc3339(end)},
            "precision": args.precision,
            "from": _described(sides[0].source),
            "to": _described(sides[1].source),
        }
        out.write(report.document(results, header).decode())
    else:
        blank = [""] if printed else []
        out.write("\n".join([*blank, *report.summary_table(results)]) + "\n")
    out.flush()
    return 0 if all(result.agrees for result in results) else 1


def _described(source: Source) -> dict[str, Any]:
    shown: dict[str, Any] = {"kind": source.kind, "url": source.url}
    if source.kind != "api":
        shown["layout"] = source.layout
    for key in ("database", "retention_policy", "org", "bucket"):
        if getattr(source, key):
            shown[key] = getattr(source, key)
    return shown


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The command's exit status; errors are one line on stderr and status 2."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        return asyncio.run(verify(args, out, err))
    except (UsageError, SourceError) as error:
        err.write(f"{PROG}: error: {error}\n")
        return 2
