"""Promotion benchmark: the operator promotes through the annotation, on real local Postgres.

One run measures, on the same machine and in the same process:

* the **floor**: the Postgres-only switchover of ``benchmarks/switchover.py`` (fence the writer,
  CHECKPOINT, wait for replay, stop, ``pg_promote``, first write), median of ``--runs``;
* **switchovers** by the operator (annotation → ``Done``) under a writer that commits numbered
  rows through the primary Service the whole time, ``--runs`` of them back and forth on one
  local stack; per run: the rows lost (``rpo_rows``, must be 0), ``annotate_to_writable_s``
  (annotation → the writer's first commit on the new primary), ``write_gap_s`` (the writer's last
  commit on the old primary → its first on the new one), ``annotate_to_first_step_s``
  (annotation → the runner beginning the first step it found recorded in status) and each step's
  duration (the operator's promotion hook), also from the ``PromotionStarted`` and
  ``Promotion<Step>`` Events' timestamps (stamped when kopf posts them: later under load);
  then ``ratio = median annotate_to_writable / median floor``;
* **operator restarts**: for each point of the protocol, the operator is stopped there and a new
  one started; ``resume_s`` is from the start of the new operator to its first step action
  (``first_action_s``) and to the next step it records (``next_step_s``);
* one **failover** (the primary's process killed, then the annotation), which waits for the
  primary Lease to expire;
* one **automatic failover** (``failover.mode: Automatic``, ``primaryUnavailableSeconds: 10``,
  the default Lease timings it implies: 5/3/1 s): the primary's process killed and nothing else;
  ``kill_to_writable_s`` is judged by issue #16's bound, ``primaryUnavailableSeconds`` + the
  Lease's duration + 2 s, and printed beside it.

Every figure line carries the load average, because the machine may be shared.

    .venv/bin/python benchmarks/promotion.py [--runs 5] [--no-restarts] [--no-failover]
        [--no-automatic]
    (as root it runs Postgres as user postgres)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE, POSTGRES_PORT
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.local.stack import LocalStack, local_stack
from gocd_ha_operator.local.workload import BackgroundLoop, RowWriter, streaming_from

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from switchover import switchover as postgres_only_switchover
from tests.support.clusters import Replace, cluster_body
from tests.support.pg import pg_cluster, unavailable_reason

NAME = "ci"
NAMESPACE = "bench"
BODY: dict[str, Any] = cluster_body(
    metadata=Replace({"name": NAME}),
    spec=Replace(
        {
            "postgres": {"image": "postgres:15"},
            "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
        }
    ),
)
STEP_EVENTS = (
    "PromotionStarted",
    "PromotionCatchingUp",
    "PromotionStoppingOldPrimary",
    "PromotionPromoting",
    "PromotionSwitchingRoles",
    "PromotionRejoining",
    "PromotionDone",
    "PromotionSucceeded",
)
KILL_POINTS = (
    "Fencing",
    "CatchingUp:done",
    "StoppingOldPrimary",
    "Promoting:done",
    "SwitchingRoles",
    "Rejoining",
    "Done",
)


def load() -> str:
    return "load=" + "/".join(f"{value:.2f}" for value in os.getloadavg())


def other(side: str) -> str:
    return "b" if side == "a" else "a"


def serving(primary: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: streaming_from(primary, status)


def finished(token: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def check(status: dict[str, Any]) -> dict[str, Any] | None:
        promotion: dict[str, Any] = status.get("promotion", {})
        if promotion.get("token") == token and promotion.get("result") != "InProgress":
            return promotion
        return None

    return check


def floor_runs(runs: int) -> list[float]:
    figures = []
    for _ in range(runs):
        with pg_cluster() as cluster:
            figures.append(asyncio.run(postgres_only_switchover(cluster, 2.0, quiet=True)))
    return figures


async def first_commit_elsewhere(writer: RowWriter, old_port: int, after: float) -> float:
    """Wait up to 30 s for the writer's first commit later than ``after`` (monotonic) on another
    port than ``old_port`` (the new primary), then stop the writer; that commit's time, or NaN."""
    deadline = time.monotonic() + 30

    def on_new() -> list[float]:
        return [c.at for c in writer.commits if c.port != old_port and c.at > after]

    while time.monotonic() < deadline and not on_new():
        await asyncio.sleep(0.01)
    await writer.stop()
    return min(on_new(), default=float("nan"))


async def step_events(stack: LocalStack, since: float) -> dict[str, float]:
    """Wall-clock time of each promotion Event of ``NAME`` posted after ``since``."""
    events = await stack.request("GET", f"/api/v1/namespaces/{NAMESPACE}/events")
    found: dict[str, float] = {}
    for event in events.get("items", []):
        if (event.get("involvedObject") or {}).get("name") != NAME:
            continue
        reason = event.get("reason")
        stamp = event.get("eventTime") or event.get("firstTimestamp")
        if reason not in STEP_EVENTS or not stamp:
            continue
        at = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
        if at >= since:
            found[reason] = min(at, found.get(reason, at))
    return found


class StepClock:
    """The promotion hook of the benchmark's operator: when each step began (monotonic), i.e.
    right after the runner found it recorded in status, and when each point inside a step
    (``runner.Mark``, ``<Step>:<what>``) was passed."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self.marks: list[tuple[str, float]] = []

    async def __call__(self, point: str) -> None:
        (self.marks if ":" in point else self.seen).append((point, time.monotonic()))

    def since(self, start: float) -> list[tuple[str, float]]:
        return [(step, at) for step, at in self.seen if at >= start]

    def marks_since(self, start: float) -> list[tuple[str, float]]:
        return [(mark, at) for mark, at in self.marks if at >= start]


class NodeClock(BackgroundLoop):
    """What the node (the local kubelet) does during a switchover, sampled every 2 ms in this
    process: when the primary Postgres Service stops selecting a pod and selects one again
    (``node:primary-endpoint-none`` / ``node:primary-endpoint-<port>``: what a client resolves),
    and when the old primary's pod has stopped (``node:old-pod-stopped``)."""

    def __init__(self, stack: LocalStack, old_pod: str) -> None:
        self.stack = stack
        self.old_pod = old_pod
        self.seen: list[tuple[str, float]] = []
        self._task = None
        self._stop = asyncio.Event()

    async def _run(self) -> None:
        key = f"{NAMESPACE}/{NAME}-pg-primary:{POSTGRES_PORT}"
        endpoint = self.stack.kubelet.endpoint_map.get(key)
        running = self.stack.kubelet.running(self.old_pod)
        while not self._stop.is_set():
            now = self.stack.kubelet.endpoint_map.get(key)
            if now != endpoint:
                endpoint = now
                what = "none" if now is None else str(now.port)
                self.seen.append((f"node:primary-endpoint-{what}", time.monotonic()))
            if running and not self.stack.kubelet.running(self.old_pod):
                running = False
                self.seen.append(("node:old-pod-stopped", time.monotonic()))
            await asyncio.sleep(0.002)


async def switch(
    stack: LocalStack, writer: RowWriter, primary: str, token: str, clock: StepClock
) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """One annotated switchover from ``primary`` under the writer; its figures."""
    writer.start()
    await asyncio.sleep(1.0)
    old_port = stack.kubelet.port(f"{NAME}-pg-{primary}")
    node = NodeClock(stack, f"{NAME}-pg-{primary}")
    node.start()
    wall, annotated = time.time(), time.monotonic()
    await stack.annotate(NAME, ANNOTATION_PROMOTE, token)
    promotion = await stack.wait_for(finished(token), NAME, timeout=120, what=token)
    first_new = await first_commit_elsewhere(writer, old_port, annotated)
    await node.stop()
    last_old = max(
        (c.at for c in writer.commits if c.port == old_port and c.at < first_new),
        default=float("nan"),
    )
    lost = len(writer.acknowledged - await writer.rows_on(f"{NAME}-pg-primary"))
    events = await step_events(stack, wall)
    began = clock.since(annotated)
    figures = {
        "result": promotion.get("result"),
        "rpo_rows": lost,
        "annotate_to_writable_s": first_new - annotated,
        "write_gap_s": first_new - last_old,
        # The runner's first step began: the status write that recorded it, plus the runner's
        # own start and one read of the resource (an upper bound).
        "annotate_to_first_step_s": began[0][1] - annotated if began else float("nan"),
        "annotate_to_started_event_s": events.get("PromotionStarted", float("nan")) - wall,
        "raw_promote_s": promotion.get("promoteSeconds"),
    }
    # Each step's duration: from its start to the next one's (the hook), and from the Events'
    # timestamps (stamped when kopf posts them, so later than the steps under load).
    steps = {step: later - at for (step, at), (_, later) in itertools.pairwise(began)}
    steps_by_events: dict[str, float] = {}
    present = [reason for reason in STEP_EVENTS if reason in events]
    for here, following in itertools.pairwise(present):
        name = "Fencing" if here == "PromotionStarted" else here.removeprefix("Promotion")
        steps_by_events[name] = events[following] - events[here]
    # The write gap's parts: every point passed (steps, marks inside them, the node's reactions)
    # as seconds since the writer's last commit on the old primary.
    points = [*began, *clock.marks_since(annotated), *node.seen, ("writer:first-new", first_new)]
    figures["gap"] = {name: at - last_old for name, at in sorted(points, key=lambda p: p[1])}
    return figures, steps, steps_by_events


async def switchovers(runs: int, restarts: bool) -> tuple[list[dict[str, Any]], list[str]]:
    results: list[dict[str, Any]] = []
    lines: list[str] = []
    async with local_stack([NAME], namespace=NAMESPACE, observe_interval=0.5) as stack:
        await stack.apply(BODY)
        await stack.wait_for(lambda s: streaming_from("a", s), NAME, timeout=120, what="ready")
        writer = RowWriter(stack, NAME)
        await writer.prepare()
        clock = StepClock()
        await stack.stop_operator()
        await stack.start_operator(promotion_hook=clock)
        primary = "a"
        for run in range(runs):
            figures, steps, by_events = await switch(stack, writer, primary, f"bench-{run}", clock)
            results.append(figures)
            step_text = " ".join(f"{name}={seconds:.3f}" for name, seconds in steps.items())
            event_text = " ".join(f"{name}={seconds:.3f}" for name, seconds in by_events.items())
            lines.append(
                f"switchover run={run + 1} result={figures['result']} "
                f"rpo_rows={figures['rpo_rows']} "
                f"annotate_to_writable_s={figures['annotate_to_writable_s']:.3f} "
                f"write_gap_s={figures['write_gap_s']:.3f} "
                f"annotate_to_first_step_s={figures['annotate_to_first_step_s']:.3f} "
                f"annotate_to_started_event_s={figures['annotate_to_started_event_s']:.3f} "
                f"raw_promote_s={figures['raw_promote_s']} steps: {step_text} "
                f"steps_by_events: {event_text} {load()}"
            )
            print(lines[-1], flush=True)
            gap_text = " ".join(f"{name}={at:+.3f}" for name, at in figures["gap"].items())
            print(f"  gap run={run + 1} (s since the last commit on the old primary): {gap_text}")
            primary = other(primary)
            await stack.wait_for(serving(primary), NAME, timeout=120, what="rejoined")
        if restarts:
            primary = await restart_runs(stack, writer, primary, lines)
    return results, lines


async def restart_runs(stack: LocalStack, writer: RowWriter, primary: str, lines: list[str]) -> str:
    """The operator stopped at each point and a new one started: how soon it goes on."""
    loop = asyncio.get_running_loop()
    for number, point in enumerate(KILL_POINTS, start=1):
        reached = asyncio.Event()

        async def stop_here(
            step: str, point: str = point, reached: asyncio.Event = reached
        ) -> None:
            if step == point:
                loop.call_soon_threadsafe(reached.set)
                await asyncio.Event().wait()  # the process "dies" here

        first_action: list[float] = []

        async def record(step: str, first_action: list[float] = first_action) -> None:
            if not first_action:
                first_action.append(time.monotonic())

        await stack.stop_operator()
        await stack.start_operator(promotion_hook=stop_here)
        writer.start()
        await asyncio.sleep(0.5)
        token = f"restart-{number}"
        await stack.annotate(NAME, ANNOTATION_PROMOTE, token)
        await asyncio.wait_for(reached.wait(), timeout=90)
        await stack.stop_operator()
        recorded = (await stack.status(NAME))["promotion"]
        started = time.monotonic()
        await stack.start_operator(promotion_hook=record)
        deadline = started + 60
        next_step = float("nan")
        while time.monotonic() < deadline:
            promotion = (await stack.status(NAME)).get("promotion", {})
            if promotion.get("step") != recorded.get("step") or promotion.get("result") != (
                "InProgress"
            ):
                next_step = time.monotonic() - started
                break
            await asyncio.sleep(0.02)
        promotion = await stack.wait_for(finished(token), NAME, timeout=120, what=token)
        await writer.stop()
        lost = len(writer.acknowledged - await writer.rows_on(f"{NAME}-pg-primary"))
        action = first_action[0] - started if first_action else float("nan")
        lines.append(
            f"restart point={point} result={promotion.get('result')} rpo_rows={lost} "
            f"first_action_s={action:.3f} next_step_s={next_step:.3f} {load()}"
        )
        print(lines[-1], flush=True)
        primary = other(primary)
        await stack.wait_for(serving(primary), NAME, timeout=120, what="rejoined")
    await stack.stop_operator()
    await stack.start_operator()
    return primary


async def kill_primary_under_writer(
    stack: LocalStack, body: dict[str, Any]
) -> tuple[RowWriter, int, float]:
    """Create ``body``, wait until side a streams to side b, write for 2 s, then crash side a's
    pod (SIGKILL, held down): the running writer, the old primary's port and the kill's
    monotonic time."""
    await stack.apply(body)
    await stack.wait_for(lambda s: streaming_from("a", s), NAME, timeout=120, what="ready")
    writer = RowWriter(stack, NAME)
    await writer.prepare()
    writer.start()
    await asyncio.sleep(2.0)
    old_port = stack.kubelet.port(f"{NAME}-pg-a")
    await stack.kubelet.kill(f"{NAME}-pg-a")
    return writer, old_port, time.monotonic()


async def failover() -> str:
    async with local_stack([NAME], namespace=NAMESPACE, observe_interval=0.5) as stack:
        writer, old_port, killed = await kill_primary_under_writer(stack, BODY)
        await stack.wait_for(
            lambda s: any(
                c["type"] == "PrimaryAvailable" and c["status"] == "False"
                for c in s.get("conditions", [])
            ),
            NAME,
            timeout=30,
            what="PrimaryAvailable=False",
        )
        annotated = time.monotonic()
        await stack.annotate(NAME, ANNOTATION_PROMOTE, "bench-failover")
        promotion = await stack.wait_for(
            finished("bench-failover"), NAME, timeout=120, what="the failover"
        )
        first_new = await first_commit_elsewhere(writer, old_port, annotated)
        lost = len(writer.acknowledged - await writer.rows_on(f"{NAME}-pg-primary"))
        lease = (await stack.status(NAME)).get("lease", {})
        return (
            f"failover result={promotion.get('result')} rpo_rows={lost} "
            f"kill_to_writable_s={first_new - killed:.2f} "
            f"annotate_to_writable_s={first_new - annotated:.2f} "
            f"raw_promote_s={promotion.get('promoteSeconds')} "
            f"(waits for the Lease: leaseDurationSeconds=30 + 2 s margin; holder now "
            f"{lease.get('holder')}) {load()}"
        )


#: The automatic failover's settings: the shortest ``primaryUnavailableSeconds`` allowed, and no
#: cooldown (the stack is new). The Lease timings are derived from it (5/3/1 s).
AUTOMATIC_UNAVAILABLE_SECONDS: Final = 10
AUTOMATIC_BODY: Final[dict[str, Any]] = cluster_body(
    metadata=Replace({"name": NAME}),
    spec=Replace(
        {
            "postgres": {"image": "postgres:15"},
            "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
            "failover": {
                "mode": "Automatic",
                "primaryUnavailableSeconds": AUTOMATIC_UNAVAILABLE_SECONDS,
                "cooldownSeconds": 0,
            },
        }
    ),
)


async def automatic_failover() -> str:
    """The primary's Postgres is killed (SIGKILL, held down) under a writer and nobody acts: the
    operator sees it unavailable, waits ``primaryUnavailableSeconds`` and for the Lease's expiry,
    and promotes. Issue #16's bound: writable within ``primaryUnavailableSeconds`` + the Lease's
    duration + 2 s of the kill."""
    async with local_stack([NAME], namespace=NAMESPACE, observe_interval=0.5) as stack:
        lease_seconds = parse_cluster(AUTOMATIC_BODY).spec.failover.lease_timings.lease_duration
        writer, old_port, killed = await kill_primary_under_writer(stack, AUTOMATIC_BODY)

        def promoted(status: dict[str, Any]) -> dict[str, Any] | None:
            promotion: dict[str, Any] = status.get("promotion", {})
            if promotion.get("trigger") == "Automatic" and promotion.get("result") not in (
                None,
                "InProgress",
            ):
                return promotion
            return None

        promotion = await stack.wait_for(
            promoted, NAME, timeout=AUTOMATIC_UNAVAILABLE_SECONDS + 120, what="the failover"
        )
        first_new = await first_commit_elsewhere(writer, old_port, killed)
        lost = len(writer.acknowledged - await writer.rows_on(f"{NAME}-pg-primary"))
        bound = AUTOMATIC_UNAVAILABLE_SECONDS + lease_seconds + 2
        writable = first_new - killed
        return (
            f"automatic failover result={promotion.get('result')} type={promotion.get('type')} "
            f"rpo_rows={lost} kill_to_writable_s={writable:.2f} "
            f"bound_s={bound} (primaryUnavailableSeconds={AUTOMATIC_UNAVAILABLE_SECONDS} + "
            f"leaseDurationSeconds={lease_seconds} + 2) within_bound={writable <= bound} "
            f"raw_promote_s={promotion.get('promoteSeconds')} {load()}"
        )


def gap_medians(results: list[dict[str, Any]]) -> str:
    """Each point of the write gap seen in every run: its median offset, in time order (the
    endpoint points named by role, not port: the primary alternates)."""
    runs: list[dict[str, float]] = []
    for result in results:
        named: dict[str, float] = {}
        for point, at in result["gap"].items():
            new_endpoint = point.startswith("node:primary-endpoint-") and point[-4:] != "none"
            named.setdefault("node:primary-endpoint-new" if new_endpoint else point, at)
        runs.append(named)
    common = set.intersection(*(set(run) for run in runs)) if runs else set()
    medians = {name: statistics.median(run[name] for run in runs) for name in common}
    return " ".join(f"{name}={at:+.3f}" for name, at in sorted(medians.items(), key=lambda p: p[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="switchovers and floor runs")
    parser.add_argument("--no-restarts", action="store_true", help="skip the restart runs")
    parser.add_argument("--no-failover", action="store_true", help="skip the failover")
    parser.add_argument("--no-automatic", action="store_true", help="skip the automatic failover")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    floors = floor_runs(args.runs)
    print(
        "floor (Postgres-only switchover) writable_s: "
        + " ".join(f"{value:.3f}" for value in floors)
        + f" median={statistics.median(floors):.3f} {load()}",
        flush=True,
    )
    results, _lines = asyncio.run(switchovers(args.runs, restarts=not args.no_restarts))
    writable = statistics.median(r["annotate_to_writable_s"] for r in results)
    gap = statistics.median(r["write_gap_s"] for r in results)
    first = statistics.median(r["annotate_to_first_step_s"] for r in results)
    floor = statistics.median(floors)
    print(
        f"promotion: type=switchover runs={len(results)} "
        f"rpo_rows_total={sum(r['rpo_rows'] for r in results)} "
        f"median annotate_to_writable_s={writable:.3f} median write_gap_s={gap:.3f} "
        f"median annotate_to_first_step_s={first:.3f} floor_s={floor:.3f} "
        f"ratio={writable / floor:.2f} {load()}",
        flush=True,
    )
    print(
        "write gap parts (median s since the last commit on the old primary): "
        + gap_medians(results)
    )
    if not args.no_failover:
        print(asyncio.run(failover()), flush=True)
    if not args.no_automatic:
        print(asyncio.run(automatic_failover()), flush=True)


if __name__ == "__main__":
    main()
