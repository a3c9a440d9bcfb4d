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

The requests themselves — the annotations, automatic failover — are decided by pure functions
here too; :mod:`gocd_ha_operator.controller.supervisor` runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FORCE, Side
from gocd_ha_operator.api.spec import GoCDHACluster, GoCDHAClusterSpec
from gocd_ha_operator.api.status import GoCDHAClusterStatus, PromotionStatus
from gocd_ha_operator.rules.topology import Topology

FENCING: Final = "Fencing"
CATCHING_UP: Final = "CatchingUp"
STOPPING_OLD_PRIMARY: Final = "StoppingOldPrimary"
PROMOTING: Final = "Promoting"
SWITCHING_ROLES: Final = "SwitchingRoles"
REJOINING: Final = "Rejoining"
DONE: Final = "Done"
STEPS: Final = (
    FENCING,
    CATCHING_UP,
    STOPPING_OLD_PRIMARY,
    PROMOTING,
    SWITCHING_ROLES,
    REJOINING,
    DONE,
)
#: Steps during which the old primary's side is fenced / has its Postgres stopped.
FENCED_STEPS: Final = frozenset(STEPS[:5])
STOPPED_STEPS: Final = frozenset(STEPS[2:5])
HISTORY_LENGTH: Final = 10

Trigger = Literal["Annotation", "Automatic"]


@dataclass(frozen=True)
class PromotionRequest:
    token: str
    force: bool
    trigger: Trigger
    #: Which annotation carried it (``None`` for an automatic failover).
    annotation: str | None


def pending_request(cluster: GoCDHACluster) -> PromotionRequest | None:
    """A promotion asked for by an annotation value that was not handled yet."""
    annotations = cluster.metadata.annotations
    handled = cluster.status.handled_tokens
    for key, force, last in (
        (ANNOTATION_PROMOTE_FORCE, True, handled.promote_force),
        (ANNOTATION_PROMOTE, False, handled.promote),
    ):
        token = annotations.get(key)
        if token and token != last:
            return PromotionRequest(token=token, force=force, trigger="Annotation", annotation=key)
    return None


def mark_handled(status: GoCDHAClusterStatus, request: PromotionRequest) -> GoCDHAClusterStatus:
    if request.annotation is None:
        return status
    tokens = status.handled_tokens
    update = (
        {"promote_force": request.token}
        if request.annotation == ANNOTATION_PROMOTE_FORCE
        else {"promote": request.token}
    )
    return status.model_copy(update={"handled_tokens": tokens.model_copy(update=update)})


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


def refusal(
    cluster: GoCDHACluster, observed: GoCDHAClusterStatus, request: PromotionRequest
) -> str | None:
    """Why ``request`` cannot be honoured now, or ``None``. Checked before anything is touched,
    so a refused request leaves the cluster exactly as it was."""
    if cluster.status.promotion.result == "InProgress":
        return f"promotion {cluster.status.promotion.token!r} is still running"
    standby = observed.standby or "b"
    side = observed.sides.b if standby == "b" else observed.sides.a
    if side is None or not side.postgres.reachable:
        return f"the standby (side {standby}) cannot be reached"
    if not side.postgres.in_recovery:
        return f"the standby (side {standby}) is not in recovery"
    lag = observed.replication.lag_bytes
    limit = cluster.spec.failover.max_lag_bytes
    primary = observed.sides.a if standby == "b" else observed.sides.b
    primary_up = primary is not None and bool(primary.postgres.reachable)
    if not primary_up and not request.force and lag is not None and lag > limit:
        return (
            f"the standby's last observed lag is {lag} bytes, above maxLagBytes {limit}; "
            f"annotate {ANNOTATION_PROMOTE_FORCE}=<token> to promote anyway"
        )
    if not primary_up and not request.force and lag is None:
        return (
            "the standby's lag is unknown; annotate "
            f"{ANNOTATION_PROMOTE_FORCE}=<token> to promote anyway"
        )
    return None


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
    """The ``status.promotion`` of a promotion that starts now, with the spec's promotion
    settings recorded: they apply to this promotion, whatever the spec says later."""
    old: Side = observed.primary or "a"
    new: Side = "b" if old == "a" else "a"
    primary = observed.sides.a if old == "a" else observed.sides.b
    reachable = primary is not None and bool(primary.postgres.reachable)
    return PromotionStatus(
        token=request.token,
        force=request.force,
        trigger=request.trigger,
        type="Switchover" if reachable else "Failover",
        step=FENCING,
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
    )


def refused(
    request: PromotionRequest, observed: GoCDHAClusterStatus, reason: str, now: datetime
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
        message=reason,
    )


def with_history(status: GoCDHAClusterStatus, entry: PromotionStatus) -> GoCDHAClusterStatus:
    history = [entry, *status.history][:HISTORY_LENGTH]
    return status.model_copy(update={"history": history})


#: Test hook: called with the step name after it is recorded and again (with ``":done"``) after
#: it acted. Lets tests stop the operator at every point of a promotion.
StepHook = Callable[[str], Awaitable[None]]
