"""Helpers of the two-operator tests (``tests/leases/test_two_operators.py``): real
``gocd-ha-operator run`` processes with leader election on, driving the local stack (API emulator,
local kubelet, real Postgres), each through its own recording HTTP proxy.

* :class:`RecordingProxy` — plain HTTP ``127.0.0.1:<free port>`` -> the API server, streaming
  (watches included), recording every request (method, path, when). One per operator process, so
  a test can say which process wrote what: a kubeconfig points at the proxy, nothing in the
  operator knows about it (it works the same in front of ``kubectl proxy``).
* :class:`OperatorProcess` — one ``gocd-ha-operator run`` process: its own kubeconfig, identity
  (``POD_NAME``), the kubelet's ``GOCDHA_ENDPOINTS``, short leader-election timings, no metrics
  port (several run at once). SIGKILL / SIGSTOP / SIGCONT by pid.
* Events and the operator Lease as a user reads them with kubectl.

Every wait is asynchronous: the API emulator and the kubelet run in the test's event loop, so a
blocking wait would stop the API server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
from aiohttp import web

from gocd_ha_operator.api.constants import OPERATOR_LEASE_NAME
from gocd_ha_operator.local.stack import LocalStack
from gocd_ha_operator.rules.promotion import Step
from tests.support.pg import LOOPBACK
from tests.support.ports import free_port

T = TypeVar("T")
ROOT: Final = Path(__file__).resolve().parents[2]
#: Short leader-election timings (seconds): retry < renew deadline < lease duration.
#: Each attempt's request timeout is the retry period, and the API emulator shares the test
#: process (2 shared cores): with 4 s / 3 s / 1 s, leaders lost the Lease to slow answers.
LEASE_SECONDS: Final = 8.0
RENEW_SECONDS: Final = 6.0
RETRY_SECONDS: Final = 2.0
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Headers that describe one hop, not the request, plus those aiohttp recomputes.
HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
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


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic() when the proxy received it
    method: str
    path: str
    #: ``metadata.name`` of the object a POST creates (the path does not name it).
    created: str | None = None

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS

    @property
    def lease_write(self) -> bool:
        """A write of the operator Lease: its creation (POST to the collection) or an update."""
        if self.method == "POST" and self.path.endswith("/leases"):
            return self.created == OPERATOR_LEASE_NAME
        return self.write and self.path.endswith(f"/leases/{OPERATOR_LEASE_NAME}")

    @property
    def lease_read(self) -> bool:
        return self.method == "GET" and self.path.endswith(f"/leases/{OPERATOR_LEASE_NAME}")


@dataclass
class RecordingProxy:
    """Plain HTTP on loopback -> ``upstream``; :attr:`requests` lists what went through."""

    upstream: str
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    _runner: web.ServerRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=True
        )
        runner = web.ServerRunner(
            web.Server(self._handle), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, self.port, reuse_address=True).start()
        self._runner = runner

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            # Open watches would hold the shutdown: end them (their client is gone anyway).
            for handler in list(runner.server.connections if runner.server else []):
                if handler.transport is not None:
                    handler.transport.abort()
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def writes(self, since: float = 0.0) -> list[Request]:
        return [r for r in self.requests if r.write and r.at >= since]

    def other_than_lease_reads(self, until: float = float("inf")) -> list[Request]:
        return [r for r in self.requests if r.at < until and not r.lease_read]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received = time.monotonic()
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        self.requests.append(
            Request(received, request.method, request.rel_url.path, _created_name(request, body))
        )
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method,
                self.upstream.rstrip("/") + request.rel_url.raw_path_qs,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS
                    },
                )
                with contextlib.suppress(ConnectionResetError):
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                return response
        except aiohttp.ClientError:
            if response is not None and response.prepared:
                if request.transport is not None:
                    request.transport.abort()
                return response
            return web.Response(status=503)


def _created_name(request: web.BaseRequest, body: bytes) -> str | None:
    if request.method != "POST" or not body:
        return None
    try:
        name = json.loads(body).get("metadata", {}).get("name")
    except (ValueError, AttributeError):
        return None
    return str(name) if name else None


def write_kubeconfig(path: Path, server: str, namespace: str) -> Path:
    """An ordinary kubeconfig (JSON is YAML) for ``server``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server}}],
        "users": [{"name": "local", "user": {}}],
        "contexts": [
            {
                "name": "local",
                "context": {"cluster": "local", "user": "local", "namespace": namespace},
            }
        ],
        "current-context": "local",
    }
    path.write_text(json.dumps(config))
    return path


def start_operator(
    log: Path,
    env: dict[str, str],
    *,
    namespace: str,
    lease: float,
    renew: float,
    retry: float,
) -> subprocess.Popen[bytes]:
    """A ``gocd-ha-operator run --all-namespaces`` process with leader election in ``namespace``
    (Lease duration, renew deadline, retry period in seconds), observing every second, plain logs
    to ``log`` (stdout and stderr), in ``env``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gocd_ha_operator.cli.main",
                "run",
                "--all-namespaces",
                f"--leader-election-namespace={namespace}",
                f"--leader-election-lease-duration={lease}",
                f"--leader-election-renew-deadline={renew}",
                f"--leader-election-retry-period={retry}",
                "--log-format=plain",
                "--observe-interval=1",
                # Not the default :8081: another worker's (or another checkout's) operator may
                # hold it, and this one would stop at start-up ("Address already in use").
                "--metrics-bind-address=0",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class OperatorProcess:
    """``gocd-ha-operator run --all-namespaces`` with leader election, as replica ``name``."""

    def __init__(self, name: str, stack: LocalStack, proxy: RecordingProxy, log: Path) -> None:
        self.name = name
        self.proxy = proxy
        self.log = log
        kubeconfig = write_kubeconfig(log.with_suffix(".kubeconfig"), proxy.url, "default")
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "POD_NAME": name,
            "GOCDHA_ENDPOINTS": stack.kubelet.endpoints_json(),
            "GOCDHA_OPERATOR_IMAGE": "local/gocd-ha-operator:dev",
        }
        env.pop("POD_NAMESPACE", None)
        self.process = start_operator(
            self.log,
            env,
            namespace=stack.namespace,
            lease=LEASE_SECONDS,
            renew=RENEW_SECONDS,
            retry=RETRY_SECONDS,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def exited(self, timeout: float) -> int:
        """Wait (without blocking the event loop) for the process to exit; its status."""
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} still runs after {timeout:g}s")
            await asyncio.sleep(0.05)
        return code

    async def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.process.send_signal(signal.SIGTERM)
        try:
            await self.exited(20)
        except TimeoutError:
            self.process.kill()
            await self.exited(10)


class LoopThread:
    """An event loop in its own thread: the proxies answer even while the test's loop is busy
    (writer, probe, kubelet), as the network between an operator and its API server would."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="proxies", daemon=True)
        self._thread.start()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` in this thread's loop; await its result from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def close(self) -> None:
        """Cancel what still runs there (handlers of aborted watches), then stop the loop."""
        await self.run(_cancel_others())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        self.loop.close()


async def _cancel_others() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Operators:
    """The operator processes of one test, each behind its own :class:`RecordingProxy` (served
    from a :class:`LoopThread`)."""

    def __init__(self, stack: LocalStack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        #: The latest process of each name.
        self.running: dict[str, OperatorProcess] = {}
        #: Every process started, in order (a name restarted is a new process).
        self.started: list[OperatorProcess] = []
        self._proxies: list[RecordingProxy] = []
        self._thread = LoopThread()

    def __getitem__(self, name: str) -> OperatorProcess:
        return self.running[name]

    async def start(self, name: str) -> OperatorProcess:
        proxy = RecordingProxy(self.stack.url)
        self._proxies.append(proxy)
        await self._thread.run(proxy.start())
        log = self.tmp / f"{name}.{len(self.started)}.log"
        process = OperatorProcess(name, self.stack, proxy, log)
        self.running[name] = process
        self.started.append(process)
        return process

    async def restart_exited(self) -> list[str]:
        """Start again every process that exited, as a Deployment would; their names."""
        again = [name for name, p in self.running.items() if p.process.poll() is not None]
        for name in again:
            await self.start(name)
        return again

    async def close(self) -> None:
        for process in self.running.values():
            with contextlib.suppress(Exception):
                await process.stop()
        for proxy in self._proxies:
            await self._thread.run(proxy.close())
        await self._thread.close()
        for process in self.started:  # shown by pytest when the test failed
            lines = process.text().splitlines()
            print(f"--- {process.log.name} (exit {process.process.returncode}), last lines:")
            print("\n".join(lines[-25:]))


def acted_before_leading(process: OperatorProcess) -> list[Request]:
    """What ``process`` asked of the API before it first wrote the operator Lease (took it), other
    than reading that Lease: a replica that waits runs no handler and no daemon."""
    acquired = next((r.at for r in process.proxy.requests if r.lease_write), float("inf"))
    return process.proxy.other_than_lease_reads(until=acquired)


@contextlib.asynccontextmanager
async def operator_processes(stack: LocalStack, tmp: Path) -> AsyncIterator[Operators]:
    """Operator processes started with :meth:`Operators.start`, all stopped at the end."""
    operators = Operators(stack, tmp)
    try:
        yield operators
    finally:
        await operators.close()


async def lease_holder(stack: LocalStack) -> str | None:
    """``holderIdentity`` of the operator Lease, or ``None`` (absent or empty)."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/{stack.namespace}/leases/{OPERATOR_LEASE_NAME}"
    try:
        lease = await stack.request("GET", path)
    except RuntimeError:
        return None
    holder = (lease.get("spec") or {}).get("holderIdentity")
    return str(holder) if holder else None


async def eventually(
    check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Await ``check()`` (a coroutine function) until truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def events(stack: LocalStack, cluster: str) -> list[dict[str, Any]]:
    """The Events about ``cluster`` (``kubectl get events --field-selector involvedObject...``)."""
    listing = await stack.request("GET", f"/api/v1/namespaces/{stack.namespace}/events")
    return [
        event
        for event in listing.get("items", [])
        if (event.get("involvedObject") or {}).get("name") == cluster
    ]


#: The reasons of the Events a promotion posts: one per step it records, its start and end, and
#: the ``Promoting`` condition's transitions (``Promoting`` -> True, ``Promoted`` -> False).
PROMOTION_REASONS: Final = frozenset(
    {f"Promotion{step}" for step in Step}
    | {
        "PromotionStarted",
        "PromotionSucceeded",
        "PromotionFailed",
        "PromotionRetrying",
        "PromotionRefused",
        "PromotionStuck",
        "Promoting",
        "Promoted",
    }
)


def promotion_event_counts(found: list[dict[str, Any]]) -> Counter[str]:
    """How many Events of each :data:`PROMOTION_REASONS` reason."""
    return Counter(
        str(event["reason"]) for event in found if event.get("reason") in PROMOTION_REASONS
    )
