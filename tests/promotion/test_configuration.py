"""Issue #13, "changes reach the running instances": a configuration change on a running pair
reaches both Postgres instances (docs/architecture.md §16), checked the way a user would — with
``SHOW`` on each side and ``pg_stat_replication`` on the primary."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from gocd_ha_operator.local.stack import LocalStack
from gocd_ha_operator.local.workload import streaming_from
from tests.support.faults import WriteProbe, writer_and_probe
from tests.support.promotion import NAME, create_replicating, pytestmark
from tests.support.rollout import (
    condition_reason,
    longest_gap,
    lost_rows,
    patch_spec,
    postgres_starts,
    roll_resumed_after_an_operator_restart,
    rolled,
    show,
    started_at,
    stuck_like_an_older_operator,
    sync_states,
    wait_until,
)

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


async def test_a_restart_only_parameter_rolls_under_a_writer_without_losing_a_row(
    stack: LocalStack,
) -> None:
    await create_replicating(stack)
    assert [await show(stack, side, "max_connections") for side in "ab"] == ["100", "100"]
    starts = {side: postgres_starts(stack, side) for side in "ab"}
    writer, probe = await writer_and_probe(stack)
    await asyncio.sleep(1.0)
    began = time.monotonic()
    await patch_spec(stack, {"postgres": {"parameters": {"max_connections": "150"}}})
    # Reloaded first: Postgres then says the setting waits for a restart.
    pending = await stack.wait_for(
        lambda s: (
            s.get("configuration", {}).get("pendingRestart") == ["max_connections"]
            or s.get("configuration", {}).get("rollout", {}).get("result") == "InProgress"
        ),
        NAME,
        timeout=30,
        what="max_connections pending a restart",
    )
    assert pending
    rollout = await rolled(stack, timeout=240)
    took = time.monotonic() - began
    await asyncio.sleep(1.0)  # the writer finds the new primary through the moved Service
    await writer.stop()
    await probe.stop()
    assert rollout["result"] == "Succeeded", rollout
    assert rollout["reason"] == "Parameters"
    assert [await show(stack, side, "max_connections") for side in "ab"] == ["150", "150"]
    status = await stack.status(NAME)
    assert status["primary"] == "b", "the standby was restarted first, then switched over to"
    assert condition_reason(status, "ConfigurationApplied") == "Applied"
    assert status["configuration"]["pendingRestart"] == []
    promotion = status["history"][0]
    assert (promotion["trigger"], promotion["type"], promotion["result"]) == (
        "Rollout",
        "Switchover",
        "Succeeded",
    )
    assert promotion["rpoBytes"] == 0 and promotion["token"] == rollout["token"]
    lost = await lost_rows(writer)
    outage = longest_gap(writer, since=began)
    print(
        f"rolling restart in {took:.1f}s: {len(writer.acknowledged)} rows acknowledged, "
        f"{len(lost)} lost; longest gap between acknowledged writes {outage:.2f}s; "
        f"{len(probe.samples)} samples, at most {probe.most_writable} "
        f"writable, {sum(1 for s in probe.samples if not any(s.values()))} with none"
    )
    assert lost == set(), f"{len(lost)} acknowledged rows lost"
    assert len(writer.acknowledged) > 10
    assert probe.samples and probe.both_writable() == [], "two sides accepted writes"
    assert sum(1 for s in probe.samples if any(s.values())) > len(probe.samples) // 2
    # One start per instance: the old primary's rejoin after the switchover was its restart.
    restarts = {side: postgres_starts(stack, side) - starts[side] for side in "ab"}
    assert restarts == {"a": 1, "b": 1}, restarts


async def test_lowering_max_connections_restarts_the_primary_in_place_then_the_standby(
    stack: LocalStack,
) -> None:
    """A standby restarted first below its primary's ``max_connections`` is refused by
    PostgreSQL ("recovery aborted because of insufficient parameter settings"): the roll restarts
    the primary in place first, then the standby, with no switchover and no lost row."""
    await create_replicating(stack)
    assert [await show(stack, side, "max_connections") for side in "ab"] == ["100", "100"]
    starts = {side: postgres_starts(stack, side) for side in "ab"}
    writer, probe = await writer_and_probe(stack)
    await asyncio.sleep(1.0)
    began = time.monotonic()
    await patch_spec(stack, {"postgres": {"parameters": {"max_connections": "80"}}})
    rollout = await rolled(stack, timeout=240)
    took = time.monotonic() - began
    await asyncio.sleep(1.0)
    await writer.stop()
    await probe.stop()
    assert rollout["result"] == "Succeeded", rollout
    assert [await show(stack, side, "max_connections") for side in "ab"] == ["80", "80"]
    status = await stack.status(NAME)
    assert status["primary"] == "a", "restarted in place: no switchover"
    assert [h for h in status["history"] if h.get("trigger") == "Rollout"] == []
    assert condition_reason(status, "ConfigurationApplied") == "Applied"
    assert status["configuration"]["pendingRestart"] == []
    # The standby streams from the restarted primary.
    assert await sync_states(stack, "a") == ["async"]
    assert streaming_from("a", status), status.get("replication")
    restarts = {side: postgres_starts(stack, side) - starts[side] for side in "ab"}
    lost = await lost_rows(writer)
    outage = longest_gap(writer, since=began)
    print(
        f"lowering max_connections 100 -> 80 in {took:.1f}s: {len(writer.acknowledged)} rows "
        f"acknowledged, {len(lost)} lost; longest gap between acknowledged writes "
        f"{outage:.2f}s; Postgres container starts {restarts}; {len(probe.samples)} samples, "
        f"at most {probe.most_writable} writable"
    )
    assert lost == set(), f"{len(lost)} acknowledged rows lost"
    assert restarts == {"a": 1, "b": 1}, restarts
    assert probe.samples and probe.both_writable() == [], "two sides accepted writes"
    assert len(writer.acknowledged) > 10


async def test_a_standby_stuck_below_its_primary_by_an_older_operator_gets_out(
    stack: LocalStack,
) -> None:
    """A cluster upgraded from an operator that restarted the standby first when
    ``max_connections`` was lowered: the standby is refused by PostgreSQL and restarts in a loop,
    the roll waits at ``RestartingStandby``. This operator restarts the primary in place, then the
    standby (which the new entrypoint starts at the primary's former value meanwhile) once more."""
    await create_replicating(stack)
    writer, probe = await writer_and_probe(stack)
    await stack.stop_operator()
    token = await stuck_like_an_older_operator(stack, {"max_connections": "80"})

    async def refused() -> bool:
        return "insufficient parameter settings" in stack.kubelet.pod_log(f"{NAME}-pg-b")

    await wait_until(refused, timeout=60, what="the standby refused below its primary's value")
    await asyncio.sleep(3.0)  # stuck: it restarts and is refused again
    assert await show(stack, "b", "max_connections") is None
    await stack.start_operator()
    rollout = await rolled(stack, timeout=240)
    await asyncio.sleep(1.0)
    await writer.stop()
    await probe.stop()
    assert rollout["result"] == "Succeeded", rollout
    assert rollout["token"] == token, "the same roll, resumed"
    assert [await show(stack, side, "max_connections") for side in "ab"] == ["80", "80"]
    assert await show(stack, "b", "gocdha.raised_settings") in ("", None)
    status = await stack.status(NAME)
    assert status["primary"] == "a"
    assert [h for h in status["history"] if h.get("trigger") == "Rollout"] == []
    assert condition_reason(status, "ConfigurationApplied") == "Applied"
    assert streaming_from("a", status), status.get("replication")
    lost = await lost_rows(writer)
    print(
        f"stuck standby: roll {token} ended {rollout['result']} after {rollout['finishedAt']}; "
        f"{len(writer.acknowledged)} rows acknowledged, {len(lost)} lost; "
        f"at most {probe.most_writable} writable"
    )
    assert lost == set(), f"{len(lost)} acknowledged rows lost"
    assert probe.samples and probe.both_writable() == [], "two sides accepted writes"


async def test_an_image_change_rolls_one_instance_at_a_time(stack: LocalStack) -> None:
    await create_replicating(stack)
    probe = WriteProbe(stack)
    await probe.prepare()
    probe.start()
    seen: list[tuple[str, str, bool, bool]] = []

    async def images() -> tuple[str, str]:
        found = []
        for side in "ab":
            sts = await stack.request(
                "GET", f"/apis/apps/v1/namespaces/{stack.namespace}/statefulsets/{NAME}-pg-{side}"
            )
            found.append(str(sts["spec"]["template"]["spec"]["containers"][0]["image"]))
        return found[0], found[1]

    async def sample() -> None:
        while True:
            a, b = await images()
            serving = [await show(stack, side, "transaction_read_only") for side in "ab"]
            seen.append((a, b, serving[0] == "off", serving[1] == "off"))
            await asyncio.sleep(0.3)

    starts = {side: postgres_starts(stack, side) for side in "ab"}
    sampler = asyncio.create_task(sample())
    try:
        await patch_spec(stack, {"postgres": {"image": "postgres:15.4"}})
        rollout = await rolled(stack, timeout=240)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await probe.stop()
    assert rollout["result"] == "Succeeded", rollout
    assert rollout["reason"] == "Image"
    new = "postgres:15.4"
    assert seen[0][:2] == ("postgres:15", "postgres:15")
    assert seen[-1][:2] == (new, new) or await images() == (new, new)
    first_b = next(i for i, s in enumerate(seen) if s[1] == new)
    first_a = next((i for i, s in enumerate(seen) if s[0] == new), len(seen))
    assert first_b < first_a, "the standby's StatefulSet changes first"
    # While only the standby had the new image, the primary kept serving (read-write).
    only_b = [s for s in seen[first_b:first_a] if s[0] != new]
    assert only_b and all(s[2] for s in only_b[:3]), only_b[:3]
    assert probe.both_writable() == [], "two sides accepted writes"
    status = await stack.status(NAME)
    assert status["configuration"]["a"]["image"] == new
    assert status["configuration"]["b"]["image"] == new
    # Each instance restarted once: the old primary rejoined on the new image (it was stopped by
    # the switchover), it did not rejoin on the old one and restart again.
    await asyncio.sleep(2.0)  # a second restart would follow the roll's end at once
    restarts = {side: postgres_starts(stack, side) - starts[side] for side in "ab"}
    print(
        f"image roll: {len(seen)} samples; b changed at sample {first_b}, a at {first_a}; "
        f"{len(probe.samples)} write samples, at most {probe.most_writable} writable; "
        f"Postgres container starts during the roll: {restarts}"
    )
    assert restarts == {"a": 1, "b": 1}, restarts


async def test_a_major_version_change_is_refused_and_nothing_rolls(stack: LocalStack) -> None:
    """Without the admission webhook (the local stack has none), the reconcile and the rollout
    refuse it: status says why and how to upgrade; no StatefulSet and no instance changes."""
    await create_replicating(stack)
    started = [await started_at(stack, side) for side in "ab"]
    await patch_spec(stack, {"postgres": {"image": "postgres:16.1"}})

    def refused(status: dict[str, Any]) -> dict[str, Any] | None:
        if (
            condition_reason(status, "Ready") == "InvalidSpec"
            and condition_reason(status, "ConfigurationApplied") == "ImageChangeRefused"
        ):
            return status
        return None

    status = await stack.wait_for(refused, NAME, timeout=30, what="the image change refused")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["message"].startswith(
        "spec.postgres.image changes the PostgreSQL major version from 15 to 16"
    ), ready["message"]
    assert "Upgrading PostgreSQL to a new major version" in ready["message"]
    await asyncio.sleep(3.0)  # several observations: still nothing moves
    for side in "ab":
        sts = await stack.request(
            "GET", f"/apis/apps/v1/namespaces/{stack.namespace}/statefulsets/{NAME}-pg-{side}"
        )
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:15"
    assert [await started_at(stack, side) for side in "ab"] == started
    status = await stack.status(NAME)
    assert status["configuration"]["rollout"].get("step") is None
    assert status["history"] == []


async def test_a_rolling_restart_resumes_after_the_operator_restarts(stack: LocalStack) -> None:
    """The roll is recorded in status: an operator stopped in the middle and started again
    finishes it, with exactly one switchover."""
    await create_replicating(stack)
    rollout, writer = await roll_resumed_after_an_operator_restart(
        stack, {"shared_buffers": "256MB"}, "RestartingStandby"
    )
    assert rollout["result"] == "Succeeded", rollout
    assert [await show(stack, side, "shared_buffers") for side in "ab"] == ["256MB", "256MB"]
    status = await stack.status(NAME)
    rollouts = [h for h in status["history"] if h.get("trigger") == "Rollout"]
    assert [h["token"] for h in rollouts] == [rollout["token"]], status["history"]
    lost = await lost_rows(writer)
    assert lost == set(), f"{len(lost)} acknowledged rows lost"


async def test_lowering_resumes_after_the_operator_restarts_at_restarting_primary(
    stack: LocalStack,
) -> None:
    """The in-place restart of the primary is recorded before it acts: an operator stopped right
    after it and started again finishes the roll, each instance started once, no switchover."""
    await create_replicating(stack)
    starts = {side: postgres_starts(stack, side) for side in "ab"}
    rollout, writer = await roll_resumed_after_an_operator_restart(
        stack, {"max_connections": "80"}, "RestartingPrimary"
    )
    assert rollout["result"] == "Succeeded", rollout
    assert [await show(stack, side, "max_connections") for side in "ab"] == ["80", "80"]
    status = await stack.status(NAME)
    assert status["primary"] == "a" and status["history"] == []
    restarts = {side: postgres_starts(stack, side) - starts[side] for side in "ab"}
    lost = await lost_rows(writer)
    print(f"resumed lowering: starts {restarts}, {len(lost)} of {len(writer.acknowledged)} lost")
    assert lost == set(), f"{len(lost)} acknowledged rows lost"
    assert restarts == {"a": 1, "b": 1}, restarts
