"""Each service's stable id (identity.py): kept with the SQLite data or in a state file,
overridden by --service-id, and shown by the open health answer with role, API version
and whether a token is needed."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from benchmarks.influxd import Influxd
from ha_ingestor_services import cli
from ha_ingestor_services.connections import ServiceRunner
from ha_ingestor_services.contract import StartupError
from ha_ingestor_services.enrichment.service import EnrichmentService
from ha_ingestor_services.enrichment.settings import EnrichmentSettings
from ha_ingestor_services.identity import IdentitySource, canonical_id, state_file_id
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import create_app

from .conftest import AUTH, TOKEN, Serve


async def open_health(client: aiohttp.ClientSession, url: str, **kwargs: Any) -> dict[str, Any]:
    async with client.get(url + "/api/v1/health", **kwargs) as answer:
        body: dict[str, Any] = await answer.json()
        return body


async def storage_id(client: aiohttp.ClientSession, path: Path, **identity: Any) -> str:
    """Run a storage service on the SQLite file ``path`` and stop it: the id its open
    health answer showed."""
    service = StorageService(
        StorageSettings(sqlite_path=str(path)), identity=IdentitySource("storage", **identity)
    )
    runner = ServiceRunner(create_app(service, token=TOKEN), shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        body = await open_health(client, f"http://{host}:{port}")
    finally:
        await runner.cleanup()
    assert body["service_id"] == service.service_id
    assert (body["role"], body["api_version"], body["token_required"]) == ("storage", 1, True)
    return service.service_id


@contextlib.contextmanager
def database(path: Path) -> Iterator[sqlite3.Connection]:
    """The file, committed and closed after (sqlite3's own ``with`` only commits)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        yield db


def kept_in_file(path: Path) -> str:
    with database(path) as db:
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'service_id'").fetchone()
    return str(value)


async def test_sqlite_storage_keeps_its_id_in_its_file(
    socket_enabled: None, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Restarts keep the id; a moved (copied) file brings it along; another file has
    another. The state dir is given but not used: the data keeps the id."""
    state = tmp_path / "state"
    first = await storage_id(client, tmp_path / "a.db", state_dir=str(state))
    assert first == str(uuid.UUID(first))  # canonical lowercase form
    assert kept_in_file(tmp_path / "a.db") == first
    assert await storage_id(client, tmp_path / "a.db", state_dir=str(state)) == first
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(tmp_path / "a.db", moved / "b.db")
    assert await storage_id(client, moved / "b.db") == first
    assert await storage_id(client, tmp_path / "other.db") != first
    assert not state.exists()


async def test_a_file_from_before_ids_gets_one_on_open(
    socket_enabled: None, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "old.db"
    await storage_id(client, path)
    with database(path) as db:
        db.execute("DROP TABLE meta")  # what a file of an earlier release looks like
    given = await storage_id(client, path)
    assert kept_in_file(path) == given
    assert await storage_id(client, path) == given


async def test_a_broken_id_in_the_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    service = StorageService(StorageSettings(sqlite_path=str(path)))
    await service.start()
    await service.stop()
    with database(path) as db:
        db.execute("UPDATE meta SET value = 'not-a-uuid' WHERE key = 'service_id'")
    service = StorageService(StorageSettings(sqlite_path=str(path)))
    with pytest.raises(StartupError, match="holds no valid service id"):
        await service.start()


async def test_service_id_overrides_the_kept_one(
    socket_enabled: None, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    kept = await storage_id(client, tmp_path / "a.db")
    given = "6A1B7E1E-3F4C-4D2B-8E9A-0C1D2E3F4A5B"
    assert await storage_id(client, tmp_path / "a.db", service_id=given) == given.lower()
    assert kept_in_file(tmp_path / "a.db") == kept  # the override is not written


def test_state_file_keeps_the_id(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    made = state_file_id(str(state), "enrichment")
    assert (state / "enrichment.id").read_text() == made + "\n"
    assert state_file_id(str(state), "enrichment") == made
    assert state_file_id(str(state), "storage") != made  # one file per role
    assert sorted(p.name for p in state.iterdir()) == ["enrichment.id", "storage.id"]


@pytest.mark.parametrize("content", ["", "garbage\n"])
def test_a_broken_state_file_stops_the_start(tmp_path: Path, content: str) -> None:
    (tmp_path / "enrichment.id").write_text(content)
    with pytest.raises(StartupError, match=r"enrichment\.id holds no service id"):
        state_file_id(str(tmp_path), "enrichment")


def test_an_unusable_state_dir_names_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StartupError, match=r"--state-dir \(HA_INGESTOR_STATE_DIR\)"):
        state_file_id(str(blocker / "state"), "storage")


async def test_enrichment_keeps_its_id_in_the_state_file(
    serve: Serve, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Restarts keep the id; the health answer with the token has the same keys."""
    settings = EnrichmentSettings(storage_token=TOKEN)
    ids = []
    for _ in range(2):
        service = EnrichmentService(
            settings, identity=IdentitySource("enrichment", state_dir=str(tmp_path))
        )
        url = await serve(create_app(service, token=TOKEN))
        body = await open_health(client, url, headers=AUTH)
        assert {key: body[key] for key in ("role", "api_version", "token_required")} == {
            "role": "enrichment",
            "api_version": 1,
            "token_required": True,
        }
        assert "dependencies" in body  # the token's details as well
        ids.append(body["service_id"])
    assert ids[0] == ids[1] == (tmp_path / "enrichment.id").read_text().strip()


async def test_storage_on_influxdb_keeps_its_id_in_the_state_file(
    serve: Serve, client: aiohttp.ClientSession, tmp_path: Path, influxd_server: Influxd
) -> None:
    """A real InfluxDB 1.x: the id comes from the state file, survives a restart, and
    nothing of it is written to the database."""
    database = f"identity_{uuid.uuid4().hex[:8]}"
    settings = StorageSettings(
        backend="influxdb", influx_url=influxd_server.url, influx_database=database
    )
    ids = []
    for _ in range(2):
        service = StorageService(
            settings, identity=IdentitySource("storage", state_dir=str(tmp_path))
        )
        url = await serve(create_app(service, token=TOKEN))
        ids.append((await open_health(client, url))["service_id"])
    assert ids[0] == ids[1] == (tmp_path / "storage.id").read_text().strip()
    query = {"db": database, "q": "SHOW MEASUREMENTS"}
    async with client.get(influxd_server.url + "/query", params=query) as answer:
        assert "series" not in (await answer.json())["results"][0]


def parse_server(*argv: str) -> cli._Server:
    return cli._server(cli.build_parser().parse_args([*argv, "--token", TOKEN]))


def test_service_id_flag_and_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    given = str(uuid.uuid4())
    server = parse_server("storage", "--service-id", given.upper(), "--state-dir", str(tmp_path))
    assert server.identity("storage") == IdentitySource("storage", given, str(tmp_path))
    monkeypatch.setenv("HA_INGESTOR_SERVICE_ID", given)
    assert parse_server("enrichment").identity("enrichment").service_id == given


def test_stack_derives_the_enrichment_id_from_the_given_one() -> None:
    given = str(uuid.uuid4())
    server = parse_server("stack", "--service-id", given)
    storage = server.identity("storage", stack=True).resolve()
    enrichment = server.identity("enrichment", stack=True).resolve()
    assert storage == given
    assert enrichment != given
    assert enrichment == server.identity("enrichment", stack=True).resolve()  # stable
    assert canonical_id(enrichment) == enrichment


def test_a_bad_service_id_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HA_INGESTOR_TOKEN", TOKEN)
    assert cli.main(["storage", "--service-id", "kitchen"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ha-ingestor-services storage: error: --service-id: 'kitchen' is not")
    assert len(err.splitlines()) == 1
