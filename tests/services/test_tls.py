"""TLS (issue 10: the token crossed the network in clear text): with --tls-cert and
--tls-key the services speak HTTPS only, and the enrichment reaches a TLS storage whose
self-signed certificate it is told to trust. The certificate is made here."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from benchmarks.influxd import free_port
from ha_ingestor_services import cli

from .conftest import AUTH, TOKEN
from .test_cli import env, envelopes, quiet_root_logger, rows

__all__ = ["env", "quiet_root_logger"]  # fixtures shared with test_cli


def run_cli(*argv: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The command in a process of its own, with only the token (and ``extra_env``) set,
    besides where the `env` fixture keeps ids and that nothing is announced."""
    kept = ("HA_INGESTOR_STATE_DIR", "HA_INGESTOR_NO_ANNOUNCE")
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(cli.ENV_PREFIX) or key in kept
    }
    environment.update({"HA_INGESTOR_TOKEN": TOKEN, **(extra_env or {})})
    return subprocess.Popen(
        [sys.executable, "-m", "ha_ingestor_services", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def client(self) -> ssl.SSLContext:
        """A client that trusts this certificate alone (as a user would with curl --cacert)."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(folder: Path, name: str = "server") -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, like the README's openssl one."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_path, key_path)


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return make_certificate(tmp_path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("cert only", "--tls-cert and --tls-key: give both"),
        ("key only", "--tls-cert and --tls-key: give both"),
        ("missing cert", "--tls-cert: cannot read"),
        ("unreadable key", "--tls-key: cannot read"),
        ("key of another certificate", "not a PEM certificate and its matching private key"),
        ("missing ca file", "--storage-ca-file: cannot read"),
    ],
)
def test_bad_tls_settings_end_with_one_line(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    certificate: Certificate,
    tmp_path: Path,
    case: str,
    message: str,
) -> None:
    other = make_certificate(tmp_path, "other")
    unreadable = tmp_path / "folder.key"
    unreadable.mkdir()  # a folder: cannot be read as a file, even by root
    arguments = {
        "cert only": ["--tls-cert", str(certificate.cert)],
        "key only": ["--tls-key", str(certificate.key)],
        "missing cert": ["--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(other.key)],
        "unreadable key": ["--tls-cert", str(certificate.cert), "--tls-key", str(unreadable)],
        "key of another certificate": [
            "--tls-cert",
            str(certificate.cert),
            "--tls-key",
            str(other.key),
        ],
        "missing ca file": ["--storage-ca-file", str(tmp_path / "nope.pem")],
    }[case]
    argv = ["enrichment", "--token", "t", *arguments]
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("ha-ingestor-services enrichment: error: ")
    assert message in lines[0]


async def wait_healthy(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.get(url + "/api/v1/health", **kwargs) as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"{url} did not start"
        await asyncio.sleep(0.1)


def stop(*processes: subprocess.Popen[str]) -> str:
    """Stop the processes; their stderr (the logs)."""
    logs = ""
    for process in processes:
        if process.poll() is None:
            process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            logs += process.communicate(timeout=20)[1]
        if process.poll() is None:
            process.kill()
            logs += process.communicate()[1]
    return logs


# localhost is also ::1, which the harness refuses; the connection goes on to 127.0.0.1.
@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect:UserWarning")
async def test_storage_and_enrichment_over_https_only(
    socket_enabled: None, certificate: Certificate, tmp_path: Path
) -> None:
    """Two processes: storage (TLS from the env vars) and the enrichment (TLS flags,
    trusting storage's self-signed certificate with --storage-ca-file)."""
    storage_port, enrichment_port = free_port(), free_port()
    database = tmp_path / "tls.db"
    storage = run_cli(
        "storage",
        "--port",
        str(storage_port),
        "--sqlite-path",
        str(database),
        extra_env={
            "HA_INGESTOR_TLS_CERT": str(certificate.cert),
            "HA_INGESTOR_TLS_KEY": str(certificate.key),
        },
    )
    enrichment = run_cli(
        "enrichment",
        "--port",
        str(enrichment_port),
        "--storage-url",
        f"https://127.0.0.1:{storage_port}",
        "--storage-ca-file",
        str(certificate.cert),
        "--tls-cert",
        str(certificate.cert),
        "--tls-key",
        str(certificate.key),
    )
    storage_url = f"https://127.0.0.1:{storage_port}"
    enrichment_url = f"https://localhost:{enrichment_port}"
    trusted = certificate.client()
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, storage_url, ssl=trusted)
            await wait_healthy(session, enrichment_url, ssl=trusted)
            # Plain HTTP gets nothing: the port speaks TLS only.
            for port in (storage_port, enrichment_port):
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/api/v1/health") as answer:
                        await answer.read()
            # A client that does not trust the certificate refuses the connection...
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(storage_url + "/api/v1/health") as answer:
                    await answer.read()
            # ...while one that does not verify (the integration's "Verify TLS
            # certificates" off, aiohttp's ssl=False) gets through.
            async with session.get(storage_url + "/api/v1/health", ssl=False) as answer:
                assert answer.status == 200
            async with session.post(
                enrichment_url + "/api/v1/events/batch",
                json={"events": envelopes(5, "tls")},
                headers=AUTH,
                ssl=trusted,
            ) as answer:
                assert answer.status == 200, await answer.text()
                results = (await answer.json())["results"]
        assert [result["status"] for result in results] == ["stored"] * 5
    finally:
        logs = stop(enrichment, storage)
    assert rows(database) == 5
    assert f"listening on https://127.0.0.1:{storage_port}" in logs
    assert "Traceback" not in logs


async def test_enrichment_without_the_ca_file_does_not_trust_storage(
    socket_enabled: None, certificate: Certificate, tmp_path: Path
) -> None:
    storage_port, enrichment_port = free_port(), free_port()
    tls = ["--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key)]
    storage = run_cli(
        "storage", "--port", str(storage_port), "--sqlite-path", str(tmp_path / "x.db"), *tls
    )
    enrichment = run_cli(
        "enrichment",
        "--port",
        str(enrichment_port),
        "--storage-url",
        f"https://127.0.0.1:{storage_port}",
    )
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, f"https://127.0.0.1:{storage_port}", ssl=False)
            url = f"http://127.0.0.1:{enrichment_port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(url + "/api/v1/health") as answer:
                        health = await answer.json()
                        break
                except aiohttp.ClientError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
        assert health["status"] == "unhealthy"
    finally:
        stop(enrichment, storage)


async def test_stack_with_tls_forwards_to_its_own_storage(
    socket_enabled: None, env: pytest.MonkeyPatch, certificate: Certificate, tmp_path: Path
) -> None:
    """In `stack` the enrichment trusts exactly the certificate its storage serves."""
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
            "--tls-cert",
            str(certificate.cert),
            "--tls-key",
            str(certificate.key),
        ]
    )
    server = cli._server(args)
    stop_serving = asyncio.Event()
    serving = asyncio.create_task(
        cli.serve(
            args.plan(args, server), server.host, 5, stop_serving, ssl_context=server.ssl_context
        )
    )
    try:
        async with aiohttp.ClientSession() as session:
            url = f"https://127.0.0.1:{enrichment_port}"
            await wait_healthy(session, url, ssl=certificate.client())
            async with session.post(
                url + "/api/v1/events/batch",
                json={"events": envelopes(3, "stack-tls")},
                headers=AUTH,
                ssl=certificate.client(),
            ) as answer:
                assert answer.status == 200
                assert {item["status"] for item in (await answer.json())["results"]} == {"stored"}
    finally:
        stop_serving.set()
        await asyncio.wait_for(serving, 10)
    assert rows(database) == 3
