"""Helpers of the configuration-change tests (issue #13, docs/architecture.md §16): the table of
image changes the operator rolls or refuses, and what a user does and checks on the local stack
(``kubectl patch`` of the spec, ``SHOW`` on one instance, ``pg_stat_replication``)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from gocd_ha_operator.api.constants import (
    ANNOTATION_RESTART_REVISION,
    CM_ENTRYPOINT,
    CM_POSTGRESQL_CONF,
)
from gocd_ha_operator.local.stack import CLUSTERS_PATH, LocalStack
from gocd_ha_operator.local.workload import RowWriter
from gocd_ha_operator.postgres import config as pgconfig
from tests.support.faults import superuser
from tests.support.promotion import NAME, Writer

#: (old image, new image, ``None`` when rolled / a fragment of the refusal).
IMAGE_CHANGES: Final[list[tuple[str, str, str | None]]] = [
    ("postgres:15", "postgres:15", None),
    ("postgres:15", "postgres:15.6", None),
    ("postgres:15.4", "postgres:15.6-bookworm", None),
    ("postgres:15.4-alpine", "postgres:15.6-alpine3.19", None),
    ("registry.example:5000/pg/postgres:15.4@sha256:" + "a" * 64, "postgres:15.6", None),
    ("postgres:15.4", "postgres:16.2", "changes the PostgreSQL major version from 15 to 16"),
    ("postgres:16", "postgres:15", "changes the PostgreSQL major version from 16 to 15"),
    ("postgres:15", "postgres:17-alpine", "from 15 to 17"),
    ("postgres:15", "postgres:15-alpine", "between an Alpine and a Debian image"),
    ("postgres:15", "postgres@sha256:" + "b" * 64, "cannot tell the PostgreSQL major version"),
    ("registry.example/pg:latest", "registry.example/pg:15", "cannot tell the PostgreSQL major"),
]


async def patch_spec(stack: LocalStack, spec: dict[str, Any]) -> None:
    """``kubectl patch gocdha ci --type merge -p '{"spec": ...}'``."""
    path = CLUSTERS_PATH.format(ns=stack.namespace) + f"/{NAME}"
    await stack.request("PATCH", path, {"spec": spec})


async def query(stack: LocalStack, side: str, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows of ``sql`` on one instance as the superuser, ``None`` while it does not answer."""
    try:
        async with await superuser(stack, side) as conn:
            cursor = await conn.execute(sql)
            return list(await cursor.fetchall())
    except Exception:
        return None


async def show(stack: LocalStack, side: str, setting: str) -> str | None:
    """``SHOW <setting>`` on one instance, ``None`` while it does not answer."""
    rows = await query(stack, side, f"SHOW {setting}")
    return str(rows[0][0]) if rows else None


async def started_at(stack: LocalStack, side: str) -> str | None:
    rows = await query(stack, side, "SELECT pg_postmaster_start_time()::text")
    return str(rows[0][0]) if rows else None


async def sync_states(stack: LocalStack, side: str) -> list[str] | None:
    rows = await query(stack, side, "SELECT sync_state FROM pg_stat_replication")
    return None if rows is None else [str(row[0]) for row in rows]


async def wait_until(check: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> float:
    """Poll ``check()`` until it is truthy; the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if await check():
            return time.monotonic() - began
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def condition_reason(status: dict[str, Any], type_: str) -> str | None:
    found = next((c for c in status.get("conditions", []) if c["type"] == type_), None)
    return None if found is None else str(found.get("reason"))


def postgres_starts(stack: LocalStack, side: str) -> int:
    """How often the local kubelet started side ``side``'s Postgres container so far, across
    container restarts and pod replacements (its ``==== ... start`` log lines)."""
    marker = f" start {NAME}-pg-{side}-0 container postgres "
    return sum(
        1 for line in stack.kubelet.pod_log(f"{NAME}-pg-{side}").splitlines() if marker in line
    )


async def rolled(stack: LocalStack, timeout: float) -> dict[str, Any]:
    """Wait until a rolling restart has finished; its ``status.configuration.rollout``."""

    def done(status: dict[str, Any]) -> dict[str, Any] | None:
        rollout = status.get("configuration", {}).get("rollout", {})
        return rollout if rollout.get("result") in ("Succeeded", "Blocked") else None

    result: dict[str, Any] = await stack.wait_for(done, NAME, timeout=timeout, what="rollout")
    return result


def longest_gap(writer: RowWriter, since: float) -> float:
    """The longest time (s) between two acknowledged commits of ``writer`` from ``since`` on
    (``time.monotonic()``): how long a client saw no write succeed."""
    times = [commit.at for commit in writer.commits if commit.at >= since]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


async def lost_rows(writer: RowWriter) -> set[int]:
    """The rows ``writer`` had acknowledged that the primary (through its Service) lacks."""
    return writer.acknowledged - await writer.rows_on(f"{NAME}-pg-primary")


async def roll_resumed_after_an_operator_restart(
    stack: LocalStack, parameters: dict[str, str], step: str
) -> tuple[dict[str, Any], RowWriter]:
    """Under a writer, change ``parameters``; once the roll has recorded ``step`` in status, stop
    the operator, leave the instance it was restarting to itself for 3 s, start the operator again
    and wait for the roll to finish. The finished rollout and the (stopped) writer."""
    writer = Writer(stack)
    await writer.prepare()
    writer.start()
    await patch_spec(stack, {"postgres": {"parameters": parameters}})
    await stack.wait_for(
        lambda s: s.get("configuration", {}).get("rollout", {}).get("step") == step,
        NAME,
        timeout=60,
        what=f"the roll at {step}",
    )
    await stack.stop_operator()
    await asyncio.sleep(3.0)  # the instance restarts meanwhile; nobody decides anything
    await stack.start_operator()
    rollout = await rolled(stack, timeout=240)
    await asyncio.sleep(1.0)  # the writer finds the primary through the Service
    await writer.stop()
    return rollout, writer


#: The line of entrypoint.sh that applies the hot-standby floor; an entrypoint without it is the
#: one an operator before the floor shipped.
FLOOR_LINE: Final = '  if [ -e "$dir/standby.signal" ]; then hot_standby_floor "$dir"; fi\n'


async def stuck_like_an_older_operator(stack: LocalStack, parameters: dict[str, str]) -> str:
    """With the operator stopped, do what an operator before the fix did on a spec change that
    lowers ``max_connections``: the ConfigMap rendered with ``parameters`` and an entrypoint
    without the hot-standby floor, the standby pinned first (``RestartingStandby`` recorded in
    status, its StatefulSet's restart revision moved). PostgreSQL refuses the restarted standby
    ("recovery aborted because of insufficient parameter settings") and its container restarts
    again and again. Returns the roll's token."""
    ns = stack.namespace
    await patch_spec(stack, {"postgres": {"parameters": parameters}})
    cluster = await stack.request("GET", CLUSTERS_PATH.format(ns=ns) + f"/{NAME}")
    postgres = cluster["spec"]["postgres"]
    conf = pgconfig.render_postgresql_conf(
        parameters=postgres.get("parameters", {}), synchronous=bool(postgres.get("synchronous"))
    )
    cm_path = f"/api/v1/namespaces/{ns}/configmaps/{NAME}-postgres"
    configmap = await stack.request("GET", cm_path)
    entrypoint = configmap["data"][CM_ENTRYPOINT]
    assert FLOOR_LINE in entrypoint
    await stack.request(
        "PATCH",
        cm_path,
        {
            "data": {
                CM_POSTGRESQL_CONF: conf,
                CM_ENTRYPOINT: entrypoint.replace(FLOOR_LINE, ""),
            }
        },
    )
    token = "rollout-20260101t000000z"
    start = await started_at(stack, "b")
    assert start is not None
    image = postgres["image"]
    configuration = {
        "revision": pgconfig.loaded_revision(conf),
        "image": image,
        "a": {"image": image},
        "b": {"image": image, "restartRevision": token},
        "rollout": {
            "step": "RestartingStandby",
            "result": "InProgress",
            "revision": pgconfig.loaded_revision(conf),
            "image": image,
            "reason": "Parameters",
            "token": token,
            "restartedFrom": {"b": start},
            "message": "pending: side a: max_connections; side b: max_connections",
        },
    }
    await stack.request(
        "PATCH",
        CLUSTERS_PATH.format(ns=ns) + f"/{NAME}/status",
        {"status": {"configuration": configuration}},
    )
    await stack.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/statefulsets/{NAME}-pg-b",
        {"spec": {"template": {"metadata": {"annotations": {ANNOTATION_RESTART_REVISION: token}}}}},
    )
    return token
