"""Helpers of the promotion tests, where the operator drives real local Postgres processes
through the local kubelet.

The harness plays the kubelet (``gocd_ha_operator.local``): it watches the emulator's StatefulSets
and Deployments and starts and stops real Postgres instances (the project's entrypoint, the env
from the pod template) to match their replicas. GoCD servers are stand-ins serving the health
endpoint only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gocd_ha_operator.local.stack import LocalStack
from gocd_ha_operator.local.workload import RowWriter, streaming_from
from tests.support.clusters import Replace, cluster_body
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NAME = "ci"


def promotion_cluster(**failover: Any) -> dict[str, Any]:
    """The ``ci`` cluster of the promotion tests: PostgreSQL 15, ``failover`` as given."""
    return cluster_body(
        metadata=Replace({"name": NAME}),
        spec=Replace(
            {
                "postgres": {"image": "postgres:15"},
                "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
                "failover": failover,
            }
        ),
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def replicating_from(primary: str):  # type: ignore[no-untyped-def]
    """A status check: ``primary`` serves and the other side streams from it."""
    return lambda status: streaming_from(primary, status)


def finished(token: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def check(status: dict[str, Any]) -> dict[str, Any] | None:
        promotion = status.get("promotion", {})
        if promotion.get("token") == token and promotion.get("result") != "InProgress":
            return dict(promotion)
        return None

    return check


async def create_replicating(stack: LocalStack, **failover: Any) -> None:
    await stack.apply(promotion_cluster(**failover))
    await stack.wait_for(replicating_from("a"), NAME, timeout=120, what="a primary, b streaming")


def Writer(stack: LocalStack) -> RowWriter:
    return RowWriter(stack, NAME)
