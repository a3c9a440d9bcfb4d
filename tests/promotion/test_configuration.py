"""Issue #13, "changes reach the running instances": a configuration change on a running pair
reaches both Postgres instances (docs/architecture.md §16), checked the way a user would — with
``SHOW`` on each side and ``pg_stat_replication`` on the primary."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gocd_ha_operator.local.stack import CLUSTERS_PATH, LocalStack
from tests.support.faults import superuser
from tests.support.promotion import NAME, create_replicating, pytestmark

__all__ = ["pytestmark"]


async def patch_spec(stack: LocalStack, spec: dict[str, Any]) -> None:
    """``kubectl patch gocdha ci --type merge -p '{"spec": ...}'``."""
    path = CLUSTERS_PATH.format(ns=stack.namespace) + f"/{NAME}"
    await stack.request("PATCH", path, {"spec": spec})


async def show(stack: LocalStack, side: str, setting: str) -> str | None:
    """``SHOW <setting>`` on one instance, ``None`` while it does not answer."""
    try:
        async with await superuser(stack, side) as conn:
            cursor = await conn.execute(f"SHOW {setting}")
            row = await cursor.fetchone()
    except Exception:
        return None
    return str(row[0]) if row else None


async def show_start(stack: LocalStack, side: str) -> str:
    async with await superuser(stack, side) as conn:
        cursor = await conn.execute("SELECT pg_postmaster_start_time()::text")
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def sync_states(stack: LocalStack, side: str) -> list[str]:
    async with await superuser(stack, side) as conn:
        cursor = await conn.execute("SELECT sync_state FROM pg_stat_replication")
        return [str(row[0]) for row in await cursor.fetchall()]


async def wait_until(check: Any, *, timeout: float, what: str) -> float:
    """Poll the coroutine function ``check`` until it is truthy; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


async def test_a_reloadable_parameter_and_synchronous_reach_both_instances(
    stack: LocalStack,
) -> None:
    await create_replicating(stack)
    assert await show(stack, "a", "work_mem") == "4MB"
    assert await sync_states(stack, "a") == ["async"]
    started = [await show_start(stack, side) for side in "ab"]
    await patch_spec(stack, {"postgres": {"parameters": {"work_mem": "8MB"}, "synchronous": True}})

    async def both_reloaded() -> bool:
        return [await show(stack, side, "work_mem") for side in "ab"] == ["8MB", "8MB"]

    async def synchronous() -> bool:
        return await sync_states(stack, "a") == ["sync"]

    took = await wait_until(both_reloaded, timeout=30, what="work_mem = 8MB on both sides")
    took_sync = await wait_until(synchronous, timeout=30, what="sync_state = sync")
    print(f"work_mem on both sides after {took:.1f}s; sync_state=sync after {took_sync:.1f}s")
    # A reload, not a restart: both postmasters are the ones that ran before the change.
    assert [await show_start(stack, side) for side in "ab"] == started
