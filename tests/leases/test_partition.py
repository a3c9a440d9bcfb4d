"""Issue #12 end to end: the primary's pod is cut off from the API server (the local kubelet cuts
that one pod's API access) and from the operator (its view of that Postgres refuses), while a
client on the primary's side keeps writing straight to that Postgres. Automatic failover is on.

What a user checks, and what these tests assert:

* **no write acknowledged after the guard's deadline**: the client's last acknowledgement from the
  old primary is at most ``renewTime + renewDeadlineSeconds`` of the last renewal the old side
  wrote into the Lease (the guard counts from the *start* of that renewal, which is earlier than
  the ``renewTime`` it wrote; the comparison is on one machine's wall clock, so the tolerance
  ``STAMP_TOLERANCE`` covers only the stamps' granularity);
* **the standby is promoted only after the Lease expired**: ``status.promotion.startedAt``
  (truncated to the second, so a lower bound of the decision) is at least that ``renewTime`` plus
  ``leaseDurationSeconds``, and nothing starts while the old primary still renews;
* **never two writable sides**: at every probe sample (an INSERT over each instance's own address)
  at most one side accepts it — side a before the cut, never side a after the guard's deadline,
  side b after the promotion. In between, from the fence to ``pg_promote``, no side does: that
  gap is what a failover costs (so "exactly one writable at every sample" cannot hold);
* **the old primary rejoins** as a standby streaming from the new one once the partition heals;
* with ``synchronous: true``, **no acknowledged row is lost**; with the operator killed in the
  middle of the failover and started again, **one promotion** (one ``PromotionStarted`` Event, one
  history entry) with the same outcome.

Timings are spec fields, short: ``P = 10`` (the minimum), ``L = 8``, ``D = 5``, ``R = 1``. Figures
are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from gocd_ha_operator.local.stack import LocalStack
from tests.support.clusters import Replace, cluster_body
from tests.support.faults import FaultyEndpoints, Gate, start_operator
from tests.support.partition import (
    DirectWriter,
    Recorder,
    TimedProbe,
    events,
    events_of,
    parse_time,
    replicating_or_logs,
    wall,
)
from tests.support.pg import unavailable_reason
from tests.support.promotion import NAME, condition, replicating_from

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

P, L, D, R = 10, 8, 5, 1
#: RFC 3339 stamps of status are whole seconds (truncated: a lower bound); the Lease's renewTime
#: and the client's acknowledgement times are microseconds on the same clock.
STAMP_TOLERANCE = 0.01
OLD, NEW = f"{NAME}-pg-a", f"{NAME}-pg-b"


def partition_cluster(*, synchronous: bool = False) -> dict[str, Any]:
    postgres: dict[str, Any] = {"image": "postgres:15"}
    if synchronous:
        postgres["synchronous"] = True
    return cluster_body(
        metadata=Replace({"name": NAME}),
        spec=Replace(
            {
                "postgres": postgres,
                "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
                "failover": {
                    "mode": "Automatic",
                    "primaryUnavailableSeconds": P,
                    "leaseDurationSeconds": L,
                    "renewDeadlineSeconds": D,
                    "retryPeriodSeconds": R,
                },
            }
        ),
    )


@dataclass
class Partition:
    """The running scenario: the operator's network view, the client, the probe, the recorder."""

    stack: LocalStack
    endpoints: FaultyEndpoints
    writer: DirectWriter
    probe: TimedProbe
    recorder: Recorder
    cut_at: float = 0.0

    @classmethod
    async def set_up(cls, stack: LocalStack, *, synchronous: bool = False) -> Partition:
        endpoints = FaultyEndpoints(stack.kubelet.endpoint_map, stack.namespace)
        await start_operator(stack, endpoints=endpoints)
        await stack.apply(partition_cluster(synchronous=synchronous))
        await replicating_or_logs(stack, "a", timeout=150)
        scenario = cls(
            stack, endpoints, DirectWriter(stack, "a"), TimedProbe(stack), Recorder(stack)
        )
        scenario.recorder.start()
        await scenario.writer.prepare()
        await scenario.probe.prepare()
        scenario.writer.start()
        scenario.probe.start()
        # The guard renews: two renewals by side a's guard seen.
        deadline = time.monotonic() + 30
        while len([r for r in scenario.recorder.renewals if r.holder == OLD]) < 2:
            assert time.monotonic() < deadline, "side a's guard does not renew the Lease"
            await asyncio.sleep(0.1)
        while len(scenario.writer.acks) < 20 or len(scenario.probe.samples) < 3:
            assert time.monotonic() < deadline, "the client or the probe does not get through"
            await asyncio.sleep(0.1)
        return scenario

    def cut_operator_view(self) -> None:
        """The operator can no longer reach side a's Postgres (connection refused)."""
        self.endpoints.refuse(OLD, 3600)

    async def cut_api(self, mode: str = "blackhole") -> None:
        self.cut_at = time.time()
        await self.stack.kubelet.cut_api(OLD, mode)  # type: ignore[arg-type]

    async def heal(self) -> None:
        await self.stack.kubelet.heal_api(OLD)
        self.endpoints.heal()

    async def wait_promoted(self) -> dict[str, Any]:
        promotion: dict[str, Any] = await self.stack.wait_for(
            lambda s: (
                s.get("promotion", {}).get("result") not in (None, "InProgress") and s["promotion"]
            ),
            NAME,
            timeout=120,
            what="the automatic failover to finish",
        )
        return promotion

    async def finish(self) -> None:
        await self.writer.stop()
        await self.probe.stop()
        await self.recorder.stop()

    async def check(self, promotion: dict[str, Any]) -> dict[str, float]:
        """The assertions every partition scenario shares; returns the figures it printed."""
        stack, writer, probe, recorder = self.stack, self.writer, self.probe, self.recorder
        assert promotion["result"] == "Succeeded", promotion
        assert (promotion["type"], promotion["trigger"]) == ("Failover", "Automatic"), promotion
        status = await stack.status(NAME)
        assert status["primary"] == "b"
        # One promotion: one Event, one history entry.
        started_events = await events(stack, "PromotionStarted")
        assert len(started_events) == 1, [e["message"] for e in started_events]
        assert [h["token"] for h in status.get("history", [])] == [promotion["token"]]

        last = recorder.last_renewal_by(OLD)
        assert last.duration == L, last
        before_cut = [a for a in writer.acks if a.at < self.cut_at]
        after_cut = [a for a in writer.acks if a.at >= self.cut_at]
        guard_deadline = last.renew_time + D
        lease_expiry = last.renew_time + L
        started = parse_time(promotion["startedAt"])
        promoting = [e for e in await events(stack, "PromotionPromoting")]
        point_of_no_return = parse_time(promoting[0]["eventTime"]) if promoting else float("nan")
        counts = probe.writable_counts()
        first_b = next(
            (t for t, s in zip(probe.times, probe.samples, strict=True) if s["b"]), float("nan")
        )
        fence = stack.kubelet.pod_log(OLD)
        reasons = sorted(map(str, recorder.reasons_seen()))
        steps = [
            f"{e['reason'][len('Promotion') :]} {parse_time(e['eventTime']) - lease_expiry:+.1f}s"
            for e in await events_of(stack)
            if e["reason"].startswith("Promotion")
        ]
        print(
            f"\ncut {wall(self.cut_at)}; side a's last renewal {wall(last.renew_time)} "
            f"(+D {wall(guard_deadline)}, +L {wall(lease_expiry)})\n"
            f"last acknowledged write on a {wall(writer.last_ack)}"
            f" ({guard_deadline - writer.last_ack:.3f}s before renewTime + D);"
            f" acks {len(before_cut)} before the cut, {len(after_cut)} after it;"
            f" client errors {writer.errors}\n"
            f"promotion startedAt {promotion['startedAt']}"
            f" ({started - lease_expiry:+.3f}s after renewTime + L),"
            f" PromotionPromoting Event {wall(point_of_no_return)}"
            f" ({point_of_no_return - lease_expiry:+.3f}s), first write on b in the probe"
            f" {wall(first_b)}\n"
            f"probe samples {len(counts)}: none writable {counts.count(0)}, one {counts.count(1)},"
            f" two {counts.count(2)}; FailoverPossible reasons {reasons}\n"
            f"Events after renewTime + L: {', '.join(steps)}"
        )
        assert "FENCING" in fence, fence[-3000:]
        # 1. No acknowledged write after the guard's deadline.
        assert writer.last_ack <= guard_deadline + STAMP_TOLERANCE
        assert after_cut, "the client should have been acknowledged after the cut (until the fence)"
        # 2. Promoted only after the Lease expired (and the point of no return after that too).
        assert started >= lease_expiry, (promotion["startedAt"], wall(lease_expiry))
        assert point_of_no_return >= lease_expiry
        # 3. Never two writable sides. A sample is one INSERT per side with a 3 s budget, so on a
        # loaded machine a side that accepts writes may time out (a 0); a 2 cannot be a timing
        # artefact. The probe saw a writable before the cut, never a after the guard's deadline
        # (a second client, same verdict), and b writable after the promotion.
        assert counts.count(2) == 0, probe.both_writable()
        samples = list(zip(probe.times, probe.samples, strict=True))
        assert any(s["a"] and not s["b"] for t, s in samples if t < self.cut_at), counts
        assert not any(s["a"] for t, s in samples if t >= guard_deadline), counts
        assert any(s["b"] and not s["a"] for t, s in samples if t >= started), counts
        # 4. The old primary rejoined as a standby of the new one (after the heal).
        assert status["sides"]["a"]["postgres"]["inRecovery"] is True
        assert status["replication"]["state"] == "Streaming"
        return {
            "margin_to_deadline": guard_deadline - writer.last_ack,
            "started_after_expiry": started - lease_expiry,
        }


async def test_partitioned_primary_stops_itself_before_the_lease_expires(
    stack: LocalStack,
) -> None:
    """The operator loses sight of the primary first: as long as its guard renews the Lease the
    failover waits (``LeaseHeld``) however long ``primaryUnavailableSeconds`` has passed; then the
    primary loses the API too (requests hang, as in a partition), fences itself, and only after
    the Lease has expired is the standby promoted."""
    scenario = await Partition.set_up(stack)
    try:
        scenario.cut_operator_view()
        await stack.wait_for(
            lambda s: condition(s, "PrimaryAvailable").get("status") == "False",
            NAME,
            timeout=30,
            what="PrimaryAvailable=False",
        )
        unavailable = time.monotonic()
        acks = len(scenario.writer.acks)
        await asyncio.sleep(P + 3)  # past primaryUnavailableSeconds: held back by the Lease only
        status = await stack.status(NAME)
        assert status.get("promotion", {}).get("token") is None, status.get("promotion")
        held = condition(status, "FailoverPossible")
        assert (held.get("status"), held.get("reason")) == ("False", "LeaseHeld"), held
        assert len(scenario.writer.acks) > acks, "the primary serves while its guard renews"
        print(f"\nno failover for {time.monotonic() - unavailable:.1f}s: {held['message']}")
        await scenario.cut_api("blackhole")
        promotion = await scenario.wait_promoted()
        await scenario.heal()
        await stack.wait_for(replicating_from("b"), NAME, timeout=150, what="a rejoined")
        await asyncio.sleep(1)  # a few probe samples with b as the one primary
    finally:
        await scenario.finish()
    await scenario.check(promotion)
    # Here the Lease, not primaryUnavailableSeconds, is what held the failover back: the last
    # reason FailoverPossible gave before the promotion (other than True, StandbyReady) LeaseHeld.
    # Read from the statuses seen before the first one naming this promotion: a promotion can run
    # its course between two samples, so its PromotionInProgress reason may never be sampled.
    reasons = [reason for _, reason in scenario.recorder.failover_possible]
    before_start = []
    for _, seen in scenario.recorder.statuses:
        if (seen.get("promotion") or {}).get("token") == promotion["token"]:
            break
        before_start.append(condition(seen, "FailoverPossible").get("reason"))
    assert [r for r in before_start if r != "StandbyReady"][-1] == "LeaseHeld", reasons
    lost = scenario.writer.acknowledged - await scenario.writer.rows_on("b")
    print(f"asynchronous replication: {len(lost)} acknowledged rows not on the new primary")


async def test_synchronous_partition_loses_no_acknowledged_row(stack: LocalStack) -> None:
    """``synchronous: true``: the primary is cut off from the API and the operator at once (new
    connections refused); every row the client saw acknowledged by the old primary is on the new
    one."""
    scenario = await Partition.set_up(stack, synchronous=True)
    try:
        scenario.cut_operator_view()
        await scenario.cut_api("refuse")
        promotion = await scenario.wait_promoted()
        await scenario.heal()
        await stack.wait_for(replicating_from("b"), NAME, timeout=150, what="a rejoined")
        await asyncio.sleep(1)
    finally:
        await scenario.finish()
    await scenario.check(promotion)
    acknowledged = scenario.writer.acknowledged
    rows = await scenario.writer.rows_on("b")
    lost = acknowledged - rows
    print(f"synchronous: {len(acknowledged)} rows acknowledged by side a, {len(lost)} lost")
    assert lost == set(), f"{len(lost)} acknowledged rows lost, e.g. {sorted(lost)[:10]}"


async def test_operator_killed_during_the_partition_promotes_once(stack: LocalStack) -> None:
    """The operator is killed in the middle of the failover (at ``StoppingOldPrimary``, before it
    took the Lease) and a new process started: it judges the Lease from its own first sight,
    completes the one promotion, and the outcome is the same."""
    scenario = await Partition.set_up(stack)
    gate = Gate("StoppingOldPrimary")
    await start_operator(stack, endpoints=scenario.endpoints, hook=gate)
    try:
        scenario.cut_operator_view()
        await scenario.cut_api("refuse")
        await gate.wait_reached()
        killed = time.time()
        await stack.stop_operator()  # killed mid-promotion; the gate never opens in that process
        await asyncio.sleep(1)
        await start_operator(stack, endpoints=scenario.endpoints)
        print(f"\noperator killed at {wall(killed)} in StoppingOldPrimary and started again")
        promotion = await scenario.wait_promoted()
        await scenario.heal()
        await stack.wait_for(replicating_from("b"), NAME, timeout=150, what="a rejoined")
        await asyncio.sleep(1)
    finally:
        gate.release()
        await scenario.finish()
    await scenario.check(promotion)
