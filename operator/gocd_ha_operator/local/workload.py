"""A GoCD-like write load for the local stack: numbered rows committed through the primary
Service, reconnecting whenever the Service moves. Used by the demo, the promotion tests and the
promotion benchmark to count what a promotion loses (the RPO in rows)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import psycopg

from gocd_ha_operator.local.stack import GocdDatabaseConfig, LocalStack

#: SQLSTATEs of a refused login (invalid_authorization_specification, invalid_password).
AUTH_SQLSTATES: Final = frozenset({"28000", "28P01"})


def streaming_from(primary: str, status: dict[str, Any]) -> bool:
    """Whether ``status`` shows ``primary`` serving and the other side streaming from it."""
    standby = "b" if primary == "a" else "a"
    sides = status.get("sides", {})
    replicating: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c["type"] == "StandbyReplicating"), {}
    )
    return bool(
        status.get("primary") == primary
        and sides.get(primary, {}).get("postgres", {}).get("inRecovery") is False
        and sides.get(standby, {}).get("postgres", {}).get("inRecovery") is True
        and status.get("replication", {}).get("state") == "Streaming"
        and replicating.get("status") == "True"
    )


#: How long a client waits for a Service to select a pod before it gives up. The roles move in
#: the API before the node's endpoints follow (the local kubelet's next sync, kube-proxy's next
#: update on a real node): a promotion's ``Succeeded`` does not mean the Service already routes.
SERVICE_WAIT_SECONDS: Final = 30.0


async def conninfo_when_selected(
    lookup: Callable[[], Awaitable[dict[str, Any] | None]],
    service: str,
    *,
    timeout: float = SERVICE_WAIT_SECONDS,
    poll: float = 0.05,
) -> dict[str, Any]:
    """``lookup()``'s connection parameters once ``service`` selects a pod, as a client that
    retries its connection sees them; :class:`RuntimeError` naming the Service after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        info = await lookup()
        if info is not None:
            return info
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{service} selects nothing (waited {timeout:g} s)")
        await asyncio.sleep(poll)


class BackgroundLoop:
    """``start()`` runs ``_run()`` as a task until ``stop()`` sets ``_stop`` and waits for it to
    end. A load or a probe runs beside the scenario it measures, and its numbers are only read
    after ``stop()``: so stop waits for the last write or sample. ``stop_timeout`` None: as long as
    it takes, an error of ``_run`` raised there; otherwise at most that long (a commit hanging on
    a lost primary), the task then cancelled. For dataclasses that declare ``_task`` and
    ``_stop`` as fields."""

    stop_timeout: ClassVar[float | None] = None
    _task: asyncio.Task[None] | None
    _stop: asyncio.Event

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is None:
            return
        if self.stop_timeout is None:
            await self._task
        else:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=self.stop_timeout)
        self._task = None


@dataclass(frozen=True)
class Commit:
    row: int
    at: float
    #: Local port of the server that acknowledged it (tells old and new primary apart).
    port: int


@dataclass
class RowWriter(BackgroundLoop):
    """Commits ``INSERT INTO builds`` continuously; ``commits`` holds every acknowledged row."""

    stop_timeout: ClassVar[float | None] = 10.0

    stack: LocalStack
    cluster: str
    commits: list[Commit] = field(default_factory=list)
    failures: int = 0
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _next_row: int = 1

    @property
    def acknowledged(self) -> set[int]:
        return {commit.row for commit in self.commits}

    async def _conninfo(self, service: str) -> dict[str, Any]:
        return await conninfo_when_selected(
            lambda: self.stack.gocd_conninfo(self.cluster, service), service
        )

    async def prepare(self) -> None:
        info = await self._conninfo(f"{self.cluster}-pg-primary")
        async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS builds (id int PRIMARY KEY)")

    async def _run(self) -> None:
        service = f"{self.cluster}-pg-primary"
        # Read once, as GoCD reads db.properties at start: a reconnect reads no Secret (two API
        # requests before every attempt are no part of a client's reconnect, issue #16). Read
        # again only after the server refused the password.
        config: GocdDatabaseConfig | None = None
        while not self._stop.is_set():
            if config is None:
                config = await self.stack.gocd_database_config(self.cluster)
            info = self.stack.gocd_conninfo_with(service, config)
            if info is None:  # fenced: the Service selects nothing for now
                self.failures += 1
                await asyncio.sleep(0.02)
                continue
            try:
                async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
                    while not self._stop.is_set():
                        row = self._next_row
                        self._next_row += 1  # a failed COMMIT's number is never reused
                        await conn.execute("INSERT INTO builds VALUES (%s)", (row,))
                        self.commits.append(Commit(row, time.monotonic(), int(info["port"])))
            except psycopg.Error as exc:
                self.failures += 1
                if exc.sqlstate in AUTH_SQLSTATES or "password authentication" in str(exc):
                    config = None
                await asyncio.sleep(0.02)

    async def rows_on(self, service: str) -> set[int]:
        info = await self._conninfo(service)
        async with await psycopg.AsyncConnection.connect(**info) as conn:
            cursor = await conn.execute("SELECT id FROM builds")
            return {row[0] for row in await cursor.fetchall()}
