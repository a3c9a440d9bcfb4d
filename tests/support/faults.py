"""Helpers of the fault tests (``tests/faults``): fault injection for promotion tests on real
local Postgres processes (the local stack).

Faults are injected where they happen in production, never inside the operator's code:

* :class:`FaultyEndpoints` — the operator's view of the network (the ``GOCDHA_ENDPOINTS`` map it
  is configured with): a Service's address answers with a refused connection for a while;
* :class:`FaultyKube` — the Kubernetes API client: a chosen write fails with an HTTP 500;
* Postgres itself (slots used up, a superuser session), and the operator process killed (stopped
  in the middle of a step, a new process started).

What the tests check is what a user would: :class:`WriteProbe` samples, several times a second,
how many instances accept a write (a real INSERT over each instance's own address), the writer's
acknowledged rows on the primary afterwards, and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import psycopg
import pytest

from gocd_ha_operator.api.constants import GOCD_DB_USER, POSTGRES_PORT
from gocd_ha_operator.kube.apply import KubeApiError, KubeClient
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.local.emulator import OperatorThread
from gocd_ha_operator.local.stack import LocalStack
from gocd_ha_operator.local.workload import BackgroundLoop, RowWriter
from tests.support.pg import unavailable_reason
from tests.support.ports import free_port
from tests.support.promotion import NAME, Writer

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

Hook = Callable[[str], Awaitable[None]]


class FaultyEndpoints(Mapping[str, Endpoint]):
    """The kubelet's endpoint map; :meth:`refuse` makes one Service refuse connections for a
    while (a closed port: ``connection refused``, as from a node whose Postgres is not there)."""

    def __init__(self, inner: Mapping[str, Endpoint], namespace: str) -> None:
        self.inner = inner
        self.namespace = namespace
        self.closed = Endpoint("127.0.0.1", free_port())
        self._until: dict[str, float] = {}
        self.refusals = 0

    def refuse(self, service: str, seconds: float, port: int = POSTGRES_PORT) -> None:
        self._until[f"{self.namespace}/{service}:{port}"] = time.monotonic() + seconds

    def heal(self) -> None:
        self._until.clear()

    def __getitem__(self, key: str) -> Endpoint:
        if self._until.get(key, 0.0) > time.monotonic():
            self.refusals += 1
            return self.closed
        return self.inner[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class FaultyKube:
    """A :class:`KubeClient` whose next ``count`` writes matching ``what`` fail with HTTP 500."""

    def __init__(self, inner: KubeClient) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._fail: list[tuple[str, int]] = []
        self.failed = 0

    def fail_writes(self, what: str, count: int = 1) -> None:
        """``what``: ``status`` (status patches) or a kind (``StatefulSet``, ``Service``...)."""
        with self._lock:
            self._fail.append((what, count))

    def _maybe_fail(self, what: str) -> None:
        with self._lock:
            for index, (wanted, count) in enumerate(self._fail):
                if wanted == what and count > 0:
                    self._fail[index] = (wanted, count - 1)
                    self.failed += 1
                    raise KubeApiError(500, "InternalError", f"injected failure of a {what} write")

    def patch_status(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail("status")
        return self.inner.patch_status(*args, **kwargs)

    def patch(self, api_version: str, kind: str, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail(kind)
        return self.inner.patch(api_version, kind, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def start_operator(
    stack: LocalStack,
    *,
    endpoints: Mapping[str, Endpoint] | None = None,
    kube: Callable[[], Any] | None = None,
    hook: Hook | None = None,
) -> None:
    """(Re)start the operator with faults wired into its network view and API client."""
    await stack.stop_operator()
    config = stack.config(hook)
    changes: dict[str, Any] = {}
    if endpoints is not None:
        changes["endpoints"] = endpoints
    if kube is not None:
        changes["kube_factory"] = kube
    config = dataclasses.replace(config, **changes)
    stack.operator = OperatorThread(config)
    await stack.operator.start()


class Gate:
    """A promotion hook that holds the operator at ``point`` until :meth:`release` (the hook runs
    in the operator's thread and loop; the test waits in its own)."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.reached = threading.Event()
        self.released = threading.Event()

    async def __call__(self, step: str) -> None:
        if step == self.point and not self.released.is_set():
            self.reached.set()
            while not self.released.is_set():
                await asyncio.sleep(0.05)

    async def wait_reached(self, timeout: float = 90) -> None:
        if not await asyncio.to_thread(self.reached.wait, timeout):
            raise TimeoutError(f"the promotion never reached {self.point}")

    def release(self) -> None:
        self.released.set()


async def gocd_password(stack: LocalStack, cluster: str) -> str:
    """The GoCD database user's password, from the Secret the operator made."""
    return await stack.secret_value(f"{cluster}-postgres-gocd", "password")


async def gocd_session(
    stack: LocalStack, cluster: str, side: str, password: str
) -> psycopg.AsyncConnection[Any]:
    """An autocommit session as the GoCD user over ``side``'s own address, not a role Service
    (which a fence empties and a promotion moves); a connection attempt gives up after 2 s."""
    return await psycopg.AsyncConnection.connect(
        host="127.0.0.1",
        port=stack.kubelet.port(f"{cluster}-pg-{side}"),
        user=GOCD_DB_USER,
        password=password,
        dbname="gocd",
        connect_timeout=2,
        autocommit=True,
    )


@dataclasses.dataclass
class WriteProbe(BackgroundLoop):
    """Samples how many instances accept a write: every ``interval`` seconds, an INSERT over each
    instance's own address (not the role Services, which a fence empties) as the GoCD user."""

    stack: LocalStack
    cluster: str = NAME
    interval: float = 0.2
    samples: list[dict[str, bool]] = dataclasses.field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _password: str = ""

    async def prepare(self) -> None:
        self._password = await gocd_password(self.stack, self.cluster)
        async with await self._connect("a") as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS probe (at float8)")

    async def _connect(self, side: str) -> psycopg.AsyncConnection[Any]:
        return await gocd_session(self.stack, self.cluster, side, self._password)

    async def _writable(self, side: str) -> bool:
        try:
            async with asyncio.timeout(3):
                async with await self._connect(side) as conn:
                    await conn.execute("INSERT INTO probe VALUES (%s)", (time.time(),))
                    return True
        except (psycopg.Error, OSError, TimeoutError):
            return False

    async def _run(self) -> None:
        while not self._stop.is_set():
            began = time.time()
            a, b = await asyncio.gather(self._writable("a"), self._writable("b"))
            self._record(began, {"a": a, "b": b})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)

    def _record(self, began: float, sample: dict[str, bool]) -> None:
        """Keep one sample (``began``: wall-clock time it started, for subclasses that keep it)."""
        self.samples.append(sample)

    @property
    def most_writable(self) -> int:
        return max((sum(sample.values()) for sample in self.samples), default=0)

    def both_writable(self) -> list[int]:
        return [i for i, sample in enumerate(self.samples) if all(sample.values())]


async def writer_and_probe(stack: LocalStack) -> tuple[RowWriter, WriteProbe]:
    """A GoCD-like writer through the primary Service and the fault tier's write probe (how many
    instances accept a write), both prepared and running."""
    writer, probe = Writer(stack), WriteProbe(stack)
    await writer.prepare()
    await probe.prepare()
    writer.start()
    probe.start()
    return writer, probe


async def superuser(stack: LocalStack, side: str, dbname: str = "postgres") -> Any:
    """A superuser session on one instance over its unix socket (as an administrator would)."""
    password = await stack.secret_value(f"{NAME}-postgres-superuser", "password")
    socket_dir = stack.kubelet.work_dir / "pods" / f"{NAME}-pg-{side}-0" / "volumes" / "run"
    return await psycopg.AsyncConnection.connect(
        host=str(socket_dir),
        port=stack.kubelet.port(f"{NAME}-pg-{side}"),
        user="postgres",
        password=password,
        dbname=dbname,
        autocommit=True,
    )


def history_tokens(status: dict[str, Any]) -> list[str]:
    return [entry["token"] for entry in status.get("history", [])]
