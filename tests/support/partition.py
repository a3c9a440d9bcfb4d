"""Helpers of the partition tests (``tests/leases/test_partition.py``): what a user would record
while the primary's pod is cut off from the API server and the operator, on the local stack.

* :class:`DirectWriter` — a client on the primary's side of the partition: its own connection to
  that Postgres (not through a role Service, which the operator can move), committing numbered
  rows and recording the wall-clock time each commit was **acknowledged**;
* :class:`TimedProbe` — the fault tier's write probe (how many instances accept a write) with the
  time of every sample;
* :class:`Recorder` — polls the primary Lease and the cluster's status: every distinct renewal
  (holder, ``renewTime``), every ``FailoverPossible`` reason, how often status was written;
* :func:`events` — the Events of the cluster with one reason (``PromotionStarted``...).

All times are this machine's wall clock (``time.time()``), the clock the guard's ``renewTime``
and the operator's ``startedAt`` are written with: the processes share it, so comparing them needs
no allowance for clock offsets, only for the granularity of each stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import psycopg

from gocd_ha_operator.local.stack import LocalStack
from gocd_ha_operator.local.workload import BackgroundLoop
from tests.support.faults import WriteProbe, gocd_password, gocd_session
from tests.support.promotion import NAME, replicating_from

LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"
EVENTS_PATH = "/api/v1/namespaces/{ns}/events"


def parse_time(value: str) -> float:
    """A Kubernetes timestamp (``...Z``, RFC 3339 or MicroTime) as Unix time."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Ack:
    row: int
    #: Wall-clock time at which the client had the acknowledgement (after the commit returned).
    at: float


@dataclass
class DirectWriter(BackgroundLoop):
    """Autocommit INSERTs of numbered rows over one connection to ``side``'s own port,
    reconnecting on any error (a failed row number is never reused)."""

    stop_timeout: ClassVar[float | None] = 10.0

    stack: LocalStack
    side: str
    cluster: str = NAME
    acks: list[Ack] = field(default_factory=list)
    errors: int = 0
    _password: str = ""
    _next_row: int = 1
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _connect(self, side: str) -> psycopg.AsyncConnection[Any]:
        return await gocd_session(self.stack, self.cluster, side, self._password)

    async def prepare(self) -> None:
        self._password = await gocd_password(self.stack, self.cluster)
        async with await self._connect(self.side) as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS partition_rows (id int PRIMARY KEY)")

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(5):
                    conn = await self._connect(self.side)
                async with conn:
                    while not self._stop.is_set():
                        row = self._next_row
                        self._next_row += 1
                        # A commit may hang (synchronous replication without a standby): bounded.
                        async with asyncio.timeout(5):
                            await conn.execute("INSERT INTO partition_rows VALUES (%s)", (row,))
                        self.acks.append(Ack(row, time.time()))
            except (psycopg.Error, OSError, TimeoutError):
                self.errors += 1
                await asyncio.sleep(0.02)

    @property
    def acknowledged(self) -> set[int]:
        return {ack.row for ack in self.acks}

    @property
    def last_ack(self) -> float:
        return self.acks[-1].at

    async def rows_on(self, side: str) -> set[int]:
        async with await self._connect(side) as conn:
            cursor = await conn.execute("SELECT id FROM partition_rows")
            return {row[0] for row in await cursor.fetchall()}


@dataclass
class TimedProbe(WriteProbe):
    """:class:`WriteProbe` that also keeps when each sample started (wall clock)."""

    times: list[float] = field(default_factory=list)

    def _record(self, began: float, sample: dict[str, bool]) -> None:
        self.samples.append(sample)
        self.times.append(began)

    def writable_counts(self) -> list[int]:
        return [sum(sample.values()) for sample in self.samples]


@dataclass(frozen=True)
class Renewal:
    holder: str | None
    renew_time: float
    duration: int


@dataclass
class Recorder(BackgroundLoop):
    """Polls the primary Lease and the cluster (every ``interval`` s) until :meth:`stop`."""

    stack: LocalStack
    cluster: str = NAME
    interval: float = 0.1
    renewals: list[Renewal] = field(default_factory=list)
    #: ``(time, FailoverPossible reason)`` whenever the reason changed.
    failover_possible: list[tuple[float, str | None]] = field(default_factory=list)
    #: Distinct ``metadata.resourceVersion`` values of the cluster seen, with when.
    versions: list[tuple[float, str]] = field(default_factory=list)
    statuses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def lease(self) -> dict[str, Any]:
        path = LEASES_PATH.format(ns=self.stack.namespace, name=f"{self.cluster}-primary")
        result: dict[str, Any] = await self.stack.request("GET", path)
        return result

    async def _sample(self) -> None:
        now = time.time()
        spec = (await self.lease()).get("spec", {})
        if spec.get("renewTime"):
            renewal = Renewal(
                spec.get("holderIdentity"),
                parse_time(spec["renewTime"]),
                int(spec.get("leaseDurationSeconds") or 0),
            )
            if not self.renewals or self.renewals[-1] != renewal:
                self.renewals.append(renewal)
        body = await self.stack.cluster(self.cluster)
        version = str(body.get("metadata", {}).get("resourceVersion"))
        if not self.versions or self.versions[-1][1] != version:
            self.versions.append((now, version))
            self.statuses.append((now, dict(body.get("status") or {})))
        reason = next(
            (
                c.get("reason")
                for c in (body.get("status") or {}).get("conditions", [])
                if c["type"] == "FailoverPossible"
            ),
            None,
        )
        if not self.failover_possible or self.failover_possible[-1][1] != reason:
            self.failover_possible.append((now, reason))

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the API is the emulator: it does not go away
                await self._sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)

    def last_renewal_by(self, holder: str) -> Renewal:
        return [r for r in self.renewals if r.holder == holder][-1]

    def reasons_seen(self) -> set[str | None]:
        return {reason for _, reason in self.failover_possible}


async def events_of(stack: LocalStack, cluster: str = NAME) -> list[dict[str, Any]]:
    """The Events about ``cluster``, oldest first."""
    listed = await stack.request("GET", EVENTS_PATH.format(ns=stack.namespace))
    found = [
        event
        for event in listed.get("items", [])
        if event.get("involvedObject", {}).get("name") == cluster
        and event.get("involvedObject", {}).get("kind") == "GoCDHACluster"
    ]
    return sorted(found, key=lambda e: parse_time(e.get("eventTime") or e["firstTimestamp"]))


async def events(stack: LocalStack, reason: str, cluster: str = NAME) -> list[dict[str, Any]]:
    """The Events about ``cluster`` with ``reason``, oldest first."""
    return [event for event in await events_of(stack, cluster) if event.get("reason") == reason]


def wall(stamp: float) -> str:
    """``HH:MM:SS.ffffff`` (UTC) for the printed timelines."""
    return datetime.fromtimestamp(stamp).astimezone().strftime("%H:%M:%S.%f")


async def replicating_or_logs(
    stack: LocalStack, primary: str, *, timeout: float, cluster: str = NAME
) -> None:
    """Wait until ``primary`` serves and the other side streams; otherwise fail with the tails
    of both Postgres pods' logs (what went wrong is there, not in status)."""
    try:
        await stack.wait_for(
            replicating_from(primary), cluster, timeout=timeout, what=f"{primary} primary"
        )
    except TimeoutError as exc:
        logs = "\n".join(
            f"--- {cluster}-pg-{side}:\n{stack.kubelet.pod_log(f'{cluster}-pg-{side}')[-3000:]}"
            for side in ("a", "b")
        )
        raise AssertionError(f"{exc}\n{logs}") from None
