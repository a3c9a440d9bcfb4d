"""Issue #11, defect 4: a stale status must not bring a former primary back as primary.

Status is memory: an etcd or backup restore brings back a snapshot from before a promotion. The
operator used to believe it (side a is primary) and the instance entrypoint started any data dir
without ``standby.signal`` as a primary: two primaries (timelines 1 and 2), the primary Service
on the old one, the new primary's rows invisible.

Here, on real Postgres through the local stack: ``rejoin: Manual``, a switchover a→b, rows
written on b, then the object as it was before the promotion (status and annotation) and an
operator restart. What a user checks: how many instances accept writes, where the primary
Service leads, whether b's acknowledged rows are there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE
from gocd_ha_operator.api.status import status_patch
from gocd_ha_operator.local.stack import LocalStack, local_stack
from gocd_ha_operator.local.workload import RowWriter, streaming_from
from tests.faults.truth_support import NAME, body, patch_cluster, patch_status, writable_sides
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture
async def stack() -> AsyncIterator[LocalStack]:
    async with local_stack([NAME], namespace="faults", observe_interval=0.5) as running:
        yield running


async def test_a_restored_pre_promotion_status_does_not_make_two_primaries(
    stack: LocalStack,
) -> None:
    await stack.apply(body(rejoin="Manual"))
    await stack.wait_for(lambda s: streaming_from("a", s), NAME, timeout=120, what="a primary")
    snapshot = await stack.status(NAME)  # what the backup holds
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "switch-1")
    promotion = await stack.wait_for(
        lambda s: (
            s.get("promotion", {}).get("result") not in (None, "InProgress") and s["promotion"]
        ),
        NAME,
        timeout=90,
        what="the switchover",
    )
    assert promotion["result"] == "Succeeded", promotion
    writer = RowWriter(stack, NAME)
    await writer.prepare()
    writer.start()
    await asyncio.sleep(1.5)
    await writer.stop()
    assert writer.acknowledged, "rows were written on b"

    # The restore: the object as it was before the promotion, then the operator restarts.
    await stack.stop_operator()
    await patch_cluster(stack, {"metadata": {"annotations": {ANNOTATION_PROMOTE: None}}})
    await patch_status(stack, status_patch(await stack.status(NAME), snapshot))
    assert (await stack.status(NAME))["primary"] == "a"
    await stack.start_operator()

    deadline = time.monotonic() + 90
    while True:
        writable = await writable_sides(stack)
        assert len(writable) < 2, f"two primaries: {writable}"
        status = await stack.status(NAME)
        if streaming_from("b", status) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert writable == {"b": 2}, writable
    assert status["primary"] == "b", status.get("primary")
    # The primary Service leads to b: the acknowledged rows are there and it takes writes.
    rows = await writer.rows_on(f"{NAME}-pg-primary")
    assert writer.acknowledged <= rows, f"{len(writer.acknowledged - rows)} rows missing"
    info = await stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
    assert info is not None
    async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
        await conn.execute("INSERT INTO builds VALUES (-1)")
