"""The primary Lease's rules: when a guard renews or fences, when the operator may promote.

Pure functions, clock passed in. The safety argument (docs/operator.md, "What fences a primary"):

* the guard measures its **renew deadline** on its own monotonic clock from the *start* of its
  last successful renewal ``t0``, and stops its Postgres ``FENCE_LEAD_SECONDS`` before
  ``t0 + renewDeadline``: no write is acknowledged after that deadline;
* the operator measures **expiry** on its own clock from the moment ``o`` it first saw the Lease
  record as it is now (``o >= t0``: the record cannot be read before it was written) and waits
  ``leaseDuration + margin``;
* ``renewDeadline < leaseDuration`` therefore puts the old primary's last write strictly before
  the earliest promotion, whatever the wall clocks of the two machines say; and the operator takes
  the Lease with a compare-and-swap, so a renewal it did not see makes the takeover fail instead
  of creating a second holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import (
    FENCE_LEAD_SECONDS,
    LEASE_EXPIRY_MARGIN_SECONDS,
    ROLE_PRIMARY,
    SIDES,
    Side,
)
from gocd_ha_operator.api.status import LeaseStatus

#: Reason of ``FailoverPossible=False`` while the old primary's Lease is valid.
LEASE_HELD: Final = "LeaseHeld"


def primary_lease_name(cluster: str) -> str:
    return f"{cluster}-primary"


def holder_identity(cluster: str, side: Side) -> str:
    """The holder a side's guard writes: its StatefulSet's name (``<name>-pg-<side>``)."""
    return f"{cluster}-pg-{side}"


def side_of_holder(cluster: str, holder: str | None) -> Side | None:
    for side in SIDES:
        if holder == holder_identity(cluster, side):
            return side
    return None


# --- The guard -----------------------------------------------------------------------------------


class LocalPostgres(StrEnum):
    """What the guard sees of the Postgres in its own pod."""

    #: Answers and is not in recovery: accepts writes.
    PRIMARY = "Primary"
    #: Answers and is in recovery: accepts no write.
    STANDBY = "Standby"
    #: Does not answer (starting, waiting for a grant, stopped, crashed).
    DOWN = "Down"


@dataclass(frozen=True)
class GuardView:
    """One observation of the guard; times are on its monotonic clock."""

    identity: str
    postgres: LocalPostgres
    #: The Lease's holder as last read successfully (``None``: never read, or empty).
    lease_holder: str | None
    #: Monotonic time until which this side may act as primary (``t0 + renewDeadline``).
    deadline: float
    now: float
    #: Whether a Postgres that does not answer may be a primary: it was last seen as one, or it
    #: was granted a start as one (a standby that is starting up, or catching up, is not).
    may_be_primary: bool = True


def must_fence(view: GuardView) -> bool:
    """Whether Postgres must be stopped (and the start grant withdrawn) now.

    A Postgres that does not answer counts as a primary when it may be one: it may be up but
    unable to answer the guard (connection slots full) and still accept writes. A confirmed
    standby, or one that never was a primary or granted a start, is left alone.
    """
    if view.postgres == LocalPostgres.STANDBY:
        return False
    if view.postgres == LocalPostgres.DOWN and not view.may_be_primary:
        return False
    if view.now >= fence_time(view.deadline):
        return True
    # Handed over (switchover) or taken (failover): this side must not serve writes any more.
    return view.postgres == LocalPostgres.PRIMARY and view.lease_holder not in (
        None,
        view.identity,
    )


def may_renew(
    *,
    identity: str,
    lease_holder: str | None,
    postgres: LocalPostgres,
    configured_role: str | None,
    startup_grace_open: bool,
) -> bool:
    """Whether the guard writes a renewal after reading the Lease as ``lease_holder``.

    A guard never takes a Lease that names the other side (only the operator assigns it); it
    renews its own while its Postgres is up (a standby the operator is about to promote keeps the
    Lease it was handed), and while a primary side's Postgres is starting — but only within the
    start grace, so a primary that cannot start does not hold the Lease (and block failover)
    forever.
    """
    if lease_holder != identity:
        return False
    if postgres in (LocalPostgres.PRIMARY, LocalPostgres.STANDBY):
        return True
    return configured_role == ROLE_PRIMARY and startup_grace_open


def renewed_deadline(attempt_started: float, renew_deadline_seconds: float) -> float:
    """The new deadline after a renewal that *started* at ``attempt_started`` succeeded: counted
    from the start, because the API server may have written it at any moment of the request."""
    return attempt_started + renew_deadline_seconds


def fence_time(deadline: float) -> float:
    return deadline - FENCE_LEAD_SECONDS


# --- The operator --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseView:
    """The primary Lease as the operator judges it."""

    holder: str | None
    renew_time: datetime | None
    duration_seconds: int
    #: When this operator process first saw the record as it is now (its own clock).
    first_seen: datetime
    expires_at: datetime

    def valid(self, now: datetime) -> bool:
        return self.holder is not None and now < self.expires_at


def lease_view(
    *,
    holder: str | None,
    renew_time: datetime | None,
    duration_seconds: int,
    first_seen: datetime,
    margin_seconds: float = LEASE_EXPIRY_MARGIN_SECONDS,
) -> LeaseView:
    """Expiry counted from the later of the holder's stamp and this operator's first sight of the
    record: a guard clock ahead can only make it later, a guard clock behind cannot make it
    earlier than ``first_seen + duration``."""
    start = max(first_seen, renew_time) if renew_time is not None else first_seen
    return LeaseView(
        holder=holder,
        renew_time=renew_time,
        duration_seconds=duration_seconds,
        first_seen=first_seen,
        expires_at=start + timedelta(seconds=duration_seconds + margin_seconds),
    )


def _what_it_says(lease: LeaseStatus) -> tuple[object, ...]:
    return (lease.holder, lease.holder_side, lease.timeline, lease.valid, lease.message)


def lease_status_to_record(
    previous: LeaseStatus, observed: LeaseStatus, *, now: datetime, precise: bool
) -> LeaseStatus:
    """What ``status.lease`` records from this observation.

    A guard renews every ``retryPeriodSeconds``, so ``renewTime`` and ``expiresAt`` move all the
    time; writing them each observation would patch an idle cluster's status every few seconds.
    They are therefore carried over from ``previous`` while nothing else about the Lease changed
    (holder, side, timeline, validity, message) and the recorded expiry is still ahead: the
    recorded ``expiresAt`` stays a time until which the Lease is valid at least (renewals only
    push the real expiry later), refreshed about once per Lease duration. ``precise`` (the primary
    is not available, or a promotion runs: the moments the expiry decides something) records
    every observation as read.
    """
    if precise or previous.expires_at is None or previous.renew_time is None:
        return observed
    same = _what_it_says(previous) == _what_it_says(observed)
    try:
        ahead = cond.parse_rfc3339(previous.expires_at) > now
    except ValueError:
        ahead = False
    if not (same and ahead):
        return observed
    return observed.model_copy(
        update={"renew_time": previous.renew_time, "expires_at": previous.expires_at}
    )


def failover_blocked(
    cluster: str, view: LeaseView | None, old_primary: Side, now: datetime
) -> str | None:
    """Why a failover (the old primary does not answer the operator) must not promote now, or
    ``None``. An unknown Lease blocks: the operator cannot prove the old primary stopped."""
    if view is None:
        return "the primary Lease could not be read: the old primary may still accept writes"
    if view.holder != holder_identity(cluster, old_primary):
        return None  # already handed over (a promotion in progress or finished)
    if view.valid(now):
        return (
            f"the primary Lease is held by {view.holder} until "
            f"{view.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}: its guard still renews, so the "
            "old primary may accept writes"
        )
    return None


def candidate_may_take(
    *, holder: str | None, observed_at: float, duration: float, now: float
) -> bool:
    """Operator leader election: a Lease with no holder may be taken at once; a held one only
    when its record has not changed for ``duration`` since this candidate first saw it (its own
    monotonic clock: the holder's stamps are never compared with this machine's clock)."""
    return holder is None or now >= observed_at + duration
