"""Promotion benchmark: the operator promotes through the annotation, on real local Postgres.

For a switchover (the primary is healthy) and a failover (the primary's process is killed), a
writer commits numbered rows through the primary Service the whole time. Prints one line each:

    promotion: type=<switchover|failover> rpo_rows=<> annotate_to_writable_s=<> raw_promote_s=<>

``rpo_rows`` counts rows whose COMMIT returned but that the new primary does not have;
``annotate_to_writable_s`` is from the annotation to the writer's first commit on the new
primary; ``raw_promote_s`` is how long ``pg_promote`` itself took (from status).

    .venv/bin/python benchmarks/promotion.py        (as root it runs Postgres as user postgres)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg

from gocd_ha_operator.constants import ANNOTATION_PROMOTE
from gocd_ha_operator.local.stack import LocalStack, local_stack

NAME = "ci"
BODY: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": NAME},
    "spec": {
        "postgres": {"image": "postgres:15"},
        "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
    },
}


class Writer:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.acknowledged: list[tuple[int, float, int]] = []  # (row, time, server port)
        self.stopping = False

    async def run(self) -> None:
        row = 1
        while not self.stopping:
            info = await self.stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
            if info is None:
                await asyncio.sleep(0.01)
                continue
            try:
                async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
                    await conn.execute("CREATE TABLE IF NOT EXISTS builds (id int PRIMARY KEY)")
                    while not self.stopping:
                        await conn.execute("INSERT INTO builds VALUES (%s)", (row,))
                        self.acknowledged.append((row, time.monotonic(), info["port"]))
                        row += 1
            except psycopg.Error:
                row += 1
                await asyncio.sleep(0.01)


def streaming_from(primary: str, status: dict[str, Any]) -> bool:
    other = "b" if primary == "a" else "a"
    sides = status.get("sides", {})
    return bool(
        status.get("primary") == primary
        and sides.get(other, {}).get("postgres", {}).get("inRecovery") is True
        and status.get("replication", {}).get("state") == "Streaming"
    )


async def run(kind: str) -> str:
    async with local_stack([NAME], namespace="bench", observe_interval=0.5) as stack:
        await stack.apply(BODY)
        await stack.wait_for(lambda s: streaming_from("a", s), NAME, timeout=120, what="ready")
        writer = Writer(stack)
        task = asyncio.create_task(writer.run())
        await asyncio.sleep(2.0)
        old_port = stack.kubelet.port(f"{NAME}-pg-a")
        if kind == "failover":
            await stack.kubelet.kill(f"{NAME}-pg-a")
            await stack.wait_for(
                lambda s: any(
                    c["type"] == "PrimaryAvailable" and c["status"] == "False"
                    for c in s.get("conditions", [])
                ),
                NAME,
                timeout=30,
                what="PrimaryAvailable=False",
            )
        annotated = time.monotonic()
        await stack.annotate(NAME, ANNOTATION_PROMOTE, f"bench-{kind}")
        promotion = await stack.wait_for(
            lambda s: (
                s.get("promotion", {}).get("result") not in (None, "InProgress") and s["promotion"]
            ),
            NAME,
            timeout=120,
            what="the promotion",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            port != old_port and at > annotated for _, at, port in writer.acknowledged
        ):
            await asyncio.sleep(0.01)
        writer.stopping = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        first_new = min(
            (at for _, at, port in writer.acknowledged if port != old_port and at > annotated),
            default=float("nan"),
        )
        info = await stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
        assert info is not None
        async with await psycopg.AsyncConnection.connect(**info) as conn:
            rows = {r[0] for r in await (await conn.execute("SELECT id FROM builds")).fetchall()}
        lost = len({row for row, _, _ in writer.acknowledged} - rows)
        if promotion.get("result") != "Succeeded":
            return f"promotion: type={kind} failed: {promotion.get('message')}"
        return (
            f"promotion: type={kind} rpo_rows={lost} "
            f"annotate_to_writable_s={first_new - annotated:.2f} "
            f"raw_promote_s={promotion.get('promoteSeconds')} "
            f"committed_rows={len(writer.acknowledged)}"
        )


async def main() -> None:
    for kind in ("switchover", "failover"):
        print(await run(kind), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
