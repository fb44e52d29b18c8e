"""TLS for the services: the server's certificate, and what the enrichment trusts.

With ``--tls-cert`` and ``--tls-key`` a service speaks HTTPS only, so the bearer token
never crosses the network in clear text. Both or neither; a file that cannot be read, or
a key that does not match its certificate, stops the command with one line (exit 2).

The enrichment reaches a storage that uses a self-signed certificate (or a private CA)
through ``--storage-ca-file``: that PEM file is trusted for storage calls on top of the
system's CAs, and the storage URL's host must still match the certificate.
"""

from __future__ import annotations

import ssl


def server_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP; ValueError says what is wrong."""
    if cert_file is None and key_file is None:
        return None
    if not cert_file or not key_file:
        raise ValueError(
            "--tls-cert and --tls-key: give both (the certificate and its private key) or neither"
        )
    for flag, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        _check_readable(flag, path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, ValueError) as err:
        raise ValueError(
            f"--tls-cert {cert_file} and --tls-key {key_file}: not a PEM certificate and "
            f"its matching private key ({_reason(err)})"
        ) from None
    return context


def client_context(ca_file: str | None, *, check_hostname: bool = True) -> ssl.SSLContext | None:
    """What storage calls trust: the system's CAs plus ``ca_file``; None for the default.

    ``check_hostname`` is False only for `stack`, whose enrichment trusts exactly the
    certificate its own storage serves (the CA file is that certificate) on 127.0.0.1.
    """
    if ca_file is None:
        return None
    _check_readable("--storage-ca-file", ca_file)
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, ValueError) as err:
        raise ValueError(
            f"--storage-ca-file {ca_file}: not a PEM certificate ({_reason(err)})"
        ) from None
    # A self-signed certificate trusted as it is, not only as the root of a chain.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = check_hostname
    return context


def _check_readable(flag: str, path: str) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as err:
        raise ValueError(f"{flag}: cannot read {path}: {err.strerror or err}") from None


def _reason(err: Exception) -> str:
    reason = getattr(err, "reason", None)
    return str(reason) if reason else str(err) or type(err).__name__
