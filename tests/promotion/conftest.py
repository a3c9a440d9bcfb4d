"""Promotion tests: the operator drives real local Postgres processes through the local kubelet.

The harness plays the kubelet (``gocd_ha_operator.local``): it watches the emulator's StatefulSets
and Deployments and starts and stops real Postgres instances (the project's entrypoint, the env
from the pod template) to match their replicas. GoCD servers are stand-ins serving the health
endpoint only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from gocd_ha_operator.local.stack import LocalStack, local_stack
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NAME = "ci"


def cluster_body(**failover: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gocdha.io/v1alpha1",
        "kind": "GoCDHACluster",
        "metadata": {"name": NAME},
        "spec": {
            "postgres": {"image": "postgres:15"},
            "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
            "failover": failover,
        },
    }


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def replicating_from(primary: str):  # type: ignore[no-untyped-def]
    """A status check: ``primary`` serves and the other side streams from it."""
    standby = "b" if primary == "a" else "a"

    def check(status: dict[str, Any]) -> bool:
        sides = status.get("sides", {})
        return bool(
            status.get("primary") == primary
            and sides.get(primary, {}).get("postgres", {}).get("inRecovery") is False
            and sides.get(standby, {}).get("postgres", {}).get("inRecovery") is True
            and status.get("replication", {}).get("state") == "Streaming"
            and condition(status, "StandbyReplicating").get("status") == "True"
        )

    return check


def finished(token: str):  # type: ignore[no-untyped-def]
    def check(status: dict[str, Any]) -> dict[str, Any] | None:
        promotion = status.get("promotion", {})
        if promotion.get("token") == token and promotion.get("result") != "InProgress":
            return promotion
        return None

    return check


@pytest.fixture
async def stack() -> AsyncIterator[LocalStack]:
    async with local_stack([NAME], namespace="build", observe_interval=0.5) as running:
        yield running


async def create_replicating(stack: LocalStack, **failover: Any) -> None:
    await stack.apply(cluster_body(**failover))
    await stack.wait_for(replicating_from("a"), NAME, timeout=120, what="a primary, b streaming")


@dataclass
class Writer:
    """Commits numbered rows continuously through the primary Service, reconnecting when it
    moves; ``acknowledged`` holds every row whose COMMIT returned."""

    stack: LocalStack
    acknowledged: list[int] = field(default_factory=list)
    failures: int = 0
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def prepare(self) -> None:
        info = await self.stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
        assert info is not None
        async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS builds (id int PRIMARY KEY)")

    async def _run(self) -> None:
        next_id = 1
        while not self._stop.is_set():
            info = await self.stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
            if info is None:
                self.failures += 1
                await asyncio.sleep(0.05)
                continue
            try:
                async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
                    while not self._stop.is_set():
                        await conn.execute("INSERT INTO builds VALUES (%s)", (next_id,))
                        self.acknowledged.append(next_id)
                        next_id += 1
            except psycopg.Error:
                self.failures += 1
                next_id += 1  # the row may or may not be committed: never reuse its number
                await asyncio.sleep(0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)

    async def rows_on(self, service: str) -> set[int]:
        info = await self.stack.gocd_conninfo(NAME, service)
        assert info is not None, f"{service} selects nothing"
        async with await psycopg.AsyncConnection.connect(**info) as conn:
            cursor = await conn.execute("SELECT id FROM builds")
            return {row[0] for row in await cursor.fetchall()}
