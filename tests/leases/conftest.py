"""Fixtures for the Lease tests: an API server in its own thread, a cuttable TCP path to it, and
kubeconfig files, so that the guard and the operator run as they would against a real cluster
(their ordinary kubeconfig login; no test-only code path).

The API server is kmock's emulator (``local/emulator.py``) with the one behaviour the Leases rely
on made real: a merge patch carrying ``metadata.resourceVersion`` is a precondition (409 Conflict).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gocd_ha_operator.kube.apply import KubeClient, client_for
from gocd_ha_operator.local.emulator import running_emulator
from gocd_ha_operator.local.stack import LocalStack, local_stack
from tests.support.ports import free_port
from tests.support.promotion import NAME

NAMESPACE = "build"


class ApiThread:
    """The emulator served from its own thread and event loop (the tests block freely)."""

    def __init__(self) -> None:
        self.url = ""
        self.emulator: Any = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="api", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with running_emulator() as (emulator, url):
            self.emulator, self.url = emulator, url
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the API emulator did not start")

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def client(self) -> KubeClient:
        return client_for(self.url)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


class TcpProxy:
    """127.0.0.1:<port> -> upstream; :meth:`cut` closes the listener and every connection (the
    API becomes unreachable, as for a partitioned node), :meth:`restore` listens again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._connections += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def write_kubeconfig(path: Path, server: str) -> Path:
    """An ordinary kubeconfig (JSON is YAML) for ``server``: what a developer's laptop has."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {}}],
        "contexts": [
            {"name": "test", "context": {"cluster": "test", "user": "test", "namespace": NAMESPACE}}
        ],
        "current-context": "test",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def api() -> Iterator[ApiThread]:
    server = ApiThread()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(api: ApiThread) -> Iterator[TcpProxy]:
    path = TcpProxy(api.port)
    path.restore()
    try:
        yield path
    finally:
        path.cut()


@pytest.fixture
async def stack() -> AsyncIterator[LocalStack]:
    """The local stack (emulator, local kubelet running whole pods) for the ``ci`` cluster, without
    an operator: each partition test starts its own, with its network view (fault injection)."""
    async with local_stack(
        [NAME], namespace="build", observe_interval=0.5, start_operator=False
    ) as running:
        yield running
