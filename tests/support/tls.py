"""Certificates for the tests of HTTPS servers the operator dials (docs/architecture.md §17): a
cluster CA and a serving certificate written to files, as the operator's Secret and the kubelet's
Secret volume provide them to the Cold sync agent; and an impostor HTTPS server that records
every request it is sent, to show a refused server never receives the token."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gocd_ha_operator.gocd.client import VerifiedServer
from gocd_ha_operator.kube import certificates

#: The cluster and namespace the sync agent's certificate is issued for in these tests.
CLUSTER = "ci"
NAMESPACE = "build"


def agent_name(side: str = "a") -> str:
    """The name the operator verifies the sync agent of ``side`` by."""
    return f"{CLUSTER}-gocd-{side}.{NAMESPACE}.svc"


@dataclass(frozen=True)
class ServingFiles:
    """A CA and a serving certificate with its key, on disk (``tls.crt``, ``tls.key``)."""

    ca: certificates.CertificateAuthority
    cert_file: Path
    key_file: Path

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    def serial(self) -> int:
        return certificates.serial_number(self.cert_file.read_bytes())

    def verification(self, side: str = "a") -> VerifiedServer:
        """How the operator verifies the sync agent of ``side`` (observe.py does the same)."""
        return VerifiedServer(self.ca_pem, agent_name(side))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def new_ca(common_name: str = "test cluster CA") -> certificates.CertificateAuthority:
    return certificates.generate_ca(common_name, now=dt.datetime.now(dt.UTC))


def write_serving_files(
    directory: Path,
    dns_names: Sequence[str],
    *,
    ca: certificates.CertificateAuthority | None = None,
) -> ServingFiles:
    """Issue a certificate for ``dns_names`` from ``ca`` (a new CA when not given) and write it
    to ``directory`` (replacing what is there, one file at a time like a kubelet's refresh)."""
    ca = ca or new_ca()
    serving = certificates.issue_server_certificate(ca, dns_names, now=dt.datetime.now(dt.UTC))
    directory.mkdir(parents=True, exist_ok=True)
    files = ServingFiles(ca, directory / "tls.crt", directory / "tls.key")
    for path, content in ((files.key_file, serving.key_pem), (files.cert_file, serving.cert_pem)):
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(content)
        temporary.chmod(0o600)
        temporary.replace(path)
    return files


def write_sync_agent_files(
    directory: Path, *, ca: certificates.CertificateAuthority | None = None
) -> ServingFiles:
    """The sync agent's certificate as the operator issues it: both GoCD side Services."""
    return write_serving_files(
        directory, certificates.sync_agent_dns_names(CLUSTER, NAMESPACE), ca=ca
    )


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """A verifying client context for the tests' own requests (with ``server_hostname``)."""
    return ssl.create_default_context(cadata=ca_pem.decode("ascii"))


@dataclass
class RecordingServer:
    """An HTTPS server on loopback answering every request with 200 ``{}``, recording each
    request's path and ``Authorization`` header."""

    url: str
    requests: list[tuple[str, str | None]] = field(default_factory=list)


@asynccontextmanager
async def recording_https_server(context: ssl.SSLContext | None) -> AsyncIterator[RecordingServer]:
    """A server with ``context`` (plain HTTP with ``None``) on a free loopback port."""
    server = RecordingServer(url="")

    async def handle(request: web.Request) -> web.Response:
        server.requests.append((request.path, request.headers.get("Authorization")))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = int(runner.addresses[0][1])
    server.url = f"{'https' if context is not None else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()
