"""Issue #12: two ``gocd-ha-operator run`` processes (leader election on, one API server) manage the
same cluster on real Postgres through the local stack.

What a user would check: every ``Promotion<Step>`` Event once, one history entry, one writable
primary, no acknowledged row lost; and which process talked to the API (each process reaches it
through its own recording proxy): the one that does not hold the Lease only reads the Lease.

A promotion is held at ``CatchingUp`` by a fault on real Postgres: replay paused on the standby
(``pg_wal_replay_pause()``), so the leader waits there for the standby to replay the old primary's
last LSN until the test resumes replay.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE
from gocd_ha_operator.controller.leader import EXIT_LOST_LEADERSHIP
from gocd_ha_operator.local.kubelet import LocalKubelet
from gocd_ha_operator.local.stack import LocalStack
from gocd_ha_operator.local.workload import RowWriter
from tests.leases.conftest import ApiThread
from tests.support.faults import WriteProbe, superuser
from tests.support.operators import (
    LEASE_SECONDS,
    RETRY_SECONDS,
    OperatorProcess,
    Operators,
    acted_before_leading,
    events,
    eventually,
    lease_holder,
    operator_processes,
    promotion_event_counts,
)
from tests.support.promotion import (
    NAME,
    Writer,
    create_replicating,
    finished,
    pytestmark,
    replicating_from,
)

__all__ = ["pytestmark"]

#: The Events of one switchover, each exactly once (rejoin mode Automatic: ``Rejoining``).
SWITCHOVER_EVENTS = (
    "PromotionStarted",
    "PromotionCatchingUp",
    "PromotionStoppingOldPrimary",
    "PromotionPromoting",
    "PromotionSwitchingRoles",
    "PromotionRejoining",
    "PromotionDone",
    "PromotionSucceeded",
    "Promoting",  # the Promoting condition: -> True
    "Promoted",  # and -> False when it succeeded
)
#: How soon after the holder dies the other must hold the Lease: the duration, plus one retry
#: period to notice the record and one to try after it expired, plus scheduling slack.
TAKEOVER_BOUND = LEASE_SECONDS + 2 * RETRY_SECONDS + 1.0


@pytest.fixture
async def stack(api: ApiThread) -> AsyncIterator[LocalStack]:
    """The local kubelet against the API emulator served from its own thread (the test's loop
    runs the kubelet, the writer and the probe; Lease renewals must not wait behind them). No
    in-process operator: the operators here are processes."""
    async with LocalKubelet(api.url, "build", clusters=[NAME]) as kubelet:
        running = LocalStack(api.url, "build", kubelet, observe_interval=1.0)
        try:
            yield running
        finally:
            await running.close()


@pytest.fixture
async def operators(stack: LocalStack, tmp_path: Path) -> AsyncIterator[Operators]:
    async with operator_processes(stack, tmp_path) as started:
        yield started


async def two_started(operators: Operators) -> None:
    """op-1 and op-2 start together (both may try to create the Lease: one gets a conflict)."""
    await asyncio.gather(operators.start("op-1"), operators.start("op-2"))


async def took_over(stack: LocalStack, name: str, *, since: float, after: str) -> None:
    """``name`` holds the operator Lease within :data:`TAKEOVER_BOUND` of ``since``."""
    await eventually(lambda: _holder_is(stack, name), timeout=30, what=f"{name} leading")
    took = time.monotonic() - since
    print(f"{name} took the Lease {took:.2f}s after {after} (lease {LEASE_SECONDS:g}s)")
    assert took <= TAKEOVER_BOUND


def _started(process: OperatorProcess) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return "operator Lease" in process.text()

    return check


async def _holder_is(stack: LocalStack, name: str) -> bool:
    return await lease_holder(stack) == name


async def settled_event_counts(stack: LocalStack) -> dict[str, int]:
    """Promotion Event counts once no new Event appeared for a second (kopf posts Events from a
    queue, after the status write that they announce)."""
    counts = promotion_event_counts(await events(stack, NAME))
    while True:
        await asyncio.sleep(1.0)
        again = promotion_event_counts(await events(stack, NAME))
        if again == counts:
            return dict(counts)
        counts = again


def assert_each_once(counts: dict[str, int]) -> None:
    expected = dict.fromkeys(SWITCHOVER_EVENTS, 1)
    assert counts == expected, f"Promotion Events: {counts}"


class Phases:
    """Elapsed time per phase, printed (where the file's minutes go)."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()

    def mark(self, what: str) -> None:
        now = time.monotonic()
        print(f"[{now - self.started:6.1f}s] {what} (+{now - self.last:.1f}s)")
        self.last = now


async def hold_at_catching_up(stack: LocalStack, token: str, standby: str) -> None:
    """Pause replay on the standby, ask for a switchover and wait until the leader recorded the
    old primary's LSN at ``CatchingUp``: it now waits for the standby to replay it."""
    async with await superuser(stack, standby) as conn:
        await conn.execute("SELECT pg_wal_replay_pause()")
    await stack.annotate(NAME, ANNOTATION_PROMOTE, token)

    def held(status: dict[str, Any]) -> bool:
        promotion = status.get("promotion", {})
        return bool(
            promotion.get("token") == token
            and promotion.get("step") == "CatchingUp"
            and promotion.get("lsn")
        )

    await stack.wait_for(held, NAME, timeout=60, what=f"{token} held at CatchingUp")


async def resume_replay(stack: LocalStack, standby: str) -> None:
    async with await superuser(stack, standby) as conn:
        await conn.execute("SELECT pg_wal_replay_resume()")


async def switched(
    stack: LocalStack,
    token: str,
    to: str,
    writer: RowWriter,
    probe: WriteProbe,
    history: list[str],
) -> None:
    """The switchover ``token`` succeeded with RPO 0, the writer's acknowledged rows are all on
    the new primary, never were both sides writable, and the old primary streams from the new."""
    promotion: dict[str, Any] = await stack.wait_for(
        finished(token), NAME, timeout=120, what=f"the switchover {token}"
    )
    assert promotion["result"] == "Succeeded", promotion
    assert promotion["rpoBytes"] == 0, promotion
    await stack.wait_for(replicating_from(to), NAME, timeout=120, what=f"{to} primary, streaming")
    await eventually(
        lambda: _writer_reached(writer, stack, to), timeout=30, what="the writer on the new primary"
    )
    acknowledged = writer.acknowledged  # before the read: each of these must be there
    lost = acknowledged - await writer.rows_on(f"{NAME}-pg-primary")
    print(
        f"{token}: {len(acknowledged)} rows acknowledged so far, {len(lost)} lost; "
        f"{len(probe.samples)} write probes, at most {probe.most_writable} side(s) writable"
    )
    assert lost == set(), f"{len(lost)} acknowledged rows lost"
    assert probe.both_writable() == [], "both sides accepted writes"
    status = await stack.status(NAME)
    assert [entry["token"] for entry in status.get("history", [])] == history
    assert status["primary"] == to


async def _writer_reached(writer: RowWriter, stack: LocalStack, side: str) -> bool:
    return bool(writer.commits) and writer.commits[-1].port == stack.kubelet.port(
        f"{NAME}-pg-{side}"
    )


async def promotion_events_since(stack: LocalStack, before: dict[str, int]) -> dict[str, int]:
    counts = await settled_event_counts(stack)
    return {reason: counts[reason] - before.get(reason, 0) for reason in counts} | {
        reason: 0 for reason in before if reason not in counts
    }


async def roles(stack: LocalStack, operators: Operators) -> tuple[OperatorProcess, OperatorProcess]:
    """(leader, follower) now: the Lease holder and the other running process. A process that
    exited (a leader that could not renew in time on a busy machine exits, status 3) is started
    again first, as its Deployment would."""
    exits = {p.name: p.process.returncode for p in operators.running.values()}
    again = await operators.restart_exited()
    if again:
        print(f"started {again} again (exit statuses: {exits})")
    for process in operators.running.values():
        await eventually(_started(process), timeout=60, what=f"{process.name} running")
    holder = await eventually(lambda: lease_holder(stack), timeout=30, what="a Lease holder")
    leader = operators[holder]
    (follower,) = (p for name, p in operators.running.items() if name != holder)
    return leader, follower


def assert_no_follower_acted(operators: Operators) -> None:
    """No process asked anything but the Lease of the API before it held the Lease."""
    for process in operators.started:
        acted = acted_before_leading(process)
        assert acted == [], f"{process.name} acted while not leading: {acted[:10]}"


async def test_two_operators_promote_once_across_a_pause_and_a_kill_of_the_leader(
    stack: LocalStack, operators: Operators
) -> None:
    """(1) one leads, one waits: a switchover runs each step once and the waiting one only reads
    the Lease. (2) The leader SIGSTOPped at CatchingUp: the other takes the Lease within its
    duration and finishes the switchover once; the stopped one, continued, exits without one more
    API write. (3) It is started again (as a Deployment would) and waits; the leader is SIGKILLed
    at CatchingUp: the other takes over and finishes once."""
    phases = Phases()
    await two_started(operators)
    first_leader, first_follower = await roles(stack, operators)
    phases.mark(f"{first_leader.name} leads, {first_follower.name} waits")
    await create_replicating(stack)
    writer = Writer(stack)
    await writer.prepare()
    writer.start()
    probe = WriteProbe(stack)
    await probe.prepare()
    probe.start()
    try:
        await asyncio.sleep(1.0)
        assert writer.acknowledged, "the writer should be committing"
        phases.mark("a primary, b streaming, a writer committing")

        # (1) Two operators, one switchover: each step once; the follower never acts.
        await stack.annotate(NAME, ANNOTATION_PROMOTE, "switch-1")
        await switched(stack, "switch-1", "b", writer, probe, ["switch-1"])
        counts = await settled_event_counts(stack)
        print(f"switch-1 Events: {counts}")
        assert_each_once(counts)
        assert_no_follower_acted(operators)
        waiting = first_follower
        print(
            f"{waiting.name}: {len(waiting.proxy.requests)} requests, all Lease reads; "
            f"holder {await lease_holder(stack)}"
        )
        phases.mark("(1) switch-1 done")

        # (2) The leader paused (SIGSTOP) in the middle of a switchover.
        leader, follower = await roles(stack, operators)
        await hold_at_catching_up(stack, "switch-2", standby="a")
        stopped = time.monotonic()
        leader.signal(signal.SIGSTOP)
        await took_over(stack, follower.name, since=stopped, after=f"{leader.name} was SIGSTOPped")
        await resume_replay(stack, "a")
        await switched(stack, "switch-2", "a", writer, probe, ["switch-2", "switch-1"])
        assert_each_once(await promotion_events_since(stack, counts))
        counts = await settled_event_counts(stack)
        continued = time.monotonic()
        leader.signal(signal.SIGCONT)
        code = await leader.exited(15)
        print(f"{leader.name} exited with {code} {time.monotonic() - continued:.2f}s after SIGCONT")
        assert code == EXIT_LOST_LEADERSHIP, leader.text()[-3000:]
        stale = leader.proxy.writes(since=stopped)
        assert stale == [], f"{leader.name} wrote after it was stopped: {stale}"
        # Its watchdog, or the write guard if a write came first (docs/operator.md).
        exits = ("lost the operator Lease", "past the renew deadline of the operator Lease")
        assert any(line in leader.text() for line in exits), leader.text()[-3000:]
        await operators.restart_exited()  # as its Deployment would; it waits for the Lease
        assert await settled_event_counts(stack) == counts
        assert_no_follower_acted(operators)
        phases.mark(f"(2) switch-2 finished by {follower.name}; {leader.name} exited")

        # (3) The stopped one is back (a new process); the leader is SIGKILLed mid-switchover.
        leader, follower = await roles(stack, operators)
        await hold_at_catching_up(stack, "switch-3", standby="b")
        killed = time.monotonic()
        leader.signal(signal.SIGKILL)
        assert await leader.exited(10) == -signal.SIGKILL
        await took_over(stack, follower.name, since=killed, after=f"{leader.name} was SIGKILLed")
        await resume_replay(stack, "b")
        await switched(stack, "switch-3", "b", writer, probe, ["switch-3", "switch-2", "switch-1"])
        assert_each_once(await promotion_events_since(stack, counts))
        assert_no_follower_acted(operators)
        phases.mark(f"(3) switch-3 finished by {follower.name} after {leader.name} was killed")
    finally:
        await writer.stop()
        await probe.stop()
