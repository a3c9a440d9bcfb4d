"""The Lease hand-over at the end of ``StoppingOldPrimary`` failing (the API refuses the write):
status and Events say ``LeaseHeld`` — what is wrong, not a generic error — and the step is
retried; the promotion then completes once, nothing acknowledged is lost, and the new side holds
the Lease. On the local stack with real Postgres; the fault is injected in the operator's API
client (``FaultyKube``), where a failing API server would produce it."""

from __future__ import annotations

import asyncio
import time

import pytest

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE
from gocd_ha_operator.kube.apply import client_for
from gocd_ha_operator.local.stack import LocalStack
from tests.support.faults import FaultyKube, start_operator
from tests.support.partition import Recorder, events, replicating_or_logs
from tests.support.pg import unavailable_reason
from tests.support.promotion import NAME, Writer, finished, promotion_cluster, replicating_from

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

#: Failed Lease writes: with the runner's back-off (0.5, 1, 2 s) well inside the 30 s of retries.
FAILURES = 3


async def test_a_failed_lease_hand_over_is_reported_as_lease_held_and_retried(
    stack: LocalStack,
) -> None:
    kube = FaultyKube(client_for(stack.url))
    await start_operator(stack, kube=lambda: kube)
    await stack.apply(promotion_cluster())
    await replicating_or_logs(stack, "a", timeout=150)
    writer = Writer(stack)
    await writer.prepare()
    writer.start()
    recorder = Recorder(stack)
    recorder.start()
    try:
        await asyncio.sleep(1)
        kube.fail_writes("Lease", FAILURES)
        started = time.monotonic()
        await stack.annotate(NAME, ANNOTATION_PROMOTE, "handover-1")
        promotion = await stack.wait_for(finished("handover-1"), NAME, timeout=120, what="it")
        took = time.monotonic() - started
        await asyncio.sleep(1)  # the writer finds the new primary through the moved Service
    finally:
        await writer.stop()
        await recorder.stop()
    assert kube.failed == FAILURES
    assert promotion["result"] == "Succeeded", promotion
    assert promotion["type"] == "Switchover"
    # Reported as what it is, while it was retried.
    promoting = [
        condition
        for _, status in recorder.statuses
        for condition in status.get("conditions", [])
        if condition["type"] == "Promoting"
    ]
    held = [c for c in promoting if c["reason"] == "LeaseHeld"]
    assert held, sorted({c["reason"] for c in promoting})
    assert held[0]["status"] == "True"
    assert "Lease" in held[0]["message"] and "side b" in held[0]["message"], held[0]
    warnings = await events(stack, "LeaseHeld")
    assert warnings and all(e["type"] == "Warning" for e in warnings), warnings
    assert "(details in the operator log)" not in warnings[0]["message"]
    print(f"\nLeaseHeld while retrying: {held[0]['message']!r}; switchover took {took:.1f}s")
    # Retried safely: one promotion, the Lease moved once, nothing acknowledged lost.
    assert len(await events(stack, "PromotionPromoting")) == 1
    status = await stack.status(NAME)
    assert [h["token"] for h in status["history"]] == ["handover-1"]
    lease = await recorder.lease()
    assert lease["spec"]["holderIdentity"] == f"{NAME}-pg-b"
    rows = await writer.rows_on(f"{NAME}-pg-primary")
    assert writer.acknowledged - rows == set()
    # The condition does not go on claiming LeaseHeld once the Lease moved.
    after = [
        c["reason"]
        for _, s in recorder.statuses
        if s.get("promotion", {}).get("step") in ("Promoting", "SwitchingRoles", "Rejoining")
        for c in s.get("conditions", [])
        if c["type"] == "Promoting"
    ]
    assert after and "LeaseHeld" not in after, after
    final = next(c for c in status["conditions"] if c["type"] == "Promoting")
    assert (final["status"], final["reason"]) == ("False", "Promoted")
    await stack.wait_for(replicating_from("b"), NAME, timeout=120, what="a rejoined")
