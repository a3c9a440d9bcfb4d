"""Helpers of the local-stack tests in ``tests/local`` (Cold mode, TLS end to end): the cluster
they apply, the status check that Cold sync is read from the primary's sync agent over HTTPS, and
SQL run as the superuser on one instance, as an administrator would."""

from __future__ import annotations

from typing import Any

from gocd_ha_operator.local.stack import LocalStack
from gocd_ha_operator.local.workload import streaming_from
from tests.support.faults import superuser

NAME = "ci"
#: A Cold-standby cluster (the default mode) on the local kubelet's storage class.
BODY: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": NAME},
    "spec": {
        "gocd": {"image": "gocd/gocd-server:v26.1.0"},
        "postgres": {"image": "postgres:15"},
        "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
    },
}


async def apply_replicating(stack: LocalStack, body: dict[str, Any]) -> None:
    """``kubectl apply`` of ``body``, then wait until side b streams from side a."""
    await stack.apply(body)
    await stack.wait_for(
        lambda s: streaming_from("a", s), NAME, timeout=180, what="b streaming from a"
    )


def synced_on(stack: LocalStack, side: str):  # type: ignore[no-untyped-def]
    """A status check: side ``side`` is primary and ConfigSynced is True from its sync agent
    (whose status the operator reads at the local address of ``<name>-gocd-<side>:8155``)."""

    def check(status: dict[str, Any]) -> dict[str, Any] | None:
        agent = stack.kubelet.endpoints().get(f"{stack.namespace}/{NAME}-gocd-{side}:8155")
        condition: dict[str, Any] = next(
            (c for c in status.get("conditions", []) if c["type"] == "ConfigSynced"), {}
        )
        sync = status.get("configSync") or {}
        if (
            status.get("primary") == side
            and condition.get("status") == "True"
            and agent is not None
            and sync.get("source") == f"https://{agent}/status"  # HTTPS, §17
        ):
            return sync
        return None

    return check


async def rows_on_side(stack: LocalStack, side: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run as superuser over ``side``'s unix socket (no TLS there)."""
    async with await superuser(stack, side) as conn:
        cursor = await conn.execute(sql)
        return list(await cursor.fetchall())


async def postmaster_starts(stack: LocalStack) -> dict[str, list[tuple[Any, ...]]]:
    """Each side's ``pg_postmaster_start_time()``: unchanged means reloaded, not restarted."""
    return {
        side: await rows_on_side(stack, side, "SELECT pg_postmaster_start_time()") for side in "ab"
    }
