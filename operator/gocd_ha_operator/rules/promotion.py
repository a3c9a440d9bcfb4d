"""Promotion of the standby: switchover (old primary answers) and failover (it does not).

The protocol of docs/architecture.md §9. Every step is written to ``status.promotion.step`` *before*
it acts and is safe to repeat, so an operator that dies at any moment resumes the promotion from the
recorded step and completes it exactly once:

1. ``Fencing`` — the old primary's GoCD server stops and no role Service selects its side.
2. ``CatchingUp`` (switchover only) — its remaining client sessions are ended, a CHECKPOINT is
   taken and the standby is waited for until it has replayed the old primary's last LSN (RPO 0).
3. ``StoppingOldPrimary`` — its Postgres StatefulSet goes to 0 replicas, so it cannot come back as
   a primary (a restarted instance reads ``standby`` from the ConfigMap anyway).
4. ``Promoting`` — ``pg_promote(wait => true)`` on the standby; a slot for the old side.
5. ``SwitchingRoles`` — ``status.primary``, the ConfigMap's roles and the Services move to the new
   side; its GoCD server starts as the primary (Warm: without the standby options; Cold: after
   restoring the mirror), in maintenance mode when asked.
6. ``Rejoining`` — with ``rejoin: Automatic`` the old side comes back as a standby (pg_rewind or a
   fresh base backup, by the instance entrypoint).
7. ``Done`` — a history entry with the times and the measured RPO; Events throughout.

**Point of no return.** ``Promoting`` is recorded before ``pg_promote`` is called, so from the
moment that step is in status the standby may already be a primary. From there the promotion
only rolls forward (:func:`past_point_of_no_return`): the old side stays fenced whatever fails.
Before it, a promotion that cannot go on unfences the old primary, but only once the standby is
confirmed to be still in recovery.

**No downgrade.** The type is decided once, when the promotion starts (:func:`started`): a
switchover never turns into a failover because a connection failed halfway.

The requests themselves — the annotations, automatic failover — are decided by pure functions
here too; :mod:`gocd_ha_operator.controller.supervisor` decides on them and
:mod:`gocd_ha_operator.controller.runner` runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FORCE, Side
from gocd_ha_operator.api.spec import GoCDHACluster, GoCDHAClusterSpec
from gocd_ha_operator.api.status import GoCDHAClusterStatus, PromotionStatus
from gocd_ha_operator.rules.topology import Topology


class Step(StrEnum):
    """The steps of a promotion, in order; ``status.promotion.step`` holds one of them."""

    FENCING = "Fencing"
    CATCHING_UP = "CatchingUp"
    STOPPING_OLD_PRIMARY = "StoppingOldPrimary"
    PROMOTING = "Promoting"
    SWITCHING_ROLES = "SwitchingRoles"
    REJOINING = "Rejoining"
    DONE = "Done"


STEPS: Final = tuple(Step)
#: Steps during which the old primary's side is fenced / has its Postgres stopped.
FENCED_STEPS: Final = frozenset(STEPS[:5])
STOPPED_STEPS: Final = frozenset(STEPS[2:5])
#: The first step that may have issued ``pg_promote``: from here on, only forward.
POINT_OF_NO_RETURN: Final = Step.PROMOTING


class Reason(StrEnum):
    """``status.promotion.reason`` of a promotion that was refused, failed or is stuck."""

    PROMOTION_IN_PROGRESS = "PromotionInProgress"
    STANDBY_UNREACHABLE = "StandbyUnreachable"
    STANDBY_NOT_IN_RECOVERY = "StandbyNotInRecovery"
    LAG_TOO_HIGH = "LagTooHigh"
    LAG_UNKNOWN = "LagUnknown"
    SWITCHOVER_FAILED = "SwitchoverFailed"
    FAILOVER_FAILED = "FailoverFailed"
    PROMOTION_STUCK = "PromotionStuck"
    #: The primary Lease could not be handed to the new side (issue #12): the old primary may
    #: still hold it, so nothing is promoted.
    LEASE_HELD = "LeaseHeld"


HISTORY_LENGTH: Final = 10

Trigger = Literal["Annotation", "Automatic", "Rollout"]


@dataclass(frozen=True)
class PromotionRequest:
    token: str
    force: bool
    trigger: Trigger
    #: Which annotation carried it (``None`` for an automatic failover).
    annotation: str | None
    #: Other ``(annotation, value)`` pairs that arrived in the same change and are handled (marked
    #: as seen) by this one request: ``promote`` and ``promote-force`` set together are one
    #: promotion, not two.
    also: tuple[tuple[str, str], ...] = ()


def pending_request(cluster: GoCDHACluster) -> PromotionRequest | None:
    """A promotion asked for by annotation values not handled yet: one request, forced when
    ``promote-force`` is among the new values."""
    annotations = cluster.metadata.annotations
    handled = cluster.status.handled_tokens
    new: list[tuple[str, str]] = []
    for key, last in (
        (ANNOTATION_PROMOTE_FORCE, handled.promote_force),
        (ANNOTATION_PROMOTE, handled.promote),
    ):
        token = annotations.get(key)
        if token and token != last:
            new.append((key, token))
    if not new:
        return None
    (key, token), *rest = new
    return PromotionRequest(
        token=token,
        force=key == ANNOTATION_PROMOTE_FORCE,
        trigger="Annotation",
        annotation=key,
        also=tuple(rest),
    )


def mark_handled(status: GoCDHAClusterStatus, request: PromotionRequest) -> GoCDHAClusterStatus:
    """``status`` with every annotation value of ``request`` recorded as handled."""
    pairs = list(request.also)
    if request.annotation is not None:
        pairs.insert(0, (request.annotation, request.token))
    tokens = status.handled_tokens
    for key, token in pairs:
        field = "promote_force" if key == ANNOTATION_PROMOTE_FORCE else "promote"
        tokens = tokens.model_copy(update={field: token})
    return status.model_copy(update={"handled_tokens": tokens})


def past_point_of_no_return(step: str | None) -> bool:
    """Whether ``pg_promote`` may have been issued once ``step`` is recorded."""
    if step is None or step not in STEPS:
        return False
    return STEPS.index(Step(step)) >= STEPS.index(POINT_OF_NO_RETURN)


def lag_refusal(cluster: GoCDHACluster, lag: int | None, force: bool) -> tuple[Reason, str] | None:
    """The lag gate of a failover: what a promotion of the standby now would lose is bounded by
    ``maxLagBytes`` unless ``promote-force`` was given."""
    if force:
        return None
    limit = cluster.spec.failover.max_lag_bytes
    if lag is None:
        return Reason.LAG_UNKNOWN, (
            f"the standby's lag is unknown; annotate {ANNOTATION_PROMOTE_FORCE}=<token> to "
            "promote anyway"
        )
    if lag > limit:
        return Reason.LAG_TOO_HIGH, (
            f"the standby's last observed lag is {lag} bytes, above maxLagBytes {limit}; "
            f"annotate {ANNOTATION_PROMOTE_FORCE}=<token> to promote anyway"
        )
    return None


def topology_of(cluster: GoCDHACluster) -> Topology:
    """The role assignment in force, derived from status alone so that a restarted operator (and
    the reconcile) never undoes what a promotion did."""
    status = cluster.status
    primary: Side = status.primary or "a"
    promotion = status.promotion
    fenced: set[Side] = set()
    stopped: set[Side] = set()
    maintenance: set[Side] = set()
    old = promotion.from_side
    if old is not None and promotion.result == "InProgress":
        if promotion.step in FENCED_STEPS:
            fenced.add(old)
        if promotion.step in STOPPED_STEPS:
            stopped.add(old)
    # The promotion's settings are the ones recorded when it started (an older record without
    # them: the spec). A spec edit after the promotion must not reach back into it: flipping
    # rejoin to Manual would otherwise stop a standby that rejoined and streams.
    recorded_rejoin = promotion.rejoin or cluster.spec.failover.rejoin
    if (
        old is not None
        and promotion.result == "Succeeded"
        and recorded_rejoin == "Manual"
        and cluster.spec.failover.rejoin == "Manual"
    ):
        # Manual rejoin: the old side stays down until someone sets rejoin back to Automatic
        # (that edit only ever starts a side, never stops one).
        fenced.add(old)
        stopped.add(old)
    new = promotion.to_side
    in_maintenance = promotion.start_in_maintenance_mode
    if in_maintenance is None:
        in_maintenance = cluster.spec.gocd.start_promoted_in_maintenance_mode
    if (
        new is not None
        and new == primary
        and promotion.result in ("InProgress", "Succeeded")
        and in_maintenance
    ):
        maintenance.add(new)
    return Topology(
        primary=primary,
        fenced=frozenset(fenced),
        stopped=frozenset(stopped),
        maintenance=frozenset(maintenance),
    )


def topology_before(cluster: GoCDHACluster, step: Step) -> Topology:
    """The topology in force before the recorded promotion's ``step`` acted: the one the step
    before applied (before ``Fencing``: the old primary serving, nothing fenced). A step applies
    only the children that differ between this and :func:`topology_of`."""
    status = cluster.status
    old: Side = status.promotion.from_side or "a"
    if step == Step.FENCING:
        previous = status.model_copy(update={"primary": old, "promotion": PromotionStatus()})
    else:
        prior = STEPS[STEPS.index(step) - 1]
        roles_moved = STEPS.index(prior) >= STEPS.index(Step.SWITCHING_ROLES)
        previous = status.model_copy(
            update={
                "primary": status.primary if roles_moved else old,
                "promotion": status.promotion.model_copy(update={"step": prior}),
            }
        )
    return topology_of(cluster.model_copy(update={"status": previous}))


#: How old the recorded observation of a healthy pair may be for a promotion request to be
#: decided on it instead of a new observation (issue #16: the request starts at once).
RECORDED_OBSERVATION_MAX_AGE: Final = timedelta(seconds=2)


@dataclass(frozen=True)
class ObservationRecord:
    """When this process last wrote an observation into status, and under which topology."""

    at: datetime
    topology: Topology


def decide_on_recorded_observation(
    cluster: GoCDHACluster, recorded: ObservationRecord | None, now: datetime
) -> bool:
    """Whether a pending promotion request may be decided on the status as this process last
    observed it, without observing again: that observation is younger than
    :data:`RECORDED_OBSERVATION_MAX_AGE`, was made under the topology in force now, no promotion
    runs, and it found a healthy pair — the primary available, the standby streaming — so the
    request becomes a switchover. Anything else (a failover, a refusal, a stale or foreign
    status) is decided on a new observation. What can change in between costs liveness only: a
    primary lost since then makes the switchover fail cleanly at ``CatchingUp`` (it never turns
    into a failover), a standby lost since then fails it the same way."""
    if recorded is None or cluster.status.promotion.result == "InProgress":
        return False
    if not timedelta(0) <= now - recorded.at < RECORDED_OBSERVATION_MAX_AGE:
        return False
    if recorded.topology != topology_of(cluster):
        return False
    healthy = (cond.PRIMARY_AVAILABLE, cond.STANDBY_REPLICATING)
    return all(
        (found := cond.get_condition(cluster.status.conditions, kind)) is not None
        and found.status == "True"
        for kind in healthy
    )


def refusal(
    cluster: GoCDHACluster, observed: GoCDHAClusterStatus, request: PromotionRequest
) -> tuple[Reason, str] | None:
    """Why ``request`` cannot be honoured now (reason and message), or ``None``. Checked before
    anything is touched, so a refused request leaves the cluster exactly as it was."""
    if cluster.status.promotion.result == "InProgress":
        return Reason.PROMOTION_IN_PROGRESS, (
            f"promotion {cluster.status.promotion.token!r} is still running; a request made "
            "while one runs is refused, not queued"
        )
    standby = observed.standby or "b"
    side = observed.sides.b if standby == "b" else observed.sides.a
    if side is None or not side.postgres.reachable:
        return Reason.STANDBY_UNREACHABLE, f"the standby (side {standby}) cannot be reached"
    if not side.postgres.in_recovery:
        return Reason.STANDBY_NOT_IN_RECOVERY, (f"the standby (side {standby}) is not in recovery")
    primary = observed.sides.a if standby == "b" else observed.sides.b
    primary_up = primary is not None and bool(primary.postgres.reachable)
    if primary_up:
        return None  # a switchover: the standby catches up before it is promoted
    return lag_refusal(cluster, observed.replication.lag_bytes, request.force)


def automatic_failover_due(
    cluster: GoCDHACluster, observed: GoCDHAClusterStatus, now: datetime
) -> str | None:
    """Why an automatic failover should start now, or ``None``: the primary has been unavailable
    for ``primaryUnavailableSeconds``, a failover is possible, and no promotion ran recently."""
    failover = cluster.spec.failover
    if failover.mode != "Automatic" or cluster.status.promotion.result == "InProgress":
        return None
    available = cond.get_condition(observed.conditions, cond.PRIMARY_AVAILABLE)
    possible = cond.get_condition(observed.conditions, cond.FAILOVER_POSSIBLE)
    if available is None or available.status != "False":
        return None
    if possible is None or possible.status != "True":
        return None
    # lastTransitionTime has whole seconds, truncated: the flip may have happened up to a second
    # after the stamp, so wait one second longer rather than fail over early.
    since = cond.parse_rfc3339(available.last_transition_time) + timedelta(seconds=1)
    if now - since < timedelta(seconds=failover.primary_unavailable_seconds):
        return None
    last = observed.history[0] if observed.history else None
    cooldown = timedelta(seconds=failover.cooldown_seconds)
    if (
        last is not None
        and last.finished_at is not None
        and now - cond.parse_rfc3339(last.finished_at) < cooldown
    ):
        return None
    return (
        f"the primary has been unavailable since {available.last_transition_time} "
        f"({available.reason}) and the standby can take over"
    )


def started(
    request: PromotionRequest,
    observed: GoCDHAClusterStatus,
    now: datetime,
    spec: GoCDHAClusterSpec | None = None,
) -> PromotionStatus:
    """The ``status.promotion`` of a promotion that starts now. Its type is decided here, once:
    a switchover when the old primary answered the last observation, a failover otherwise. The
    spec's promotion settings are recorded: they apply to this promotion, whatever the spec says
    later."""
    old: Side = observed.primary or "a"
    new: Side = "b" if old == "a" else "a"
    primary = observed.sides.a if old == "a" else observed.sides.b
    standby = observed.sides.b if old == "a" else observed.sides.a
    reachable = primary is not None and bool(primary.postgres.reachable)
    timelines = [
        side.postgres.timeline
        for side in (primary, standby)
        if side is not None and side.postgres.timeline is not None
    ]
    return PromotionStatus(
        token=request.token,
        force=request.force,
        trigger=request.trigger,
        type="Switchover" if reachable else "Failover",
        step=Step.FENCING,
        from_side=old,
        to_side=new,
        started_at=cond.rfc3339(now),
        result="InProgress",
        message=f"promoting side {new}",
        rpo_bytes=None if reachable else observed.replication.lag_bytes,
        rejoin=spec.failover.rejoin if spec is not None else None,
        start_in_maintenance_mode=(
            spec.gocd.start_promoted_in_maintenance_mode if spec is not None else None
        ),
        from_timeline=max(timelines) if timelines else None,
    )


def refused(
    request: PromotionRequest,
    observed: GoCDHAClusterStatus,
    reason: Reason,
    message: str,
    now: datetime,
) -> PromotionStatus:
    old: Side = observed.primary or "a"
    return PromotionStatus(
        token=request.token,
        force=request.force,
        trigger=request.trigger,
        from_side=old,
        to_side="b" if old == "a" else "a",
        started_at=cond.rfc3339(now),
        finished_at=cond.rfc3339(now),
        result="Refused",
        reason=reason,
        message=message,
    )


def with_history(status: GoCDHAClusterStatus, entry: PromotionStatus) -> GoCDHAClusterStatus:
    history = [entry, *status.history][:HISTORY_LENGTH]
    return status.model_copy(update={"history": history})


#: Test hook: called with the step name after it is recorded and again (with ``":done"``) after
#: it acted. Lets tests stop the operator at every point of a promotion.
StepHook = Callable[[str], Awaitable[None]]
