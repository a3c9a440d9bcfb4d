"""Pure promotion decisions: which annotation values are new, when to refuse, when automatic
failover is due, and the role assignment each step implies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.controller.observe import (
    BC_API_EXPOSED,
    ClusterObservation,
    GoCDObservation,
    compute_status,
)
from gocd_ha_operator.controller.reconcile import changed_children
from gocd_ha_operator.postgres.client import InstanceObservation
from gocd_ha_operator.rules.promotion import (
    FENCED_STEPS,
    RECORDED_OBSERVATION_MAX_AGE,
    ObservationRecord,
    PromotionRequest,
    Step,
    automatic_failover_due,
    decide_on_recorded_observation,
    mark_handled,
    past_point_of_no_return,
    pending_request,
    refusal,
    topology_before,
    topology_of,
)
from gocd_ha_operator.rules.topology import Topology
from tests.support.clusters import CREDENTIALS
from tests.support.memkube import MemoryKube, apply_step

Body = Callable[..., dict[str, Any]]
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def cluster(body: Body, status: dict[str, Any] | None = None, **spec: Any) -> GoCDHACluster:
    raw = body(spec)
    raw["status"] = status or {}
    return parse_cluster(raw)


def annotated(
    body: Body, annotations: dict[str, str], status: dict[str, Any] | None = None
) -> GoCDHACluster:
    raw = body()
    raw["metadata"]["annotations"] = annotations
    raw["status"] = status or {}
    return parse_cluster(raw)


def test_a_new_annotation_value_is_a_request_once(body: Body) -> None:
    first = annotated(body, {"gocdha.io/promote": "1"})
    request = pending_request(first)
    assert request == PromotionRequest("1", False, "Annotation", "gocdha.io/promote")
    handled = mark_handled(first.status, request)
    again = annotated(body, {"gocdha.io/promote": "1"}, handled.to_api())
    assert pending_request(again) is None
    newer = annotated(body, {"gocdha.io/promote": "2"}, handled.to_api())
    assert pending_request(newer) is not None


def test_force_annotation_is_a_forced_request(body: Body) -> None:
    request = pending_request(annotated(body, {"gocdha.io/promote-force": "x"}))
    assert request is not None and request.force


def observed(primary_up: bool, standby_up: bool, lag: int | None) -> GoCDHAClusterStatus:
    return GoCDHAClusterStatus.model_validate(
        {
            "primary": "a",
            "standby": "b",
            "sides": {
                "a": {
                    "postgres": {
                        "reachable": primary_up,
                        "inRecovery": False if primary_up else None,
                    }
                },
                "b": {
                    "postgres": {
                        "reachable": standby_up,
                        "inRecovery": True if standby_up else None,
                    }
                },
            },
            "replication": {"lagBytes": lag},
        }
    )


@pytest.mark.parametrize(
    ("primary_up", "standby_up", "lag", "force", "fragment"),
    [
        (True, True, 10**9, False, None),  # switchover: the lag is caught up, never lost
        (False, True, 10, False, None),
        (False, True, 10**9, False, "above maxLagBytes"),
        (False, True, 10**9, True, None),
        (False, True, None, False, "lag is unknown"),
        (True, False, 0, True, "cannot be reached"),
    ],
)
def test_refusals(
    body: Body,
    primary_up: bool,
    standby_up: bool,
    lag: int | None,
    force: bool,
    fragment: str | None,
) -> None:
    request = PromotionRequest("t", force, "Annotation", "gocdha.io/promote")
    why = refusal(cluster(body), observed(primary_up, standby_up, lag), request)
    if fragment is None:
        assert why is None
    else:
        assert why is not None and fragment in why[1]


def test_a_running_promotion_refuses_another(body: Body) -> None:
    running = cluster(
        body, {"promotion": {"token": "old", "result": "InProgress", "step": Step.FENCING}}
    )
    why = refusal(
        running, observed(True, True, 0), PromotionRequest("new", False, "Annotation", None)
    )
    assert why is not None and "still running" in why[1]
    assert why[0] == "PromotionInProgress"


def conditions_status(
    unavailable_for: float, possible: str = "True", history: list[Any] | None = None
) -> GoCDHAClusterStatus:
    since = (NOW - timedelta(seconds=unavailable_for)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return GoCDHAClusterStatus.model_validate(
        {
            "conditions": [
                {
                    "type": "PrimaryAvailable",
                    "status": "False",
                    "reason": "PrimaryUnreachable",
                    "lastTransitionTime": since,
                },
                {
                    "type": "FailoverPossible",
                    "status": possible,
                    "reason": "X",
                    "lastTransitionTime": since,
                },
            ],
            "history": history or [],
        }
    )


def test_automatic_failover_waits_for_primary_unavailable_seconds(body: Body) -> None:
    automatic = cluster(body, failover={"mode": "Automatic", "primaryUnavailableSeconds": 60})
    assert automatic_failover_due(automatic, conditions_status(59), NOW) is None
    # The stamp is truncated to the second: 60 s after it may be only 59.x s after the flip.
    assert automatic_failover_due(automatic, conditions_status(60), NOW) is None
    assert automatic_failover_due(automatic, conditions_status(61), NOW) is not None


def test_no_automatic_failover_in_manual_mode_or_when_not_possible(body: Body) -> None:
    manual = cluster(body)
    assert automatic_failover_due(manual, conditions_status(3600), NOW) is None
    automatic = cluster(body, failover={"mode": "Automatic"})
    assert automatic_failover_due(automatic, conditions_status(3600, possible="False"), NOW) is None


def test_no_automatic_failover_within_the_cooldown(body: Body) -> None:
    automatic = cluster(body, failover={"mode": "Automatic", "cooldownSeconds": 600})
    recent = [
        {"token": "t", "finishedAt": (NOW - timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    ]
    assert automatic_failover_due(automatic, conditions_status(3600, history=recent), NOW) is None
    old = [
        {"token": "t", "finishedAt": (NOW - timedelta(seconds=900)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    ]
    assert automatic_failover_due(automatic, conditions_status(3600, history=old), NOW) is not None


@pytest.mark.parametrize(
    ("step", "fenced", "stopped", "primary"),
    [
        (Step.FENCING, {"a"}, set(), "a"),
        (Step.PROMOTING, {"a"}, {"a"}, "a"),
        (Step.SWITCHING_ROLES, {"a"}, {"a"}, "b"),
        (Step.REJOINING, set(), set(), "b"),
    ],
)
def test_topology_follows_the_recorded_step(
    body: Body, step: str, fenced: set[str], stopped: set[str], primary: str
) -> None:
    status = {
        "primary": primary,
        "promotion": {
            "token": "t",
            "result": "InProgress",
            "step": step,
            "fromSide": "a",
            "toSide": "b",
        },
    }
    topology = topology_of(cluster(body, status))
    assert (topology.primary, set(topology.fenced), set(topology.stopped)) == (
        primary,
        fenced,
        stopped,
    )


def test_manual_rejoin_keeps_the_old_primary_down(body: Body) -> None:
    status = {
        "primary": "b",
        "promotion": {
            "token": "t",
            "result": "Succeeded",
            "step": "Done",
            "fromSide": "a",
            "toSide": "b",
        },
    }
    topology = topology_of(cluster(body, status, failover={"rejoin": "Manual"}))
    assert topology.fenced == {"a"} and topology.stopped == {"a"}


def test_warm_gocd_with_the_unauthenticated_sync_api_gets_a_condition(body: Body) -> None:
    warm = cluster(body, gocd={"image": "gocd/gocd-server:v21.2.0"})
    unreachable = InstanceObservation(endpoint="x", reachable=False, error="down")
    observation = ClusterObservation(
        postgres={"a": unreachable, "b": unreachable},
        gocd={"a": GoCDObservation(1, False), "b": GoCDObservation(1, False)},
    )
    status, transitions = compute_status(warm, observation, topology_of(warm), now=NOW)
    exposed = next(c for c in status.conditions if c.type == BC_API_EXPOSED)
    assert exposed.status == "True" and "GHSA-f8j3-9pqx-h88g" in exposed.message
    assert BC_API_EXPOSED in {t.type for t in transitions}
    # Once: the next observation does not announce it again.
    again = warm.model_copy(update={"status": status})
    _, repeated = compute_status(again, observation, topology_of(again), now=NOW)
    assert BC_API_EXPOSED not in {t.type for t in repeated}
    cold = cluster(body)
    status, _ = compute_status(cold, observation, topology_of(cold), now=NOW)
    assert all(c.type != BC_API_EXPOSED for c in status.conditions)


def test_promote_and_force_set_together_are_one_forced_request(body: Body) -> None:
    both = annotated(body, {"gocdha.io/promote": "p1", "gocdha.io/promote-force": "f1"})
    request = pending_request(both)
    assert request is not None and request.force and request.token == "f1"
    handled = mark_handled(both.status, request)
    assert (handled.handled_tokens.promote, handled.handled_tokens.promote_force) == ("p1", "f1")
    again = annotated(
        body, {"gocdha.io/promote": "p1", "gocdha.io/promote-force": "f1"}, handled.to_api()
    )
    assert pending_request(again) is None


@pytest.mark.parametrize(
    ("step", "beyond"),
    [
        (None, False),
        (Step.FENCING, False),
        (Step.CATCHING_UP, False),
        (Step.STOPPING_OLD_PRIMARY, False),
        (Step.PROMOTING, True),
        (Step.SWITCHING_ROLES, True),
        (Step.REJOINING, True),
        (Step.DONE, True),
    ],
)
def test_the_point_of_no_return_is_the_promoting_step(step: Step | None, beyond: bool) -> None:
    assert past_point_of_no_return(step) is beyond


def test_a_step_is_both_its_enum_and_its_status_string() -> None:
    as_status: str = Step.PROMOTING  # a str wherever status wants one
    assert as_status == "Promoting" and Step("CatchingUp") is Step.CATCHING_UP
    assert Step.PROMOTING in FENCED_STEPS and Step.REJOINING not in FENCED_STEPS


SWITCHOVER_WRITES = {
    Step.FENCING: {
        ("Deployment", "ci-gocd-a"),
        ("Service", "ci-gocd"),
        ("Service", "ci-pg-primary"),
    },
    Step.STOPPING_OLD_PRIMARY: {("StatefulSet", "ci-pg-a")},
    Step.SWITCHING_ROLES: {
        ("ConfigMap", "ci-postgres"),
        ("Service", "ci-pg-primary"),
        ("Service", "ci-pg-standby"),
        ("Service", "ci-gocd"),
        ("Deployment", "ci-gocd-a"),
        ("Deployment", "ci-gocd-b"),
        # Their gocdha.io/role label (never in a pod template: no restart).
        ("StatefulSet", "ci-pg-a"),
        ("StatefulSet", "ci-pg-b"),
    },
    Step.REJOINING: {("StatefulSet", "ci-pg-a"), ("Service", "ci-pg-standby")},
}


@pytest.mark.parametrize("step", list(SWITCHOVER_WRITES))
def test_each_step_applies_only_what_its_topology_changes(body: Body, step: Step) -> None:
    """docs/operator.md lists these: a step writes the children whose built form differs between
    the previous step's topology and its own, never the Secrets, PVCs or the Lease."""
    primary = "b" if step in (Step.SWITCHING_ROLES, Step.REJOINING) else "a"
    status = {
        "primary": primary,
        "standby": "a" if primary == "b" else "b",
        "promotion": {
            "token": "t",
            "type": "Switchover",
            "result": "InProgress",
            "step": step,
            "fromSide": "a",
            "toSide": "b",
        },
    }
    promoted = cluster(body, status, gocd={"image": "gocd/gocd-server:v26.1.0"})

    def built(topology: Topology) -> list[dict[str, Any]]:
        return build_children(BuildInputs(promoted, topology, CREDENTIALS, "operator:test"))

    changed = changed_children(built(topology_before(promoted, step)), built(topology_of(promoted)))
    assert {(c["kind"], c["metadata"]["name"]) for c in changed} == SWITCHOVER_WRITES[step]
    # Repeating a step (an operator restart) applies the same objects to the same content.
    again = changed_children(built(topology_before(promoted, step)), built(topology_of(promoted)))
    assert again == changed


def test_switching_roles_writes_the_primary_postgres_service_before_anything_else(
    body: Body,
) -> None:
    """Issue #16: GoCD's writes wait for the primary Postgres Service only; it is written first,
    alone, and the other children after it."""
    status = {
        "primary": "b",
        "standby": "a",
        "promotion": {
            "token": "t",
            "type": "Switchover",
            "result": "InProgress",
            "step": Step.SWITCHING_ROLES,
            "fromSide": "a",
            "toSide": "b",
        },
    }
    promoted = cluster(body, status)
    kube = MemoryKube()
    for child in build_children(
        BuildInputs(
            promoted, topology_before(promoted, Step.SWITCHING_ROLES), CREDENTIALS, "op:test"
        )
    ):
        kube.objects[(child["kind"], child["metadata"]["namespace"], child["metadata"]["name"])] = (
            child
        )
    raw = body()
    apply_step(kube, raw, promoted, Step.SWITCHING_ROLES, credentials=CREDENTIALS)
    written = [(kind, name) for _, kind, name in kube.writes]
    assert written[0] == ("Service", "ci-pg-primary"), written
    assert set(written) == SWITCHOVER_WRITES[Step.SWITCHING_ROLES]


def test_nothing_changes_between_unchanged_topologies(body: Body) -> None:
    plain = cluster(body)
    children = build_children(BuildInputs(plain, topology_of(plain), CREDENTIALS, "operator:test"))
    assert changed_children(children, children) == []
    assert changed_children([], children) == children


def healthy_pair(primary: str = "True", standby: str = "True") -> dict[str, Any]:
    """A status as an observation of a serving primary and a streaming standby records it."""
    stamp = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "primary": "a",
        "standby": "b",
        "conditions": [
            {
                "type": "PrimaryAvailable",
                "status": primary,
                "reason": "X",
                "lastTransitionTime": stamp,
            },
            {
                "type": "StandbyReplicating",
                "status": standby,
                "reason": "X",
                "lastTransitionTime": stamp,
            },
        ],
    }


def test_a_request_right_after_a_healthy_observation_is_decided_on_it(body: Body) -> None:
    """Issue #16: no new observation between the annotation and the first step, only while the
    recorded one is recent, of the same topology, and shows a pair a switchover needs."""
    healthy = cluster(body, healthy_pair())
    record = ObservationRecord(NOW, topology_of(healthy))
    assert decide_on_recorded_observation(healthy, record, NOW + timedelta(seconds=1))
    # Too old, from the future (a clock step), never made, or of another topology: observe anew.
    late = NOW + RECORDED_OBSERVATION_MAX_AGE
    assert not decide_on_recorded_observation(healthy, record, late)
    assert not decide_on_recorded_observation(healthy, record, NOW - timedelta(seconds=1))
    assert not decide_on_recorded_observation(healthy, None, NOW)
    other = ObservationRecord(NOW, Topology(primary="b"))
    assert not decide_on_recorded_observation(healthy, other, NOW)
    # What would be a failover or a refusal is decided on a new observation.
    for primary, standby in (("False", "True"), ("True", "False"), ("Unknown", "True")):
        unhealthy = cluster(body, healthy_pair(primary, standby))
        assert not decide_on_recorded_observation(unhealthy, record, NOW)
    running = cluster(body, {**healthy_pair(), "promotion": {"token": "t", "result": "InProgress"}})
    assert not decide_on_recorded_observation(running, record, NOW)
