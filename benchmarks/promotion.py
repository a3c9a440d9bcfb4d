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
import sys
import time
from pathlib import Path
from typing import Any

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE
from gocd_ha_operator.local.stack import local_stack
from gocd_ha_operator.local.workload import RowWriter, streaming_from

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.clusters import Replace, cluster_body

NAME = "ci"
BODY: dict[str, Any] = cluster_body(
    metadata=Replace({"name": NAME}),
    spec=Replace(
        {
            "postgres": {"image": "postgres:15"},
            "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
        }
    ),
)


async def run(kind: str) -> str:
    async with local_stack([NAME], namespace="bench", observe_interval=0.5) as stack:
        await stack.apply(BODY)
        await stack.wait_for(lambda s: streaming_from("a", s), NAME, timeout=120, what="ready")
        writer = RowWriter(stack, NAME)
        await writer.prepare()
        writer.start()
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

        def on_new_primary() -> list[float]:
            return [c.at for c in writer.commits if c.port != old_port and c.at > annotated]

        while time.monotonic() < deadline and not on_new_primary():
            await asyncio.sleep(0.01)
        await writer.stop()
        first_new = min(on_new_primary(), default=float("nan"))
        lost = len(writer.acknowledged - await writer.rows_on(f"{NAME}-pg-primary"))
        if promotion.get("result") != "Succeeded":
            return f"promotion: type={kind} failed: {promotion.get('message')}"
        return (
            f"promotion: type={kind} rpo_rows={lost} "
            f"annotate_to_writable_s={first_new - annotated:.2f} "
            f"raw_promote_s={promotion.get('promoteSeconds')} "
            f"committed_rows={len(writer.commits)}"
        )


async def main() -> None:
    for kind in ("switchover", "failover"):
        print(await run(kind), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
