"""Issue #11, defect 5: a spec edit must never stop a standby that is replicating.

``failover.rejoin`` says what happens to the old primary's side in a promotion. The reconcile
applied it to the last, finished one: after a switchover whose old primary had rejoined and
streamed, ``kubectl patch … rejoin: Manual`` scaled that standby to 0 within seconds.

Here, on real Postgres through the local stack: every promotion-related field is flipped on a
healthy pair after a promotion; the standby keeps running and streaming.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE
from gocd_ha_operator.local.stack import LocalStack, local_stack
from gocd_ha_operator.local.workload import streaming_from
from tests.faults.truth_support import NAME, body, patch_cluster
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture
async def stack() -> AsyncIterator[LocalStack]:
    async with local_stack([NAME], namespace="faults", observe_interval=0.5) as running:
        yield running


async def statefulset_replicas(stack: LocalStack, name: str) -> int:
    path = f"/apis/apps/v1/namespaces/{stack.namespace}/statefulsets/{name}"
    return int((await stack.request("GET", path))["spec"]["replicas"])


async def test_flipping_every_promotion_setting_keeps_the_standby_streaming(
    stack: LocalStack,
) -> None:
    await stack.apply(body())
    await stack.wait_for(lambda s: streaming_from("a", s), NAME, timeout=120, what="a primary")
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "switch-1")
    await stack.wait_for(lambda s: streaming_from("b", s), NAME, timeout=180, what="a rejoined")
    assert (await stack.status(NAME))["promotion"]["result"] == "Succeeded"

    await patch_cluster(
        stack,
        {
            "spec": {
                "failover": {
                    "mode": "Automatic",
                    "rejoin": "Manual",
                    "primaryUnavailableSeconds": 30,
                    "maxLagBytes": 0,
                    "cooldownSeconds": 0,
                },
                "gocd": {"startPromotedInMaintenanceMode": True},
            }
        },
    )
    await stack.wait_for(
        lambda s: s.get("observedGeneration") == 2, NAME, timeout=30, what="the edit reconciled"
    )
    until = time.monotonic() + 8
    while time.monotonic() < until:
        assert await statefulset_replicas(stack, f"{NAME}-pg-a") == 1, "the standby was stopped"
        assert stack.kubelet.running(f"{NAME}-pg-a"), "the standby's Postgres is not running"
        await asyncio.sleep(0.5)
    status = await stack.status(NAME)
    assert streaming_from("b", status), status.get("replication")
    assert status["primary"] == "b"
