"""Issue #13, "changes reach the running instances": a configuration change on a running pair
reaches both Postgres instances (docs/architecture.md §16), checked the way a user would — with
``SHOW`` on each side and ``pg_stat_replication`` on the primary."""

from __future__ import annotations

from gocd_ha_operator.local.stack import LocalStack
from tests.support.promotion import create_replicating, pytestmark
from tests.support.rollout import patch_spec, show, started_at, sync_states, wait_until

__all__ = ["pytestmark"]


async def test_a_reloadable_parameter_and_synchronous_reach_both_instances(
    stack: LocalStack,
) -> None:
    await create_replicating(stack)
    assert await show(stack, "a", "work_mem") == "4MB"
    assert await sync_states(stack, "a") == ["async"]
    started = [await started_at(stack, side) for side in "ab"]
    await patch_spec(stack, {"postgres": {"parameters": {"work_mem": "8MB"}, "synchronous": True}})

    async def both_reloaded() -> bool:
        return [await show(stack, side, "work_mem") for side in "ab"] == ["8MB", "8MB"]

    async def synchronous() -> bool:
        return await sync_states(stack, "a") == ["sync"]

    took = await wait_until(both_reloaded, timeout=30, what="work_mem = 8MB on both sides")
    took_sync = await wait_until(synchronous, timeout=30, what="sync_state = sync")
    print(f"work_mem on both sides after {took:.1f}s; sync_state=sync after {took_sync:.1f}s")
    # A reload, not a restart: both postmasters are the ones that ran before the change.
    assert [await started_at(stack, side) for side in "ab"] == started
