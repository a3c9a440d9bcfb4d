"""Issue #11: a promotion stays safe under faults. Each test injects one fault on real Postgres
through the local stack and checks what a user would: how many instances accept writes (sampled
throughout), which acknowledged rows survive, and status."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FORCE
from gocd_ha_operator.local.stack import LocalStack
from tests.support.faults import (
    FaultyEndpoints,
    Gate,
    WriteProbe,
    history_tokens,
    pytestmark,
    start_operator,
    superuser,
    writer_and_probe,
)
from tests.support.promotion import (
    NAME,
    Writer,
    condition,
    create_replicating,
    finished,
    replicating_from,
)

__all__ = ["pytestmark"]

CLUSTER_PATH = f"/apis/gocdha.io/v1alpha1/namespaces/build/gocdhaclusters/{NAME}"


async def test_slot_creation_failing_after_pg_promote_never_reopens_the_old_primary(
    stack: LocalStack,
) -> None:
    """Defect 1: the slot for the old primary cannot be created right after ``pg_promote``
    (every replication slot of the standby is in use). The promotion must roll forward — retry
    until it can — and never bring the old primary back as a second writable primary."""
    await create_replicating(stack)
    probe = WriteProbe(stack)
    await probe.prepare()
    writer = Writer(stack)
    await writer.prepare()
    async with await superuser(stack, "b") as admin:
        for number in range(10):  # max_replication_slots = 10
            await admin.execute("SELECT pg_create_physical_replication_slot(%s)", (f"x_{number}",))
    probe.start()
    writer.start()
    await asyncio.sleep(1.0)
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "slots-full")
    # The promotion reaches pg_promote and then fails to create the slot, for a while.
    await stack.wait_for(
        lambda s: (
            s.get("promotion", {}).get("step") in ("Promoting", "SwitchingRoles")
            or s.get("promotion", {}).get("result") == "Failed"
        ),
        NAME,
        timeout=90,
        what="the promotion to reach Promoting",
    )
    await asyncio.sleep(8.0)  # time for a wrongly unfenced old primary to come back
    async with await superuser(stack, "b") as admin:
        for number in range(10):
            await admin.execute("SELECT pg_drop_replication_slot(%s)", (f"x_{number}",))
    promotion = await stack.wait_for(finished("slots-full"), NAME, timeout=90, what="the end")
    await asyncio.sleep(5.0)
    assert probe.both_writable() == [], f"two writable primaries in samples {probe.both_writable()}"
    await stack.wait_for(replicating_from("b"), NAME, timeout=120, what="a rejoined as standby")
    await writer.stop()
    await probe.stop()
    assert probe.both_writable() == [], f"two writable primaries in samples {probe.both_writable()}"
    assert promotion["result"] == "Succeeded", promotion
    assert promotion["type"] == "Switchover"
    rows = await writer.rows_on(f"{NAME}-pg-primary")
    assert writer.acknowledged <= rows, f"{len(writer.acknowledged - rows)} acknowledged rows lost"
    assert history_tokens(await stack.status(NAME)) == ["slots-full"]


def refuse_once_at_catch_up(
    faults: FaultyEndpoints, *, seconds: float
) -> Callable[[str], Awaitable[None]]:
    """A step hook: when CatchingUp starts (the first time only), the old primary refuses
    connections for ``seconds``; the step's retries then connect through that window."""
    armed = [True]

    async def hook(step: str) -> None:
        if step == "CatchingUp" and armed:
            armed.clear()
            faults.refuse(f"{NAME}-pg-a", seconds=seconds)

    return hook


async def test_refused_connection_during_catch_up_keeps_the_switchover(stack: LocalStack) -> None:
    """Defect 2: one refused connection to the old primary while its sessions are ended must not
    turn the switchover into a failover (no catch-up, acknowledged rows lost)."""
    faults = FaultyEndpoints(stack.kubelet.endpoint_map, stack.namespace)

    hook = refuse_once_at_catch_up(faults, seconds=3.0)
    await start_operator(stack, endpoints=faults, hook=hook)
    await create_replicating(stack)
    writer, probe = await writer_and_probe(stack)
    await asyncio.sleep(1.5)
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "flaky-1")
    promotion = await stack.wait_for(finished("flaky-1"), NAME, timeout=120, what="promotion")
    await asyncio.sleep(1.0)
    await writer.stop()
    await probe.stop()
    assert faults.refusals > 0, "the fault was injected"
    assert promotion["type"] == "Switchover", promotion
    assert promotion["result"] == "Succeeded", promotion
    assert promotion["rpoBytes"] == 0
    rows = await writer.rows_on(f"{NAME}-pg-primary")
    assert writer.acknowledged <= rows, f"{len(writer.acknowledged - rows)} acknowledged rows lost"
    assert probe.both_writable() == []


async def test_old_primary_unreachable_through_catch_up_fails_the_switchover_cleanly(
    stack: LocalStack,
) -> None:
    """The old primary stays unreachable longer than the retry bound: the switchover fails, the
    old primary serves again with every acknowledged row, and nothing was promoted."""
    faults = FaultyEndpoints(stack.kubelet.endpoint_map, stack.namespace)

    hook = refuse_once_at_catch_up(faults, seconds=45.0)
    await start_operator(stack, endpoints=faults, hook=hook)
    await create_replicating(stack)
    writer, probe = await writer_and_probe(stack)
    await asyncio.sleep(1.0)
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "unreachable-1")
    promotion = await stack.wait_for(finished("unreachable-1"), NAME, timeout=120, what="the end")
    assert promotion["type"] == "Switchover", promotion
    assert promotion["result"] == "Failed", promotion
    assert promotion["reason"] == "SwitchoverFailed"
    faults.heal()
    await stack.wait_for(replicating_from("a"), NAME, timeout=60, what="a serves again")
    status = await stack.status(NAME)
    await asyncio.sleep(1.0)
    await writer.stop()
    await probe.stop()
    assert status["primary"] == "a"
    assert status["sides"]["b"]["postgres"]["inRecovery"] is True
    rows = await writer.rows_on(f"{NAME}-pg-primary")
    assert writer.acknowledged <= rows, f"{len(writer.acknowledged - rows)} acknowledged rows lost"
    assert probe.both_writable() == []
    assert history_tokens(status) == ["unreachable-1"]
    assert condition(status, "Promoting")["reason"] == "PromotionFailed"


async def test_switchover_with_a_superuser_session_open_loses_none_of_its_rows(
    stack: LocalStack,
) -> None:
    """Defect 6a: a superuser session on the primary made every switchover fail. It must succeed,
    and the rows that session committed (acknowledged) must survive it."""
    await create_replicating(stack)
    async with await superuser(stack, "a", dbname="gocd") as admin:
        await admin.execute("CREATE TABLE admin_rows (id int PRIMARY KEY)")
    acknowledged: list[int] = []
    stop = asyncio.Event()

    async def admin_writes() -> None:
        with contextlib.suppress(Exception):
            async with await superuser(stack, "a", dbname="gocd") as session:
                number = 0
                while not stop.is_set():
                    number += 1
                    await session.execute("INSERT INTO admin_rows VALUES (%s)", (number,))
                    acknowledged.append(number)
                    await asyncio.sleep(0.01)

    task = asyncio.create_task(admin_writes())
    await asyncio.sleep(1.0)
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "with-admin")
    promotion = await stack.wait_for(finished("with-admin"), NAME, timeout=120, what="promotion")
    stop.set()
    await task
    assert promotion["result"] == "Succeeded", promotion
    assert promotion["rpoBytes"] == 0
    await stack.wait_for(replicating_from("b"), NAME, timeout=120, what="a rejoined")
    async with await superuser(stack, "b", dbname="gocd") as admin:
        cursor = await admin.execute("SELECT id FROM admin_rows")
        rows = {row[0] for row in await cursor.fetchall()}
    assert acknowledged, "the superuser session committed rows"
    assert set(acknowledged) <= rows, f"{len(set(acknowledged) - rows)} acknowledged rows lost"


async def test_a_request_made_while_a_promotion_runs_is_refused_at_once(
    stack: LocalStack,
) -> None:
    """Defect 6b: a second request used to be queued and acted on after the first promotion —
    a second promotion nobody asked for at that moment. It is refused while the first runs."""
    gate = Gate("StoppingOldPrimary")
    await start_operator(stack, hook=gate)
    await create_replicating(stack)
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "first")
    await gate.wait_reached()
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "second")
    try:
        refused = await stack.wait_for(
            lambda s: next((h for h in s.get("history", []) if h["token"] == "second"), None),
            NAME,
            timeout=15,
            what="the second request refused while the first runs",
        )
        running = (await stack.status(NAME))["promotion"]
    finally:
        gate.release()
    assert running["token"] == "first" and running["result"] == "InProgress"
    assert refused["result"] == "Refused"
    assert refused["reason"] == "PromotionInProgress"
    done = await stack.wait_for(finished("first"), NAME, timeout=120, what="the first promotion")
    assert done["result"] == "Succeeded"
    await stack.wait_for(replicating_from("b"), NAME, timeout=120, what="b primary")
    await asyncio.sleep(3.0)
    status = await stack.status(NAME)
    assert status["primary"] == "b"
    assert history_tokens(status) == ["first", "second"]


async def test_promote_and_promote_force_set_together_are_one_promotion(
    stack: LocalStack,
) -> None:
    """Defect 6c: both annotations in one change made two requests (a second promotion or a
    refusal after the first). They are one (forced) request."""
    await create_replicating(stack)
    await stack.request(
        "PATCH",
        CLUSTER_PATH,
        {"metadata": {"annotations": {ANNOTATION_PROMOTE: "p1", ANNOTATION_PROMOTE_FORCE: "f1"}}},
    )
    promotion = await stack.wait_for(
        lambda s: (
            s.get("promotion", {}).get("result") not in (None, "InProgress") and s["promotion"]
        ),
        NAME,
        timeout=120,
        what="the promotion",
    )
    assert promotion["result"] == "Succeeded", promotion
    await stack.wait_for(replicating_from("b"), NAME, timeout=120, what="b primary")
    await asyncio.sleep(3.0)
    status = await stack.status(NAME)
    assert len(status["history"]) == 1, status["history"]
    assert status["history"][0]["force"] is True
    assert status["primary"] == "b"


async def test_a_promotion_goes_on_when_the_spec_becomes_invalid_and_the_operator_restarts(
    stack: LocalStack,
) -> None:
    """Defect 6d: the supervisor stopped observing — and with it a running promotion, the old
    side fenced — when the spec became invalid, or when no reconcile had run in its process
    (credentials were taken from the reconcile's memory). The operator is killed mid-promotion
    after the spec became invalid; the new process completes the promotion."""
    gate = Gate("StoppingOldPrimary")
    await start_operator(stack, hook=gate)
    await create_replicating(stack)
    await stack.annotate(NAME, ANNOTATION_PROMOTE, "mid-edit")
    await gate.wait_reached()
    await stack.request("PATCH", CLUSTER_PATH, {"spec": {"failover": {"maxLagBytes": -5}}})
    await stack.wait_for(
        lambda s: condition(s, "Ready").get("reason") == "InvalidSpec",
        NAME,
        timeout=30,
        what="Ready=False InvalidSpec",
    )
    await stack.stop_operator()  # killed in the middle of the promotion
    gate.release()
    assert (await stack.status(NAME))["promotion"]["result"] == "InProgress"
    await stack.start_operator()
    promotion = await stack.wait_for(finished("mid-edit"), NAME, timeout=120, what="promotion")
    assert promotion["result"] == "Succeeded", promotion
    status = await stack.wait_for(
        lambda s: s["sides"]["a"]["postgres"].get("inRecovery") is True and s,
        NAME,
        timeout=120,
        what="a rejoined as standby",
    )
    assert status["primary"] == "b"
    assert condition(status, "Ready")["reason"] == "InvalidSpec"
    assert condition(status, "StandbyReplicating")["status"] == "True", "still observed"
