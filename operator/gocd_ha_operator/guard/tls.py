"""The instance guard's part of TLS (docs/architecture.md §17): a renewed server certificate
reaches the running Postgres without a restart.

The kubelet updates a mounted Secret in a running pod (within about a minute). The entrypoint
copied the Secret's files into ``<socket dir>/tls`` at start (Postgres demands a key file that
only its owner may read); :func:`refresh` copies changed files again, **in place** (the copy keeps
the owner and mode the entrypoint gave it, whichever user the guard runs as), and the guard then
sends the postmaster SIGHUP: Postgres reloads its certificate files on a configuration reload,
and existing connections keep their session. A certificate and key that do not belong together
are not copied (the old pair keeps serving). Nothing here logs file contents.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

logger = logging.getLogger("gocd_ha_operator.guard")

#: The files of the server certificate Secret, as the entrypoint copies them.
TLS_FILES: Final = ("tls.crt", "tls.key", "ca.crt")


def tls_dir(socket_dir: Path) -> Path:
    """Where the entrypoint keeps the copies (``$GOCDHA_SOCKET_DIR/tls``)."""
    return socket_dir / "tls"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _pair_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def _write_in_place(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def refresh(secret_dir: Path, target: Path) -> int | None:
    """Copy the Secret's files over changed copies in ``target``.

    Returns the serial number of the certificate now in place when something was copied (the
    caller reloads Postgres), ``None`` when nothing changed or nothing could be copied: the
    entrypoint has not made ``target`` yet, a file is missing or empty, or the new certificate
    and key do not match.
    """
    if not target.is_dir():
        return None
    wanted: dict[str, bytes] = {}
    for name in TLS_FILES:
        content = _read(secret_dir / name)
        if not content:
            return None
        wanted[name] = content
    changed = [name for name in TLS_FILES if _read(target / name) != wanted[name]]
    if not changed:
        return None
    if not _pair_matches(wanted["tls.crt"], wanted["tls.key"]):
        logger.warning(
            "the server certificate and key in %s do not match; keeping the certificate in use",
            secret_dir,
        )
        return None
    # The CA first, the key before the certificate: Postgres reads them only on the reload that
    # follows, so the order matters only for a guard killed in the middle (the next pass repeats).
    for name in ("ca.crt", "tls.key", "tls.crt"):
        if name in changed:
            _write_in_place(target / name, wanted[name])
    return int(x509.load_pem_x509_certificate(wanted["tls.crt"]).serial_number)
