"""Helpers of the configuration-change tests (issue #13, docs/architecture.md §16): the table of
image changes the operator rolls or refuses, and what a user does and checks on the local stack
(``kubectl patch`` of the spec, ``SHOW`` on one instance, ``pg_stat_replication``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from gocd_ha_operator.local.stack import CLUSTERS_PATH, LocalStack
from tests.support.faults import superuser
from tests.support.promotion import NAME

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
