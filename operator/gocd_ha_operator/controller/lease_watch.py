"""The operator's side of the primary Lease: observe it into status, hand it over in a promotion.

Kept apart from the supervisor so that the promotion loop only calls these functions:

* :func:`observe_primary_lease` after each observation: ``status.lease`` and, while the primary is
  unavailable but its Lease is still valid, ``FailoverPossible=False`` with reason ``LeaseHeld``
  (automatic failover waits for ``FailoverPossible``, so it waits for the expiry);
* :func:`hand_over_primary_lease` at the end of ``StoppingOldPrimary``, *before* ``pg_promote``: a
  switchover (old primary stopped) writes the new holder at once, in one request; a failover
  first waits until the Lease has expired on this operator's clock and aborts if it sees it
  renewed (the old primary is alive), and writes with a compare-and-swap;
* :func:`await_holder_renewal` right after the hand-over: until the new holder's guard has
  renewed it once (bounded), so that guard never judges its new primary by a stale deadline;
* :func:`return_primary_lease` when a promotion fails before the roles switched: the old primary
  serves again, so it must hold the Lease again (its guard would stop it otherwise).

Expiry is judged from when this process *first saw* the current record (kept in the cluster's
memo), never from the holder's wall clock alone: see :mod:`rules.lease`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import LEASE_EXPIRY_MARGIN_SECONDS, Side
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.api.status import GoCDHAClusterStatus, LeaseStatus
from gocd_ha_operator.controller.leader import LeadershipLostError
from gocd_ha_operator.kube.apply import KubeApiError, KubeClient
from gocd_ha_operator.kube.lease import (
    LeaseConflictError,
    LeaseRecord,
    format_microtime,
    get_lease,
    hand_lease_to,
    write_lease,
)
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.rules import lease as rules

MEMO_KEY: Final = "primary_lease_seen"
POLL_SECONDS: Final = 0.5
#: The shortest pause between two reads of a Lease that is about to expire.
EXPIRY_POLL_FLOOR_SECONDS: Final = 0.01
#: How often the new holder's first renewal is looked for after a hand-over. It sits in a
#: switchover's write gap (issue #16): the guard renews some 20-40 ms after the hand-over, so a
#: coarser poll adds up to its period for nothing; one read is one GET (the wait is bounded).
RENEWAL_POLL_SECONDS: Final = 0.01
#: Extra seconds a failover waits beyond the Lease's own expiry before it gives up.
TAKEOVER_SLACK_SECONDS: Final = 10.0


class LeaseHandoverError(Exception):
    """The Lease could not be moved to the new primary: the promotion must not continue."""


@dataclass(frozen=True)
class _Seen:
    key: tuple[str | None, str | None]
    first_seen: datetime


def judge(
    record: LeaseRecord, memo: MutableMapping[str, Any], now: datetime, default_duration: int
) -> rules.LeaseView:
    """The operator's view of ``record``; remembers when this exact record was first seen."""
    key = (record.holder, record.resource_version)
    seen: _Seen | None = memo.get(MEMO_KEY)
    if seen is None or seen.key != key:
        seen = _Seen(key, now)
        memo[MEMO_KEY] = seen
    return rules.lease_view(
        holder=record.holder,
        renew_time=record.renew_time,
        duration_seconds=record.duration_seconds or default_duration,
        first_seen=seen.first_seen,
    )


@dataclass(frozen=True)
class LeaseObservation:
    """The primary Lease as read now: what status shows and the operator's judgement."""

    status: LeaseStatus
    view: rules.LeaseView | None
    missing: bool = False


async def read_primary_lease(
    kube: KubeClient,
    cluster: GoCDHACluster,
    memo: MutableMapping[str, Any],
    now: datetime,
    *,
    known: LeaseRecord | None = None,
) -> LeaseObservation:
    """Read ``<name>-primary`` (an unreadable Lease is an observation: it blocks failover).

    ``known``: the Lease as the reconcile created it just now, judged instead of read. Even a
    copy older than the Lease errs on the safe side: expiry is judged from first sight, so a
    record never seen before is valid for a whole duration from now (it blocks failover)."""
    name = ChildNames(cluster.name).primary_lease
    timings = cluster.spec.failover.lease_timings
    try:
        record = (
            known
            if known is not None and known.name == name and known.namespace == cluster.namespace
            else await asyncio.to_thread(get_lease, kube, cluster.namespace, name)
        )
    except Exception as exc:
        return LeaseObservation(LeaseStatus(message=f"cannot read Lease {name}: {exc}"[:300]), None)
    if record is None:
        return LeaseObservation(
            LeaseStatus(message=f"Lease {name} does not exist (yet)"), None, missing=True
        )
    view = judge(record, memo, now, timings.lease_duration)
    return LeaseObservation(
        LeaseStatus(
            holder=record.holder,
            holder_side=rules.side_of_holder(cluster.name, record.holder),
            renew_time=format_microtime(record.renew_time) if record.renew_time else None,
            timeline=record.timeline,
            expires_at=cond.rfc3339(view.expires_at),
            valid=view.valid(now),
        ),
        view,
    )


def apply_primary_lease(
    cluster: GoCDHACluster,
    before: GoCDHAClusterStatus,
    status: GoCDHAClusterStatus,
    transitions: list[cond.Transition],
    *,
    lease: LeaseObservation,
    now: datetime,
) -> GoCDHAClusterStatus:
    """``status`` with the Lease and, while the primary is unavailable but its Lease valid,
    ``FailoverPossible=False``/``LeaseHeld``. ``transitions`` is updated in place, relative to
    ``before`` (so a LeaseHeld that persists is not reported on every round)."""
    available = cond.get_condition(status.conditions, cond.PRIMARY_AVAILABLE)
    precise = (
        available is None or available.status != "True" or status.promotion.result == "InProgress"
    )
    recorded = rules.lease_status_to_record(before.lease, lease.status, now=now, precise=precise)
    status = status.model_copy(update={"lease": recorded})
    if available is None or available.status != "False" or lease.missing:
        return status
    primary: Side = status.primary or before.primary or "a"
    blocked = rules.failover_blocked(cluster.name, lease.view, primary, now)
    if blocked is None:
        return status
    previous = [c for c in before.conditions if c.type == cond.FAILOVER_POSSIBLE]
    updated, flip = cond.set_condition(
        previous,
        type=cond.FAILOVER_POSSIBLE,
        status="False",
        reason=rules.LEASE_HELD,
        message=blocked,
        observed_generation=cluster.metadata.generation,
        now=now,
    )
    conditions = [updated[0] if c.type == cond.FAILOVER_POSSIBLE else c for c in status.conditions]
    transitions[:] = [t for t in transitions if t.type != cond.FAILOVER_POSSIBLE]
    if flip is not None:
        transitions.append(flip)
    return status.model_copy(update={"conditions": conditions})


async def observe_primary_lease(
    kube: KubeClient,
    cluster: GoCDHACluster,
    status: GoCDHAClusterStatus,
    transitions: list[cond.Transition],
    *,
    memo: MutableMapping[str, Any],
    now: datetime,
) -> tuple[GoCDHAClusterStatus, list[cond.Transition]]:
    """Both steps at once (``cluster.status`` is the status before this observation)."""
    lease = await read_primary_lease(kube, cluster, memo, now)
    changed = list(transitions)
    result = apply_primary_lease(cluster, cluster.status, status, changed, lease=lease, now=now)
    return result, changed


def _write(
    kube: KubeClient, record: LeaseRecord, holder: str, duration: int, now: datetime
) -> LeaseRecord:
    return write_lease(kube, record, holder=holder, duration_seconds=duration, now=now)


def _write_failure(name: str, exc: Exception) -> LeaseHandoverError:
    """What a failed write of the Lease ``name`` is reported as. Named by its status only: the
    caller reports this message in status and Events."""
    if isinstance(exc, KubeApiError):
        return LeaseHandoverError(
            f"the API server refused the write of the Lease {name} (HTTP {exc.status} {exc.reason})"
        )
    return LeaseHandoverError(f"the Lease {name} could not be written ({type(exc).__name__})")


async def hand_over_primary_lease(
    kube: KubeClient,
    cluster: GoCDHACluster,
    to_side: Side,
    *,
    failover: bool,
    memo: MutableMapping[str, Any],
    clock: Callable[[], datetime],
) -> LeaseRecord:
    """Make ``to_side`` the holder (idempotent: a resumed promotion finds it done); returns the
    record as written (or as found, when it already named ``to_side``).

    A switchover (its old primary confirmed stopped) writes it in one request: a compare-and-swap
    that lost to the stopped side's last renewal would only be read and written again, so the
    read buys nothing. A failover reads, waits for expiry and compare-and-swaps."""
    name = ChildNames(cluster.name).primary_lease
    target = rules.holder_identity(cluster.name, to_side)
    timings = cluster.spec.failover.lease_timings
    if not failover:
        try:
            written = await asyncio.to_thread(
                hand_lease_to,
                kube,
                cluster.namespace,
                name,
                holder=target,
                duration_seconds=timings.lease_duration,
                now=clock(),
            )
        except LeadershipLostError:
            raise  # this replica may not write at all: not a fact about the Lease
        except Exception as exc:
            raise _write_failure(name, exc) from None
        if written is None:
            raise LeaseHandoverError(f"the Lease {name} does not exist: run the reconcile first")
        return written
    give_up = time.monotonic() + timings.lease_duration + LEASE_EXPIRY_MARGIN_SECONDS
    give_up += TAKEOVER_SLACK_SECONDS
    first_key: tuple[str | None, str | None] | None = None
    unreadable: str | None = None
    while True:
        if time.monotonic() > give_up:
            if unreadable is not None:
                raise LeaseHandoverError(f"the Lease {name} could not be read ({unreadable})")
            raise LeaseHandoverError(
                f"the Lease {name} did not expire within {timings.lease_duration}s: its holder "
                "keeps it, so the old primary may still accept writes"
            )
        try:
            record = await asyncio.to_thread(get_lease, kube, cluster.namespace, name)
        except Exception as exc:  # the API may come back within the bound
            unreadable = (
                f"HTTP {exc.status} {exc.reason}"
                if isinstance(exc, KubeApiError)
                else type(exc).__name__
            )
            await asyncio.sleep(POLL_SECONDS)
            continue
        unreadable = None
        if record is None:
            raise LeaseHandoverError(f"the Lease {name} does not exist: run the reconcile first")
        if record.holder == target:
            return record
        if failover:
            key = (record.holder, record.resource_version)
            if first_key is None:
                first_key = key
            elif key != first_key:
                raise LeaseHandoverError(
                    f"{record.holder} renewed the Lease {name} during the failover: the old "
                    "primary is alive and holds it"
                )
            view = judge(record, memo, clock(), timings.lease_duration)
            if view.valid(clock()):
                # Read again at the expiry, or sooner to see a renewal (the old primary is alive).
                left = (view.expires_at - clock()).total_seconds()
                await asyncio.sleep(min(POLL_SECONDS, max(EXPIRY_POLL_FLOOR_SECONDS, left)))
                continue
        try:
            return await asyncio.to_thread(
                _write, kube, record, target, timings.lease_duration, clock()
            )
        except LeaseConflictError:
            if failover:
                raise LeaseHandoverError(
                    f"the Lease {name} changed while taking it: the old primary renewed it"
                ) from None
            continue  # a switchover: the stopped side's guard wrote last; read again
        except LeadershipLostError:
            raise  # this replica may not write at all: not a fact about the Lease
        except Exception as exc:
            raise _write_failure(name, exc) from None


async def await_holder_renewal(
    kube: KubeClient, cluster: GoCDHACluster, handed: LeaseRecord, *, timeout: float
) -> bool:
    """After a hand-over, before ``pg_promote``: until the new holder's guard has renewed the
    Lease once (it moved past ``handed`` and still names that holder), at most ``timeout``.

    The guard judges a Postgres it sees turn primary by the deadline of its last renewal, giving
    the renewal that follows only a second (docs/operator.md, "What fences a primary"); a
    standby promoted before its guard ever renewed as the holder would be fenced whenever that
    renewal is slow. Returns whether the renewal was seen."""
    name = ChildNames(cluster.name).primary_lease
    give_up = time.monotonic() + timeout
    while True:
        try:
            record = await asyncio.to_thread(get_lease, kube, cluster.namespace, name)
        except Exception:  # the API may come back within the bound
            record = None
        if (
            record is not None
            and record.holder == handed.holder
            and record.resource_version != handed.resource_version
        ):
            return True
        if time.monotonic() >= give_up:
            return False
        await asyncio.sleep(RENEWAL_POLL_SECONDS)


async def return_primary_lease(
    kube: KubeClient, cluster: GoCDHACluster, side: Side, clock: Callable[[], datetime]
) -> None:
    """Best effort: give the Lease back to ``side`` after a failed promotion."""
    name = ChildNames(cluster.name).primary_lease
    target = rules.holder_identity(cluster.name, side)
    for _ in range(5):
        try:
            record = await asyncio.to_thread(get_lease, kube, cluster.namespace, name)
            if record is None or record.holder == target:
                return
            duration = cluster.spec.failover.lease_timings.lease_duration
            await asyncio.to_thread(_write, kube, record, target, duration, clock())
            return
        except LeaseConflictError:
            continue
        except Exception:  # reported by the caller's Event; the next reconcile does not fix it
            await asyncio.sleep(POLL_SECONDS)
