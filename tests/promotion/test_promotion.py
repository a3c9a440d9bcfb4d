"""Switchover, failover, exactly-once tokens and fencing, on real local Postgres processes."""

from __future__ import annotations

import asyncio
import time

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FORCE
from gocd_ha_operator.local.stack import LocalStack
from tests.support.faults import superuser
from tests.support.promotion import (
    NAME,
    Writer,
    condition,
    create_replicating,
    finished,
    pytestmark,
    replicating_from,
)

__all__ = ["pytestmark"]


async def test_switchover_under_a_writer_loses_no_committed_row(stack: LocalStack) -> None:
    await create_replicating(stack)
    writer = Writer(stack)
    await writer.prepare()
    writer.start()
    await asyncio.sleep(1.5)
    assert writer.acknowledged, "the writer should be committing"
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "switch-1")
    promotion = await stack.wait_for(finished("switch-1"), NAME, timeout=90, what="promotion")
    assert promotion["result"] == "Succeeded", promotion
    assert promotion["type"] == "Switchover"
    assert promotion["rpoBytes"] == 0
    await asyncio.sleep(1.0)  # the writer finds the new primary through the moved Service
    await writer.stop()
    rows = await writer.rows_on(f"{NAME}-pg-primary")
    lost = writer.acknowledged - rows
    assert lost == set(), f"{len(lost)} committed rows lost"
    assert len(writer.acknowledged) > 10
    # The old primary rejoins and streams from the new one.
    await stack.wait_for(replicating_from("b"), NAME, timeout=120, what="a rejoined as standby")
    status = await stack.status(NAME)
    assert status["sides"]["b"]["postgres"]["timeline"] == 2
    assert status["history"][0]["token"] == "switch-1"


async def test_failover_fences_the_killed_primary_and_rejoins_it(stack: LocalStack) -> None:
    await create_replicating(stack)
    writer = Writer(stack)
    await writer.prepare()
    writer.start()
    await asyncio.sleep(1.0)
    await stack.kubelet.kill(f"{NAME}-pg-a")  # the primary's node dies
    await writer.stop()
    await stack.wait_for(
        lambda s: condition(s, "PrimaryAvailable").get("status") == "False",
        NAME,
        timeout=30,
        what="PrimaryAvailable=False",
    )
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "failover-1")
    promotion = await stack.wait_for(finished("failover-1"), NAME, timeout=90, what="failover")
    assert promotion["result"] == "Succeeded", promotion
    assert promotion["type"] == "Failover"
    # The old primary's node comes back: it must not return as a primary.
    await stack.kubelet.resume(f"{NAME}-pg-a")
    await stack.wait_for(replicating_from("b"), NAME, timeout=120, what="a rejoined as standby")
    rows = await writer.rows_on(f"{NAME}-pg-primary")
    # Asynchronous replication: a failover may lose what the standby had not received. Here the
    # writer's rows up to the last observation before the kill were replicated.
    assert rows, "the new primary has the replicated rows"
    log = stack.kubelet.pod_log(f"{NAME}-pg-a")
    assert "pg_rewind" in log or "base backup" in log


async def test_same_token_twice_is_one_promotion_and_a_new_token_promotes_back(
    stack: LocalStack,
) -> None:
    await create_replicating(stack)
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "t1")
    assert (await stack.wait_for(finished("t1"), NAME, timeout=90, what="t1"))["result"] == (
        "Succeeded"
    )
    await stack.wait_for(replicating_from("b"), NAME, timeout=120, what="b primary")
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "t1")  # kubectl annotate, same value again
    await asyncio.sleep(3)
    status = await stack.status(NAME)
    assert status["primary"] == "b"
    assert [h["token"] for h in status["history"]] == ["t1"]
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "t2")
    assert (await stack.wait_for(finished("t2"), NAME, timeout=90, what="t2"))["result"] == (
        "Succeeded"
    )
    await stack.wait_for(replicating_from("a"), NAME, timeout=120, what="a primary again")
    status = await stack.status(NAME)
    assert [h["token"] for h in status["history"]] == ["t2", "t1"]
    assert status["sides"]["a"]["postgres"]["timeline"] == 3


async def test_a_request_that_cannot_be_honoured_is_refused_and_changes_nothing(
    stack: LocalStack,
) -> None:
    await create_replicating(stack)
    await stack.kubelet.kill(f"{NAME}-pg-b")  # the standby is gone
    await stack.wait_for(
        lambda s: condition(s, "StandbyReplicating").get("status") == "False",
        NAME,
        timeout=30,
        what="StandbyReplicating=False",
    )
    await stack.annotate(NAME, ANNOTATION_PROMOTE_FORCE, "impossible")
    refused = await stack.wait_for(
        lambda s: next((h for h in s.get("history", []) if h["token"] == "impossible"), None),
        NAME,
        timeout=30,
        what="the refusal",
    )
    assert refused["result"] == "Refused"
    assert "cannot be reached" in refused["message"]
    status = await stack.status(NAME)
    assert status["primary"] == "a"
    assert condition(status, "Promoting")["reason"] == "PromotionRefused"
    assert condition(status, "PrimaryAvailable")["status"] == "True"
    assert stack.kubelet.running(f"{NAME}-pg-a")
    assert stack.kubelet.running(f"{NAME}-gocd-a")


async def test_operator_killed_at_every_step_completes_each_promotion_once(
    stack: LocalStack,
) -> None:
    """For each step of the protocol, a promotion is interrupted right after recording that step
    (or right after acting on it) by stopping the operator; a new operator process completes it."""
    await create_replicating(stack)
    writer = Writer(stack)
    await writer.prepare()
    points = [
        "Fencing",
        "CatchingUp:done",
        "StoppingOldPrimary",
        "Promoting:done",
        "SwitchingRoles",
        "Rejoining",
        "Done",
    ]
    primary = "a"
    loop = asyncio.get_running_loop()
    for number, point in enumerate(points, start=1):
        reached = asyncio.Event()

        async def hook(step: str, point: str = point, reached: asyncio.Event = reached) -> None:
            if step == point:
                loop.call_soon_threadsafe(reached.set)
                await asyncio.Event().wait()  # the process "dies" here: it never continues

        await stack.stop_operator()
        await stack.start_operator(promotion_hook=hook)
        writer.start()
        await asyncio.sleep(0.5)
        token = f"kill-{number}"
        await stack.annotate(NAME, ANNOTATION_PROMOTE, token)
        await asyncio.wait_for(reached.wait(), timeout=90)
        await stack.stop_operator()  # killed in the middle of the promotion
        status = await stack.status(NAME)
        assert status["promotion"]["result"] == "InProgress", (point, status["promotion"])
        await stack.start_operator()
        promotion = await stack.wait_for(finished(token), NAME, timeout=120, what=token)
        assert promotion["result"] == "Succeeded", (point, promotion)
        primary = "b" if primary == "a" else "a"
        await stack.wait_for(replicating_from(primary), NAME, timeout=120, what=f"{token} done")
        await writer.stop()
        rows = await writer.rows_on(f"{NAME}-pg-primary")
        assert writer.acknowledged <= rows, f"rows lost when interrupted at {point}"
    status = await stack.status(NAME)
    tokens = [h["token"] for h in status["history"]]
    assert tokens == [f"kill-{n}" for n in range(len(points), 0, -1)], "each exactly once"
    assert all(h["result"] == "Succeeded" for h in status["history"])


async def test_automatic_failover_waits_for_the_configured_time(stack: LocalStack) -> None:
    await create_replicating(stack, mode="Automatic", primaryUnavailableSeconds=10)
    await stack.kubelet.kill(f"{NAME}-pg-a")
    killed = time.monotonic()
    started = await stack.wait_for(
        lambda s: s.get("promotion", {}).get("trigger") == "Automatic" and s["promotion"],
        NAME,
        timeout=60,
        what="an automatic failover",
    )
    waited = time.monotonic() - killed
    assert waited >= 10, f"failed over after {waited:.1f}s, before primaryUnavailableSeconds"
    assert started["type"] == "Failover"
    promotion = await stack.wait_for(
        lambda s: s["promotion"].get("result") not in (None, "InProgress") and s["promotion"],
        NAME,
        timeout=90,
        what="the failover to finish",
    )
    assert promotion["result"] == "Succeeded"
    assert (await stack.status(NAME))["primary"] == "b"


async def test_no_automatic_failover_when_the_lag_exceeds_the_bound(stack: LocalStack) -> None:
    await create_replicating(stack, mode="Automatic", primaryUnavailableSeconds=10)
    writer = Writer(stack)
    await writer.prepare()
    # The standby keeps receiving WAL but stops replaying it: its lag grows past maxLagBytes.
    async with await superuser(stack, "b") as conn:
        await conn.execute("SELECT pg_wal_replay_pause()")
    await stack.request(
        "PATCH",
        f"/apis/gocdha.io/v1alpha1/namespaces/build/gocdhaclusters/{NAME}",
        {"spec": {"failover": {"maxLagBytes": 1024}}},
    )
    writer.start()
    status = await stack.wait_for(
        lambda s: condition(s, "FailoverPossible").get("reason") == "LagTooHigh" and s,
        NAME,
        timeout=60,
        what="FailoverPossible=False because of the lag",
    )
    await writer.stop()
    await stack.kubelet.kill(f"{NAME}-pg-a")
    await stack.wait_for(
        lambda s: condition(s, "PrimaryAvailable").get("status") == "False",
        NAME,
        timeout=30,
        what="PrimaryAvailable=False",
    )
    await asyncio.sleep(15)  # well past primaryUnavailableSeconds
    status = await stack.status(NAME)
    assert status["primary"] == "a"
    assert status.get("promotion", {}).get("trigger") != "Automatic"
    possible = condition(status, "FailoverPossible")
    assert (possible["status"], possible["reason"]) == ("False", "LagTooHigh")
    assert "maxLagBytes 1024" in possible["message"]


async def test_a_healthy_cluster_is_never_failed_over(stack: LocalStack) -> None:
    await create_replicating(stack, mode="Automatic", primaryUnavailableSeconds=10)
    await asyncio.sleep(25)
    status = await stack.status(NAME)
    assert status["primary"] == "a"
    assert not status.get("history")
    assert condition(status, "FailoverPossible")["status"] == "True"
    assert condition(status, "Ready")["status"] == "True"
