"""Helpers of the ``test_truth_*`` fault tests: what a user (or an administrator with shell
access to the nodes) checks on the local stack — which instances accept writes, what status says.
"""

from __future__ import annotations

from typing import Any

import psycopg

from gocd_ha_operator.api.constants import SUPERUSER_NAME, Side
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.local.stack import LocalStack

NAME = "ci"
TIMELINE_SQL = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
CLUSTERS_PATH = "/apis/gocdha.io/v1alpha1/namespaces/{ns}/gocdhaclusters/{name}"


def body(**failover: Any) -> dict[str, Any]:
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


async def superuser(stack: LocalStack, side: Side) -> psycopg.AsyncConnection[Any]:
    """The superuser over the instance's own unix socket (what ``kubectl exec … psql`` gives)."""
    workload = ChildNames(NAME).postgres_statefulset(side)
    socket_dir = stack.kubelet.work_dir / "pods" / f"{workload}-0" / "volumes" / "run"
    password = await stack.secret_value(ChildNames(NAME).superuser_secret, "password")
    return await psycopg.AsyncConnection.connect(
        host=str(socket_dir),
        port=stack.kubelet.port(workload),
        user=SUPERUSER_NAME,
        password=password,
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )


async def sql(stack: LocalStack, side: Side, statement: str, *params: Any) -> Any:
    """First column of the first row of ``statement`` on ``side``, as superuser."""
    async with await superuser(stack, side) as conn:
        cursor = await conn.execute(statement, params or None)
        if cursor.description is None:
            return None
        row = await cursor.fetchone()
        return None if row is None else row[0]


async def writable_sides(stack: LocalStack) -> dict[Side, int]:
    """Every side whose Postgres answers and accepts writes, with its timeline."""
    found: dict[Side, int] = {}
    sides: tuple[Side, ...] = ("a", "b")
    for side in sides:
        if not stack.kubelet.running(ChildNames(NAME).postgres_statefulset(side)):
            continue
        try:
            if await sql(stack, side, "SELECT pg_is_in_recovery()") is False:
                found[side] = int(await sql(stack, side, TIMELINE_SQL))
        except psycopg.Error:
            continue
    return found


async def patch_cluster(stack: LocalStack, patch: dict[str, Any]) -> None:
    """``kubectl patch gocdha ci --type merge -p …`` (spec or metadata)."""
    path = CLUSTERS_PATH.format(ns=stack.namespace, name=NAME)
    await stack.request("PATCH", path, patch)


async def patch_status(stack: LocalStack, patch: dict[str, Any]) -> None:
    """A merge patch of the status subresource (what restoring an etcd snapshot amounts to)."""
    path = CLUSTERS_PATH.format(ns=stack.namespace, name=NAME) + "/status"
    await stack.request("PATCH", path, {"status": patch})
