"""A pod's own way to the Kubernetes API: what ``kubernetes.default.svc`` is inside a cluster.

Why one proxy per pod: in a cluster every container reaches the API server at
``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``, trusting the ``ca.crt`` and sending
the ``token`` of its ServiceAccount volume. The local kubelet talks to the API over plain HTTP
(kmock's emulator, or ``kubectl proxy`` in front of a real cluster), so each pod gets a small HTTPS
server on loopback that an unmodified in-cluster client can use as is: it serves a self-signed
certificate (the pod's ``ca.crt``), accepts only the pod's token, drops it (the upstream applies
its own credentials: ``kubectl proxy`` would otherwise forward a token the real API server does not
know) and forwards the request, streaming the answer (watches included).

Being one per pod is what lets a test cut **one** pod off the API (:meth:`ApiProxy.cut`) while
the others and the operator keep theirs: the faults an instance guard must survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ssl
import subprocess
from pathlib import Path
from typing import Final, Literal

import aiohttp
from aiohttp import web

from gocd_ha_operator.local.process import LOOPBACK, free_port

CutMode = Literal["refuse", "blackhole"]

#: Headers that describe one hop, not the request (RFC 9110 §7.6.1), plus those aiohttp recomputes.
HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "accept-encoding",
    }
)
#: The certificate's lifetime: longer than any local run, short enough to be obviously local.
CERT_DAYS: Final = 30
#: How long closing the proxy waits for requests in flight before cancelling them. A watch held
#: open through the proxy (a guard's Lease watch) would otherwise hold a pod's stop for aiohttp's
#: default 60 s: the pod is gone, nothing waits for its answers.
SHUTDOWN_TIMEOUT_SECONDS: Final = 0.5
CERT_SUBJECT: Final = "/CN=gocdha-local-kubelet"
CERT_NAMES: Final = "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc"


class TlsUnavailableError(RuntimeError):
    """No ``openssl`` to make the pod's certificate: in-cluster API access cannot be provided."""


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, in ``directory``: ``(crt, key)``.

    Made with the ``openssl`` command (the standard library cannot create certificates and the
    project does not depend on ``cryptography``). It is its own CA, so a pod's ``ca.crt`` is this
    file and a client verifying against it checks the name and the signature as in a cluster."""
    crt, key = directory / "apiserver.crt", directory / "apiserver.key"
    command = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        str(CERT_DAYS),
        "-subj",
        CERT_SUBJECT,
        "-addext",
        CERT_NAMES,
        "-keyout",
        str(key),
        "-out",
        str(crt),
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TlsUnavailableError(f"cannot make the API proxy's certificate: {exc}") from exc
    key.chmod(0o600)
    return crt, key


class ApiProxy:
    """HTTPS on ``127.0.0.1:<port>`` -> the kubelet's API URL, for the pods of one workload.

    The port is fixed for the proxy's life (the containers' ``KUBERNETES_SERVICE_PORT``); the token
    is replaced by the kubelet for every new pod. Runs in the kubelet's event loop."""

    def __init__(self, upstream: str, certificate: tuple[Path, Path]) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        #: The bearer token the current pod was given; ``None``: every request is refused (401).
        self.token: str | None = None
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(str(certificate[0]), str(certificate[1]))
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self._healed = asyncio.Event()
        self._healed.set()
        self.mode: CutMode | None = None
        self.requests = 0

    async def start(self) -> None:
        if self._runner is not None:
            return
        # A bare low-level server is enough: every path is forwarded.
        runner = web.ServerRunner(
            web.Server(self._handle),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        )
        await runner.setup()
        self._runner = runner
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(
            self._runner, LOOPBACK, self.port, ssl_context=self._tls, reuse_address=True
        )
        await site.start()
        self._site = site

    async def close(self) -> None:
        self._healed.set()
        runner, self._runner = self._runner, None
        self._site = None
        if runner is not None:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def cut(self, mode: CutMode = "refuse") -> None:
        """Cut this pod off the API.

        ``refuse``: the listener is closed (new connections are refused at once) and every open
        connection is reset, watches included: the API server is unreachable.
        ``blackhole``: connections are still accepted but no request is answered (nor any more
        bytes of a watch sent) until :meth:`heal`, which then resets them: a network partition, as
        a client with timeouts sees it."""
        self.mode = mode
        self._healed.clear()
        if mode == "refuse":
            if self._site is not None:
                await self._site.stop()
                self._site = None
            self._reset_connections()

    async def heal(self) -> None:
        """Give the pod its API access back (on the same port)."""
        if self.mode is None:
            return
        was, self.mode = self.mode, None
        self._healed.set()
        if was == "blackhole":
            self._reset_connections()
        if self._runner is not None and self._site is None:
            await self._listen()

    def _reset_connections(self) -> None:
        if self._runner is None or self._runner.server is None:
            return
        for handler in list(self._runner.server.connections):
            transport = handler.transport
            if transport is not None:
                transport.abort()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No total timeout: watches last as long as the client wants.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                auto_decompress=True,
            )
        return self._session

    async def _partitioned(self, request: web.BaseRequest) -> None:
        """In a blackhole: wait for the heal, then reset the connection (never answer)."""
        await self._healed.wait()
        if request.transport is not None:
            request.transport.abort()

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        """An API-server-style ``Status`` answer."""
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return web.json_response(body, status=code)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.mode is not None:
            await self._partitioned(request)
            return web.Response(status=503)  # never sent: the connection is gone
        self.requests += 1
        expected = self.token
        # The scheme is case-insensitive, as on the API server (the Kubernetes Python client
        # sends "bearer <token>").
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if (
            expected is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(given.encode(), expected.encode())
        ):
            return self._status(401, "Unauthorized", "Unauthorized")
        headers = {
            key: value
            for key, value in request.headers.items()
            if key.lower() not in HOP_HEADERS and key.lower() != "authorization"
        }
        body = await request.read()
        response: web.StreamResponse | None = None
        try:
            async with self._http().request(
                request.method,
                self.upstream + request.rel_url.raw_path_qs,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        key: value
                        for key, value in upstream.headers.items()
                        if key.lower() not in HOP_HEADERS
                    },
                )
                # The client may go away at any time (a watch it gave up on, a cut): no error.
                with contextlib.suppress(ConnectionResetError):
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        if self.mode is not None:
                            await self._partitioned(request)
                            break
                        await response.write(chunk)
                    else:
                        await response.write_eof()
                return response
        except aiohttp.ClientError as exc:
            if response is not None and response.prepared:
                # The upstream broke mid-answer (a watch): end the client's connection too.
                if request.transport is not None:
                    request.transport.abort()
                return response
            # The kubelet's own way to the API failed (e.g. kubectl proxy stopped).
            return self._status(503, "ServiceUnavailable", f"the API server is unreachable: {exc}")
