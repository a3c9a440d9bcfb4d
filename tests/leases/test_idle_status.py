"""An idle cluster whose guard renews the primary Lease every second does not write its status
every few seconds for it: ``status.lease`` moves with the holder, its validity and the timeline,
and its ``renewTime``/``expiresAt`` only when the recorded expiry has passed (about once per Lease
duration) or while they decide a failover (docs/operator.md, "What fences a primary")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gocd_ha_operator.local.stack import LocalStack
from tests.support.faults import start_operator
from tests.support.partition import Recorder, replicating_or_logs
from tests.support.pg import unavailable_reason
from tests.support.promotion import NAME, promotion_cluster, replicating_from

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

L, D, R = 8, 5, 1
WINDOW_SECONDS = 24.0


def changed_fields(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of what differs (conditions by type)."""
    paths: list[str] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if key == "conditions" and isinstance(old, list) and isinstance(new, list):
            old, new = {c["type"]: c for c in old}, {c["type"]: c for c in new}
        if isinstance(old, dict) and isinstance(new, dict):
            paths += changed_fields(old, new, f"{prefix}{key}.")
        elif old != new:
            paths.append(f"{prefix}{key}")
    return paths


async def test_an_idle_cluster_does_not_write_status_for_each_lease_renewal(
    stack: LocalStack,
) -> None:
    await start_operator(stack)
    await stack.apply(
        promotion_cluster(
            primaryUnavailableSeconds=10,
            leaseDurationSeconds=L,
            renewDeadlineSeconds=D,
            retryPeriodSeconds=R,
        )
    )
    await replicating_or_logs(stack, "a", timeout=150)
    await asyncio.sleep(5)  # settle: the first sync, the first lag measurements
    await stack.wait_for(replicating_from("a"), NAME, timeout=30, what="still replicating")
    recorder = Recorder(stack, interval=0.05)
    recorder.start()
    began = time.monotonic()
    await asyncio.sleep(WINDOW_SECONDS)
    await recorder.stop()
    elapsed = time.monotonic() - began
    renewals = [r for r in recorder.renewals if r.holder == f"{NAME}-pg-a"]
    writes = len(recorder.versions) - 1  # the first version was there before the window
    fields: dict[str, int] = {}
    for (_, before), (_, after) in zip(recorder.statuses, recorder.statuses[1:], strict=False):
        for path in changed_fields(before, after):
            fields[path] = fields.get(path, 0) + 1
    print(
        f"\n{elapsed:.1f}s idle: {len(renewals)} Lease renewals, {writes} writes of the resource;"
        f" fields changed: {fields}"
    )
    assert len(renewals) >= elapsed / R / 2, "the guard should renew about every second"
    status = await stack.status(NAME)
    assert status["lease"]["valid"] is True and status["lease"]["holder"] == f"{NAME}-pg-a"
    # The Lease's stamps: refreshed once the recorded expiry (renewal + L + 2 s, whole seconds)
    # has passed, so at most once per L + 1 s (one more for the window's edges) — not at every
    # renewal. (The other writes printed are WAL positions and the Cold sync's stamp, which move
    # on their own cadence.)
    assert fields.get("lease.renewTime", 0) <= elapsed / (L + 1) + 1, fields
    assert fields.get("lease.expiresAt", 0) <= elapsed / (L + 1) + 1, fields
