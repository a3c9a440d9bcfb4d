"""Pure rules of issue #11's observation half: the primary-side lag and LagUnknown, one function
per condition, who is primary according to the instances, and promotion settings that apply to
the promotion they were recorded for."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.spec import FailoverSpec, GoCDHACluster, parse_cluster
from gocd_ha_operator.api.status import ReplicationStatus
from gocd_ha_operator.controller.observe import compute_status, verified_topology
from gocd_ha_operator.postgres.client import InstanceObservation, ReplicationConnection
from gocd_ha_operator.rules import conditions as rc
from gocd_ha_operator.rules.promotion import PromotionRequest, started, topology_of
from gocd_ha_operator.rules.topology import (
    InstanceReading,
    PrimaryEvidence,
    Topology,
    primary_from_instances,
)

Body = Callable[..., dict[str, Any]]
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
MIB = 1024 * 1024
AB = Topology(primary="a")


def cluster(body: Body, status: dict[str, Any] | None = None, **spec: Any) -> GoCDHACluster:
    raw = body(spec)
    raw["status"] = status or {}
    return parse_cluster(raw)


def row(replay_lag: int | None, state: str = "streaming") -> ReplicationConnection:
    return ReplicationConnection(
        application_name="gocdha_b",
        client_addr="10.0.0.2",
        state=state,
        sync_state="async",
        sent_lsn=None,
        write_lsn=None,
        flush_lsn=None,
        replay_lsn=None,
        replay_lag_bytes=replay_lag,
        write_lag_seconds=None,
        flush_lag_seconds=None,
        replay_lag_seconds=0.5 if replay_lag is not None else None,
    )


def primary(current: int = 100 * MIB, *rows: ReplicationConnection) -> InstanceObservation:
    return InstanceObservation(
        endpoint="a", reachable=True, in_recovery=False, timeline=1, current_lsn=current,
        replication=rows,
    )  # fmt: skip


def standby(replayed: int = 100 * MIB, received: int | None = None) -> InstanceObservation:
    received = replayed if received is None else received
    return InstanceObservation(
        endpoint="b", reachable=True, in_recovery=True, timeline=1, current_lsn=replayed,
        received_lsn=received, replayed_lsn=replayed, lag_bytes=received - replayed,
        lag_seconds=0.0,
    )  # fmt: skip


DOWN = InstanceObservation(endpoint="x", reachable=False, error="connection refused")


def observed(pg_a: InstanceObservation, pg_b: InstanceObservation) -> rc.ClusterObservation:
    return rc.ClusterObservation(
        postgres={"a": pg_a, "b": pg_b},
        gocd={"a": rc.GoCDObservation(1, True, "OK"), "b": rc.GoCDObservation(0, None)},
    )


# --- the primary-side lag ------------------------------------------------------------------------


def test_lag_comes_from_the_primarys_row_when_the_standby_streams() -> None:
    assert rc.primary_side_lag(primary(100, row(42)), standby(), "b") == 42


def test_without_a_row_lag_is_the_primarys_lsn_against_the_standbys_replay() -> None:
    # The standby receives nothing: its own received - replayed is 0, the truth is 8 MiB.
    lonely = standby(replayed=92 * MIB)
    assert lonely.lag_bytes == 0
    assert rc.primary_side_lag(primary(100 * MIB), lonely, "b") == 8 * MIB


def test_without_a_writable_primary_nothing_is_measured() -> None:
    assert rc.primary_side_lag(DOWN, standby(), "b") is None
    in_recovery = standby()
    assert rc.primary_side_lag(in_recovery, standby(), "b") is None


def replication(**update: Any) -> ReplicationStatus:
    return ReplicationStatus(last_streaming_time=cond.rfc3339(NOW), **update)


def test_a_dead_primary_leaves_the_last_measurement_as_the_lag() -> None:
    before = rc.replication_status(
        observed(primary(100 * MIB), standby(92 * MIB)),
        AB,
        replication(),
        failover=FailoverSpec(),
        observe_interval=10,
        now=NOW,
    )
    assert before.lag_bytes == 8 * MIB
    assert before.last_primary_lag_bytes == 8 * MIB
    assert before.last_primary_lag_measured_at == cond.rfc3339(NOW)
    later = NOW + timedelta(seconds=30)
    after = rc.replication_status(
        observed(DOWN, standby(92 * MIB)),
        AB,
        before,
        failover=FailoverSpec(),
        observe_interval=10,
        now=later,
    )
    assert after.lag_bytes == 8 * MIB, "not the standby's own 0"
    assert after.state == "Archive"
    assert after.last_primary_lag_measured_at == cond.rfc3339(NOW)


def test_a_measurement_older_than_the_bound_is_unknown_lag() -> None:
    failover = FailoverSpec(primary_unavailable_seconds=60)
    bound = rc.lag_freshness_bound(failover, observe_interval=10)
    assert bound == 60 + 20 + rc.LAG_TIME_RESOLUTION_SECONDS + 2
    old = replication(last_primary_lag_bytes=0, last_primary_lag_measured_at=cond.rfc3339(NOW))
    just = NOW + timedelta(seconds=bound)
    assert rc.recent_primary_lag(old, failover, 10, just) == 0
    assert rc.recent_primary_lag(old, failover, 10, just + timedelta(seconds=1)) is None
    never = replication()
    assert rc.recent_primary_lag(never, failover, 10, NOW) is None


def test_an_unchanged_measurement_is_restamped_only_after_the_resolution() -> None:
    first = rc.replication_status(
        observed(primary(100, row(0)), standby()), AB, replication(),
        failover=FailoverSpec(), observe_interval=10, now=NOW,
    )  # fmt: skip
    soon = NOW + timedelta(seconds=rc.LAG_TIME_RESOLUTION_SECONDS - 1)
    same = rc.replication_status(
        observed(primary(100, row(0)), standby()), AB, first,
        failover=FailoverSpec(), observe_interval=10, now=soon,
    )  # fmt: skip
    assert same == first, "an idle cluster writes no status"
    changed = rc.replication_status(
        observed(primary(100, row(7)), standby()), AB, first,
        failover=FailoverSpec(), observe_interval=10, now=soon,
    )  # fmt: skip
    assert changed.last_primary_lag_measured_at == cond.rfc3339(soon)


# --- one function per condition ------------------------------------------------------------------


def verdict_of(
    lag: int | None, *, running: bool = False, max_lag: int = MIB
) -> rc.ConditionVerdict:
    return rc.failover_possible(
        observed(DOWN, standby()),
        AB,
        replication(lag_bytes=lag),
        failover=FailoverSpec(max_lag_bytes=max_lag),
        promotion_running=running,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("lag", "status", "reason"),
    [
        (None, "False", "LagUnknown"),
        (2 * MIB, "False", "LagTooHigh"),
        (MIB, "True", "StandbyReady"),
        (0, "True", "StandbyReady"),
    ],
)
def test_failover_possible_by_lag(lag: int | None, status: str, reason: str) -> None:
    verdict = verdict_of(lag)
    assert (verdict.status, verdict.reason) == (status, reason)


def test_failover_possible_other_reasons() -> None:
    assert verdict_of(0, running=True).reason == "PromotionInProgress"
    no_standby = rc.failover_possible(
        observed(DOWN, DOWN), AB, replication(lag_bytes=0),
        failover=FailoverSpec(), promotion_running=False, now=NOW,
    )  # fmt: skip
    assert no_standby.reason == "StandbyUnreachable"
    stale = rc.failover_possible(
        observed(DOWN, standby()), AB,
        ReplicationStatus(lag_bytes=0, last_streaming_time=cond.rfc3339(NOW - timedelta(hours=1))),
        failover=FailoverSpec(), promotion_running=False, now=NOW,
    )  # fmt: skip
    assert stale.reason == "StandbyNotReplicating"


def test_primary_available() -> None:
    assert rc.primary_available(observed(primary(), standby()), AB).status == "True"
    assert rc.primary_available(observed(DOWN, standby()), AB).reason == "PrimaryUnreachable"
    assert rc.primary_available(observed(standby(), standby()), AB).reason == "PrimaryInRecovery"


def test_standby_replicating() -> None:
    streaming = replication(state="Streaming", lag_bytes=3)
    assert rc.standby_replicating(observed(primary(), standby()), AB, streaming).status == "True"
    archive = replication(state="Archive")
    assert rc.standby_replicating(observed(primary(), standby()), AB, archive).reason == (
        "NotStreaming"
    )
    assert rc.standby_replicating(observed(primary(), DOWN), AB, archive).reason == (
        "StandbyUnreachable"
    )
    assert rc.standby_replicating(observed(primary(), primary()), AB, archive).reason == (
        "StandbyNotInRecovery"
    )


def test_config_synced_promoting_degraded_ready() -> None:
    seen = observed(primary(), standby())
    assert rc.config_synced(seen).status == "Unknown"
    assert rc.promoting(True).status == "True" and rc.promoting(False).reason == "Idle"
    ok = rc.ConditionVerdict("True", "Streaming", "fine")
    bad = rc.ConditionVerdict("False", "NotStreaming", "archive only")
    unknown = rc.ConditionVerdict("Unknown", "NotObserved", "?")
    assert rc.degraded(seen, AB, replication(), replicating=ok, synced=unknown).status == "False"
    degraded = rc.degraded(seen, AB, replication(), replicating=bad, synced=unknown)
    assert (degraded.status, degraded.reason) == ("True", "StandbyNotReplicating")
    available = rc.primary_available(seen, AB)
    assert rc.ready(seen, AB, available=available, replicating=ok).status == "True"
    assert rc.ready(seen, AB, available=available, replicating=bad).reason == (
        "StandbyNotReplicating"
    )
    down = rc.primary_available(observed(DOWN, standby()), AB)
    assert rc.ready(seen, AB, available=down, replicating=ok).reason == "PrimaryUnavailable"


# --- who is primary: the instances, not memory ---------------------------------------------------

UP_PRIMARY = InstanceReading(reachable=True, in_recovery=False, timeline=2)
UP_STANDBY = InstanceReading(reachable=True, in_recovery=True, timeline=2)
GONE = InstanceReading(reachable=False)


def test_the_only_writable_instance_is_primary() -> None:
    verdict = primary_from_instances({"a": GONE, "b": UP_PRIMARY})
    assert (verdict.side, verdict.evidence) == ("b", PrimaryEvidence.ONLY_WRITABLE)
    assert primary_from_instances({"a": UP_STANDBY, "b": UP_PRIMARY}).side == "b"


def test_two_writable_instances_the_newer_timeline_wins() -> None:
    old = InstanceReading(reachable=True, in_recovery=False, timeline=1)
    verdict = primary_from_instances({"a": old, "b": UP_PRIMARY})
    assert (verdict.side, verdict.evidence) == ("b", PrimaryEvidence.NEWER_TIMELINE)
    same = primary_from_instances({"a": UP_PRIMARY, "b": UP_PRIMARY})
    assert (same.side, same.evidence) == (None, PrimaryEvidence.SAME_TIMELINE)


def test_no_writable_instance_is_no_verdict() -> None:
    assert primary_from_instances({"a": GONE, "b": UP_STANDBY}).side is None
    assert primary_from_instances({"a": GONE, "b": GONE}).side is None


def test_a_writable_instance_older_than_the_other_sides_last_timeline_is_no_verdict() -> None:
    stale = InstanceReading(reachable=True, in_recovery=False, timeline=1)
    verdict = primary_from_instances({"a": stale, "b": GONE}, known_timelines={"b": 2})
    assert (verdict.side, verdict.evidence) == (None, PrimaryEvidence.STALE_WRITABLE)


def test_a_stale_status_is_corrected_by_the_instances(body: Body) -> None:
    # A restored snapshot says a; a is down (stopped), b accepts writes on timeline 2.
    stale = cluster(body, {"primary": "a", "sides": {"a": {"postgres": {"timeline": 1}}}})
    promoted = InstanceObservation(endpoint="b", reachable=True, in_recovery=False, timeline=2)
    topology, verdict = verified_topology(stale, {"a": DOWN, "b": promoted})
    assert topology.primary == "b" and verdict.side == "b"
    status, _ = compute_status(stale, observed(DOWN, promoted), topology_of(stale), now=NOW)
    assert (status.primary, status.standby) == ("b", "a")


def test_a_running_promotion_is_not_second_guessed(body: Body) -> None:
    running = cluster(
        body,
        {
            "primary": "a",
            "promotion": {"result": "InProgress", "step": "Promoting", "fromSide": "a",
                          "toSide": "b"},
        },
    )  # fmt: skip
    promoted = InstanceObservation(endpoint="b", reachable=True, in_recovery=False, timeline=2)
    topology, _ = verified_topology(running, {"a": DOWN, "b": promoted})
    assert topology.primary == "a"


# --- promotion settings apply to the promotion they were recorded for ----------------------------


def done(**promotion: Any) -> dict[str, Any]:
    return {
        "primary": "b",
        "promotion": {"result": "Succeeded", "step": "Done", "fromSide": "a", "toSide": "b",
                      **promotion},
    }  # fmt: skip


def test_rejoin_manual_set_after_an_automatic_promotion_stops_nothing(body: Body) -> None:
    edited = cluster(body, done(rejoin="Automatic"), failover={"rejoin": "Manual"})
    topology = topology_of(edited)
    assert topology.stopped == frozenset() and topology.fenced == frozenset()


def test_rejoin_manual_recorded_keeps_the_old_side_down_until_set_to_automatic(
    body: Body,
) -> None:
    manual = cluster(body, done(rejoin="Manual"), failover={"rejoin": "Manual"})
    assert topology_of(manual).stopped == {"a"}
    released = cluster(body, done(rejoin="Manual"), failover={"rejoin": "Automatic"})
    assert topology_of(released).stopped == frozenset()


def test_maintenance_mode_is_the_recorded_one(body: Body) -> None:
    edited = cluster(
        body, done(startInMaintenanceMode=False), gocd={"startPromotedInMaintenanceMode": True}
    )
    assert topology_of(edited).maintenance == frozenset()


def test_a_started_promotion_records_the_settings(body: Body) -> None:
    spec = cluster(body, failover={"rejoin": "Manual"}).spec
    request = PromotionRequest("t", False, "Annotation", "gocdha.io/promote")
    status = cluster(body, {"primary": "a"}).status
    promotion = started(request, status, NOW, spec)
    assert promotion.rejoin == "Manual" and promotion.start_in_maintenance_mode is False
