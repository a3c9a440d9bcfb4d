"""The promotion runner: carries the promotion recorded in status to its end, one method per step.

It runs as its own task beside the observation loop (``supervisor.py``), started whenever status
shows a promotion ``InProgress`` and no runner of this process is carrying it, so a promotion an
earlier operator process started is resumed. Each step is recorded in ``status.promotion.step``
before it acts and is safe to repeat.

Two rules decide what happens when a step fails (docs/operator.md, "Promotion"):

* **Point of no return.** From ``Promoting`` on (recorded before ``pg_promote`` is issued) the
  standby may already be a primary, so the promotion only rolls forward: every error is retried
  until the new primary is confirmed (not in recovery, on a later timeline than the old primary)
  and the roles have moved. The old side is never unfenced.
* **Before it**, transient errors are retried for ``step_retry_seconds``; then the promotion gives
  up. It unfences the old primary only after confirming that the standby is still in recovery;
  when that cannot be confirmed everything stays fenced, ``Promoting=False`` reason
  ``PromotionStuck``, a Warning Event says what to check, and the runner keeps re-checking.

A switchover stays a switchover: a failed connection to the old primary is retried, never turned
into a failover (which would skip the catch-up and lose acknowledged commits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import SLOT_PREFIX, Side
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.api.status import ConditionStatus, GoCDHAClusterStatus
from gocd_ha_operator.controller.config import ClusterRef, ClusterState, OperatorConfig
from gocd_ha_operator.controller.lease_watch import (
    LeaseHandoverError,
    await_holder_renewal,
    hand_over_primary_lease,
    return_primary_lease,
)
from gocd_ha_operator.controller.reconcile import apply_topology_change, reconcile_children
from gocd_ha_operator.controller.status import (
    StatusWriter,
    cluster_credentials,
    parse_fresh,
    post_event,
    post_transitions,
)
from gocd_ha_operator.controller.tls import ca_file, read_ca_certificate
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.postgres.client import (
    PostgresAuthFailed,
    PostgresClient,
    PostgresError,
    PrimaryNotStopped,
    ReplayTimeout,
    format_lsn,
    parse_lsn,
)
from gocd_ha_operator.rules import promotion as promo
from gocd_ha_operator.rules.promotion import Reason, Step

logger = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_SECONDS: Final = 120.0
STOP_TIMEOUT_SECONDS: Final = 90.0
#: How often a switchover checks whether the old primary has stopped (a TCP connection attempt:
#: on loopback or in-cluster about a millisecond).
STOP_POLL_SECONDS: Final = 0.02
#: Beyond the guard's retry period, how long the new holder's first renewal is waited for.
HOLDER_RENEWAL_SLACK_SECONDS: Final = 2.0
PROMOTE_WAIT_SECONDS: Final = 60
#: Back-off between attempts of a failing step: first, factor, ceiling.
RETRY_FIRST_SECONDS: Final = 0.5
RETRY_MAX_SECONDS: Final = 5.0
#: How often a stuck promotion re-checks whether it can be resolved.
STUCK_RECHECK_SECONDS: Final = 5.0


class Mark(StrEnum):
    """Points inside a step where the promotion hook is called too (after the named work): the
    benchmark times the write gap's parts with them (issue #16), a test may stop there."""

    SESSIONS_ENDED = "CatchingUp:sessions-ended"
    SCALED_DOWN = "StoppingOldPrimary:scaled-down"
    REFUSED = "StoppingOldPrimary:refused"
    REPLAYED = "StoppingOldPrimary:replayed"
    LEASE_WRITTEN = "StoppingOldPrimary:lease-written"
    HOLDER_RENEWED = "StoppingOldPrimary:holder-renewed"
    PROMOTED = "Promoting:promoted"
    PRIMARY_RECORDED = "SwitchingRoles:primary-recorded"
    CHILDREN_APPLIED = "SwitchingRoles:children-applied"
    SLOT_CREATED = "SwitchingRoles:slot-created"
    CHECKPOINTED = "SwitchingRoles:checkpointed"


class AbortPromotionError(Exception):
    """A step before the point of no return cannot complete (retrying would not help)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotConfirmedError(Exception):
    """The promoted side does not (yet) show that it is the new primary."""


class LeaseNotMovedError(Exception):
    """The primary Lease could not be handed to the new side (an API error, a conflict, a renewal
    by the old primary, no expiry in time). Reported as ``LeaseHeld`` and retried like a transient
    error: repeating ``StoppingOldPrimary`` is safe, and nothing is promoted without the Lease."""


class PromotionRunner:
    """Runs the promotion of one cluster that status records as ``InProgress``."""

    def __init__(
        self,
        config: OperatorConfig,
        ref: ClusterRef,
        state: ClusterState,
        writer: StatusWriter,
    ) -> None:
        self.config = config
        self.ref = ref
        self.state = state
        self.writer = writer
        self.started = time.monotonic()
        #: The body this runner last read or wrote, and the writer's count at that moment.
        self._last: tuple[dict[str, Any] | None, int] | None = None
        #: Fields a step's action leaves for the status write that records the next step.
        self._carry: dict[str, Any] = {}

    # --- the loop -------------------------------------------------------------------------------

    async def run(self, start: tuple[dict[str, Any], int] | None = None) -> None:
        """Until the promotion in status is no longer ``InProgress``. ``start``: the body the
        supervisor's status write that started the promotion left, and the writer's count right
        after it; used instead of a first read (a later write by this process makes the first
        status write read again, as after any step)."""
        first_failure: dict[str, float] = {}
        delay = RETRY_FIRST_SECONDS
        body: dict[str, Any] | None = None
        if start is not None and self.writer.unchanged_since(start[1]):
            # Otherwise a status write of this process came after that read — the last runner
            # may have recorded further steps, or the end, while it was in flight — and acting
            # on it would repeat a step long done: the loop reads the resource first.
            body, self._last = start[0], start
        while True:
            # After a step, the body its record returned is current (only this process writes
            # the promotion); after a failure, or at the start, read it.
            if body is None:
                body = await self._read()
            if body is None:
                return
            cluster = parse_fresh(body, self.state).cluster
            if cluster is None:
                # No spec ever parsed in this process: nothing can be built. Wait for one.
                await asyncio.sleep(STUCK_RECHECK_SECONDS)
                continue
            promotion = cluster.status.promotion
            if promotion.result != "InProgress":
                return
            step = Step(promotion.step) if promotion.step in promo.STEPS else Step.FENCING
            try:
                body = await self.perform(step, body, cluster)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is handled by one of the two rules
                body = None
                self._carry = {}
                if isinstance(exc, PostgresAuthFailed):
                    self.state.forget_credentials()  # read the Secrets again for the retry
                message = self._safe(exc)
                if promo.past_point_of_no_return(step):
                    await self.retrying(step, message)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_SECONDS)
                    continue
                since = first_failure.setdefault(step, time.monotonic())
                elapsed = time.monotonic() - since
                if isinstance(exc, LeaseNotMovedError):
                    await self.lease_held(step, message)
                if (
                    isinstance(exc, AbortPromotionError)
                    or elapsed >= self.config.step_retry_seconds
                ):
                    reason = exc.reason if isinstance(exc, AbortPromotionError) else None
                    if isinstance(exc, LeaseNotMovedError):
                        reason = Reason.LEASE_HELD
                    if await self.give_up(step, reason, message):
                        return
                    await asyncio.sleep(STUCK_RECHECK_SECONDS)
                    continue
                logger.warning(
                    "%s: step %s failed (%s); retrying for up to %gs",
                    self.ref,
                    step,
                    message,
                    self.config.step_retry_seconds - elapsed,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            if step == Step.DONE:
                return  # recorded as ended (or found ended by another): nothing to read again
            first_failure.pop(step, None)
            delay = RETRY_FIRST_SECONDS

    def _safe(self, exc: BaseException) -> str:
        """A message for status and Events: our errors carry no secret; anything else is named by
        its type only (an arbitrary library message could quote a connection string)."""
        if isinstance(
            exc, PostgresError | AbortPromotionError | NotConfirmedError | LeaseNotMovedError
        ):
            return str(exc)
        return f"{type(exc).__name__} (details in the operator log)"

    async def hook(self, point: str) -> None:
        if self.config.promotion_hook is not None:
            await self.config.promotion_hook(point)

    async def perform(
        self, step: Step, body: dict[str, Any], cluster: GoCDHACluster
    ) -> dict[str, Any] | None:
        """Act on the recorded ``step``, then record the next one; returns the resource as that
        record left it (``None`` when the promotion ended)."""
        await self.hook(step)
        # Not only API writes: a step acts on Postgres too. A replica past its renew deadline
        # (frozen, then continued) does not start one (docs/operator.md, "Several operator
        # replicas").
        self.config.kube.check_may_write()
        actions = {
            Step.FENCING: self.fence,
            Step.CATCHING_UP: self.catch_up,
            Step.STOPPING_OLD_PRIMARY: self.stop_old_primary,
            Step.PROMOTING: self.promote,
            Step.SWITCHING_ROLES: self.switch_roles,
            Step.REJOINING: self.rejoin,
            Step.DONE: self.finish,
        }
        await actions[step](body, cluster)
        if step == Step.DONE:
            return None
        await self.hook(f"{step}:done")
        return await self.record_next(cluster, step)

    # --- status plumbing -----------------------------------------------------------------------

    def _same_promotion(self, cluster: GoCDHACluster, status: GoCDHAClusterStatus) -> bool:
        mine, fresh = cluster.status.promotion, status.promotion
        return fresh.token == mine.token and fresh.result == "InProgress"

    async def record(
        self, cluster: GoCDHACluster, *, roles: tuple[Side, Side] | None = None, **update: Any
    ) -> tuple[dict[str, Any], GoCDHAClusterStatus]:
        """Change fields of ``status.promotion`` (only while it is still this promotion), and
        ``status.primary``/``standby`` to ``roles`` when given."""

        def change(_: dict[str, Any], status: GoCDHAClusterStatus) -> GoCDHAClusterStatus | None:
            if not self._same_promotion(cluster, status):
                return None
            promotion = status.promotion.model_copy(update=update)
            moved: dict[str, Any] = {}
            if roles is not None:
                moved = {"primary": roles[0], "standby": roles[1]}
            return status.model_copy(update={"promotion": promotion, **moved})

        return await self._update(change)

    async def _read(self) -> dict[str, Any] | None:
        """A fresh read of the resource, remembered as the base of this runner's next write."""
        writes = self.writer.writes
        body = await self.writer.fetch()
        self._last = (body, writes)
        return body

    async def _update(self, change: Any) -> tuple[dict[str, Any], GoCDHAClusterStatus]:
        """A status write based on the body this runner last read or wrote, unless this process
        wrote status since (then it reads again): the promotion's fields are this process's."""
        body, status = await self.writer.update(change, read=self._last)
        self._last = (body, self.writer.writes)
        return body, status

    async def record_next(self, cluster: GoCDHACluster, step: Step) -> dict[str, Any]:
        promotion = cluster.status.promotion
        following = self._next_step(cluster, step)
        carried, self._carry = self._carry, {}
        # SwitchingRoles' first act, ``status.primary`` moving (the new side is confirmed
        # promoted), is written with the record of that step: one status write less in the
        # writers' gap (issue #16); a restart repeats the step, which finds it moved.
        old, new = self.sides(cluster)
        roles = (new, old) if following == Step.SWITCHING_ROLES else None
        body, status = await self.record(cluster, roles=roles, **carried, step=following)
        self.config.kube.check_may_write()  # the record may have written nothing (not ours)
        if not self._same_promotion(cluster, status):
            return body  # ended meanwhile (not by this runner): nothing recorded, no Event
        post_event(
            body, "Normal", f"Promotion{following}", self._describe(following, promotion.type)
        )
        return body

    def _next_step(self, cluster: GoCDHACluster, step: Step) -> Step:
        index = promo.STEPS.index(step) + 1
        following = promo.STEPS[index]
        if following == Step.CATCHING_UP and cluster.status.promotion.type == "Failover":
            following = promo.STEPS[index + 1]
        # The rejoin mode recorded when the promotion started (older records: the spec).
        rejoin = cluster.status.promotion.rejoin or cluster.spec.failover.rejoin
        if following == Step.REJOINING and rejoin == "Manual":
            following = Step.DONE
        return following

    def _describe(self, step: Step, kind: str | None) -> str:
        return {
            Step.FENCING: "stopping GoCD on the old primary's side; Services stop selecting it",
            Step.CATCHING_UP: "waiting until the standby has replayed the old primary's last WAL",
            Step.STOPPING_OLD_PRIMARY: "stopping Postgres on the old primary's side",
            Step.PROMOTING: f"{kind}: promoting Postgres on the standby (point of no return)",
            Step.SWITCHING_ROLES: "the promoted side becomes primary; Services and roles follow",
            Step.REJOINING: "the old primary's side rejoins as a standby",
            Step.DONE: "recording the result",
        }[step]

    async def set_promoting(
        self,
        cluster: GoCDHACluster,
        value: ConditionStatus,
        reason: str,
        message: str,
        *,
        promotion_update: dict[str, Any] | None = None,
        finish: bool = False,
    ) -> tuple[dict[str, Any], list[cond.Transition], bool]:
        """Set the ``Promoting`` condition (and optionally finish the promotion into history);
        returns the body, the transitions and whether the reason or message changed (never when
        the promotion in status is no longer this one: then nothing is written)."""
        transitions: list[cond.Transition] = []
        changed = False

        def change(_: dict[str, Any], status: GoCDHAClusterStatus) -> GoCDHAClusterStatus | None:
            nonlocal changed
            if not self._same_promotion(cluster, status):
                return None
            if promotion_update is not None:
                promotion = status.promotion.model_copy(update=promotion_update)
                status = status.model_copy(update={"promotion": promotion})
                if finish:
                    status = promo.with_history(status, promotion)
            before = cond.get_condition(status.conditions, cond.PROMOTING)
            changed = before is None or (before.reason, before.message) != (reason, message)
            conditions, transition = cond.set_condition(
                status.conditions,
                type=cond.PROMOTING,
                status=value,
                reason=reason,
                message=message,
                observed_generation=cluster.metadata.generation,
                now=self.config.clock(),
            )
            if transition is not None:
                transitions.append(transition)
            return status.model_copy(update={"conditions": conditions})

        # Based on the body this runner last read or wrote (no GET unless the supervisor wrote
        # status since): ``Done`` after an operator restart is one patch.
        body, _ = await self._update(change)
        post_transitions(body, transitions)
        return body, transitions, changed

    async def retrying(self, step: Step, message: str) -> None:
        """Past the point of no return: say so, and go on (best effort: the write may fail too)."""
        logger.warning(
            "%s: step %s failed (%s); retrying, never rolling back", self.ref, step, message
        )
        body = await self._read()
        if body is None:
            return
        cluster = parse_fresh(body, self.state).cluster
        if cluster is None:
            return
        text = f"retrying {step} (past the point of no return, never rolled back): {message}"
        try:
            body, _, changed = await self.set_promoting(cluster, "True", "Retrying", text)
        except Exception:  # the API may be what fails; the retry goes on regardless
            logger.exception("%s: could not record the retry", self.ref)
            return
        if changed:
            post_event(body, "Warning", "PromotionRetrying", text)

    async def lease_held(self, step: Step, message: str) -> None:
        """Before the point of no return, the Lease did not move: ``Promoting=True`` reason
        ``LeaseHeld`` and a Warning Event of that reason (once per distinct message)."""
        body = await self._read()
        cluster = parse_fresh(body, self.state).cluster if body is not None else None
        if cluster is None:
            return
        text = f"retrying {step}: {message}"
        try:
            body, _, changed = await self.set_promoting(cluster, "True", Reason.LEASE_HELD, text)
        except Exception:  # the API may be what fails; the retry goes on regardless
            logger.exception("%s: could not record that the Lease is held", self.ref)
            return
        if changed:
            post_event(body, "Warning", Reason.LEASE_HELD, text)

    # --- I/O helpers -----------------------------------------------------------------------------

    async def credentials(self, cluster: GoCDHACluster) -> ClusterCredentials:
        """Remembered per cluster (``ClusterState.credentials``): a step reads no Secret."""
        credentials = await cluster_credentials(self.config, self.state, cluster)
        if credentials is None:
            raise RuntimeError("the cluster's credential Secrets are missing")
        return credentials

    async def client(self, cluster: GoCDHACluster, side: Side) -> PostgresClient:
        credentials = await self.credentials(cluster)
        # Remembered per cluster like the credentials (the supervisor refreshes it): a step reads
        # no Secret (issue #16).
        ca_pem = self.state.ca_pem or await asyncio.to_thread(
            read_ca_certificate, self.config.kube, cluster
        )
        if ca_pem is None:
            raise RuntimeError("the cluster's CA certificate Secret is missing")
        self.state.ca_pem = ca_pem
        return PostgresClient.for_service(
            cluster.namespace,
            ChildNames(cluster.name).postgres_instance_service(side),
            password=credentials.operator_password,
            ca_file=str(ca_file(ca_pem)),
            overrides=self.config.endpoints,
        )

    async def apply_step(self, body: dict[str, Any], cluster: GoCDHACluster, step: Step) -> None:
        """Apply what ``step`` changes: the children whose built form differs between the
        topology of the step before and ``cluster``'s (``topology_of``)."""
        credentials = await self.credentials(cluster)
        await self._apply_locked(
            apply_topology_change,
            body,
            cluster,
            before=promo.topology_before(cluster, step),
            after=promo.topology_of(cluster),
            credentials=credentials,
        )

    async def apply(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        """Apply every child as ``cluster``'s status implies (``topology_of``)."""
        await self._apply_locked(
            reconcile_children, body, cluster, topology=promo.topology_of(cluster)
        )

    async def _apply_locked(
        self,
        apply_fn: Callable[..., object],
        body: dict[str, Any],
        cluster: GoCDHACluster,
        **kwargs: Any,
    ) -> None:
        """``apply_fn`` (``reconcile_children`` or ``apply_topology_change``) in a thread, under
        the apply lock, with this operator's image and namespace."""
        async with self.state.apply_lock:
            await asyncio.to_thread(
                apply_fn,
                self.config.kube,
                body,
                cluster,
                operator_image=self.config.operator_image,
                operator_namespace=self.config.operator_namespace,
                **kwargs,
            )

    @staticmethod
    def sides(cluster: GoCDHACluster) -> tuple[Side, Side]:
        promotion = cluster.status.promotion
        return promotion.from_side or "a", promotion.to_side or "b"

    # --- the steps -------------------------------------------------------------------------------

    async def fence(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        """The old primary's GoCD server stops; no role Service selects its side."""
        await self.apply_step(body, cluster, Step.FENCING)

    async def catch_up(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        """Switchover: checkpoint the old primary, end its client sessions, record its LSN and
        wait until the standby has replayed it. A refused connection is retried (never a
        failover).

        The checkpoint comes before the sessions end (issue #16): it only makes the shutdown
        checkpoint of ``StoppingOldPrimary`` short, so it need not be taken while writes are
        already refused; the LSN waited for is read after the sessions ended, and the clean
        shutdown that follows sends whatever was committed after it. The LSN is recorded while
        the standby replays (a repeated step reads a new one, never a lower one)."""
        old, new = self.sides(cluster)
        recorded = cluster.status.promotion.lsn
        target = await self.client(cluster, new)
        recording: asyncio.Task[Any] | None = None

        async def old_primary_position() -> int:
            nonlocal recording
            source = await self.client(cluster, old)
            await source.checkpoint()
            _ended, lsn = await source.end_client_sessions_then_lsn()
            await self.hook(Mark.SESSIONS_ENDED)
            recording = asyncio.create_task(self.record(cluster, lsn=format_lsn(lsn)))
            return lsn

        # The old primary's work runs while the standby's connection is opened (issue #16).
        lsn: int | asyncio.Task[int] = (
            parse_lsn(recorded)
            if recorded is not None
            else asyncio.create_task(old_primary_position())
        )
        reading = lsn if isinstance(lsn, asyncio.Task) else None
        try:
            await target.wait_for_replay(lsn, timeout=CATCH_UP_TIMEOUT_SECONDS)
        except ReplayTimeout as exc:
            raise AbortPromotionError(
                Reason.SWITCHOVER_FAILED, f"side {new} did not catch up: {exc}"
            ) from None
        finally:
            # Never left halfway: the status writer counts the writes in flight. An error of
            # either task is retrieved here and raised below unless the wait failed first; the
            # reading first, as it starts the recording.
            await self._settle(reading)
            await self._settle(recording)
        if reading is not None:
            await reading  # its error, if it failed, fails the step
        if recording is not None:
            await recording
        self._carry["rpo_bytes"] = 0  # written with the next step

    @staticmethod
    async def _settle(task: asyncio.Task[Any] | None) -> None:
        """Until ``task`` (if any) has ended; its error retrieved (the caller raises it)."""
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()

    async def stop_old_primary(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        """The old primary is stopped, then (issue #12) the new side takes the Lease."""
        await self._stop_old_primary(body, cluster)
        await self.take_primary_lease(cluster)

    async def _stop_old_primary(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        """The old primary's StatefulSet goes to 0.

        Switchover: wait until it is down (it refuses connections and the standby no longer
        streams from it), then until the standby has replayed everything it received: a clean
        shutdown sends the last WAL to a streaming standby, commits of sessions that could not be
        ended (a superuser's) included. Failover: re-check the lag gate with what the standby
        reports now."""
        old, new = self.sides(cluster)
        await self.apply_step(body, cluster, Step.STOPPING_OLD_PRIMARY)
        await self.hook(Mark.SCALED_DOWN)
        promotion = cluster.status.promotion
        if promotion.type == "Failover":
            lag = cluster.status.replication.lag_bytes
            gate = promo.lag_refusal(
                cluster, lag if lag is not None else promotion.rpo_bytes, force=promotion.force
            )
            if gate is not None:
                raise AbortPromotionError(*gate)
            return
        source = await self.client(cluster, old)
        target = await self.client(cluster, new)
        refused = False

        async def refuses() -> bool:
            # A TCP probe, not an observation: while it shuts down the instance still accepts
            # connections (and refuses them as "shutting down"), so only a closed port counts.
            nonlocal refused
            if await source.refuses_connections():
                if not refused:
                    refused = True
                    await self.hook(Mark.REFUSED)
                return True
            return False

        try:
            # A refused connection alone does not prove it stopped (the network may be what
            # fails): the standby must have lost its stream from it too; what it received then
            # is final, and is replayed before anything moves.
            final = await target.replay_when_primary_stopped(
                refuses,
                poll=STOP_POLL_SECONDS,
                stop_timeout=STOP_TIMEOUT_SECONDS,
                replay_timeout=CATCH_UP_TIMEOUT_SECONDS,
            )
        except PrimaryNotStopped:
            raise AbortPromotionError(
                Reason.SWITCHOVER_FAILED,
                f"Postgres on side {old} did not stop within {STOP_TIMEOUT_SECONDS:g}s",
            ) from None
        except ReplayTimeout as exc:
            raise AbortPromotionError(
                Reason.SWITCHOVER_FAILED, f"side {new} did not replay what it received: {exc}"
            ) from None
        if not final.in_recovery:
            raise RuntimeError(f"side {new} is not a standby")
        await self.hook(Mark.REPLAYED)

    async def take_primary_lease(self, cluster: GoCDHACluster) -> None:
        """Issue #12, the last act before the point of no return: the new side holds the Lease
        before it is promoted. A failover waits until the old primary's Lease has expired; a
        renewal it sees (the old primary is alive and its guard holds it), a conflict or an API
        error fails this attempt with :class:`LeaseNotMovedError`: reported as ``LeaseHeld``, the
        step is retried (``step_retry_seconds``), then the promotion fails with that reason."""
        _old, new = self.sides(cluster)
        failover = cluster.status.promotion.type == "Failover"
        try:
            handed = await hand_over_primary_lease(
                self.config.kube,
                cluster,
                new,
                failover=failover,
                memo=self.state.lease_memo,
                clock=self.config.clock,
            )
        except LeaseHandoverError as exc:
            raise LeaseNotMovedError(
                f"the primary Lease could not be handed to side {new}: {exc}"
            ) from None
        await self.hook(Mark.LEASE_WRITTEN)
        promoting = cond.get_condition(cluster.status.conditions, cond.PROMOTING)
        if promoting is not None and promoting.reason == Reason.LEASE_HELD:
            # Moved after all: the condition no longer says it is held.
            promotion = cluster.status.promotion
            await self.set_promoting(
                cluster, "True", "Promoting", f"{promotion.type} to side {new}"
            )
        # The new side's guard renews as the holder before its Postgres turns primary, so it
        # judges the new primary by a deadline it extended (a slow first renewal after the
        # promotion then fences nothing). Bounded: a guard that does not renew in time is no
        # reason to stop; the promotion goes on as it would have without waiting.
        retry = cluster.spec.failover.lease_timings.retry_period
        if not await await_holder_renewal(
            self.config.kube, cluster, handed, timeout=retry + HOLDER_RENEWAL_SLACK_SECONDS
        ):
            logger.warning(
                "%s: the guard of side %s did not renew the Lease within %ss of the hand-over; "
                "promoting all the same",
                self.ref,
                new,
                retry + HOLDER_RENEWAL_SLACK_SECONDS,
            )
        await self.hook(Mark.HOLDER_RENEWED)

    async def promote(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        """Point of no return: ``pg_promote`` (idempotent), then confirm — not in recovery, on a
        later timeline than the old primary.

        The confirmation is the promotion's own: ``PostgresClient.promote`` returns only once the
        instance answered out of recovery, with the timeline it then writes on (no second
        connection). What only the old primary's rejoin needs — its slot, the checkpoint — is
        done in ``SwitchingRoles`` once the Services point at the new primary (issue #16): the
        writers wait for nothing but the promotion."""
        _old, new = self.sides(cluster)
        client = await self.client(cluster, new)
        result = await client.promote(wait_seconds=PROMOTE_WAIT_SECONDS, checkpoint=False)
        await self.hook(Mark.PROMOTED)
        if result.timeline is None:
            raise NotConfirmedError(f"side {new} reported no timeline")
        before = cluster.status.promotion.from_timeline
        if before is not None and result.timeline <= before:
            raise NotConfirmedError(
                f"side {new} is on timeline {result.timeline}, not above {before}"
            )
        # Written with the record of the next step (issue #16). A restart before it repeats
        # ``pg_promote``, a no-op then: its duration is not the promotion's, so only the call
        # that promoted records ``promoteSeconds`` (after such a restart it stays unknown).
        self._carry["message"] = f"side {new} promoted to timeline {result.timeline}"
        if result.promoted:
            self._carry["promote_seconds"] = round(result.duration_seconds, 3)

    async def switch_roles(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        """``status.primary`` moves first (the topology follows it: the record of this step
        moved it, ``record_next``; a record that did not, by an older operator, is completed
        here), then the children; then what the old side's rejoin needs, out of the writers' way
        (issue #16): its replication slot on the new primary (slots are not replicated) and the
        post-promotion checkpoint. A restart repeats the whole step (every part idempotent), and
        the old side starts only in the next one, so it never starts without its slot."""
        old, new = self.sides(cluster)
        if (cluster.status.primary, cluster.status.standby) != (new, old):

            def change(
                _: dict[str, Any], status: GoCDHAClusterStatus
            ) -> GoCDHAClusterStatus | None:
                if not self._same_promotion(cluster, status):
                    return None
                return status.model_copy(update={"primary": new, "standby": old})

            body, status = await self._update(change)
            cluster = cluster.model_copy(update={"status": status})
            await self.hook(Mark.PRIMARY_RECORDED)
        await self.apply_step(body, cluster, Step.SWITCHING_ROLES)
        await self.hook(Mark.CHILDREN_APPLIED)
        await (await self.client(cluster, new)).create_slot_if_missing(f"{SLOT_PREFIX}{old}")
        await self.hook(Mark.SLOT_CREATED)
        await self.checkpoint_new_primary(cluster, new)
        await self.hook(Mark.CHECKPOINTED)

    async def checkpoint_new_primary(self, cluster: GoCDHACluster, new: Side) -> None:
        """The post-promotion ``CHECKPOINT`` (the new timeline in the control file, which the old
        primary's ``pg_rewind`` reads), after the Services moved: clients write meanwhile, and
        the old side starts only in the next step. Best effort, as it always was: a failure is
        logged and the rejoin goes on (the promotion itself is confirmed)."""
        try:
            await (await self.client(cluster, new)).checkpoint()
        except PostgresError as exc:
            logger.warning(
                "%s: the checkpoint after the promotion of side %s failed (%s)",
                self.ref,
                new,
                self._safe(exc),
            )

    async def rejoin(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        await self.apply_step(body, cluster, Step.REJOINING)

    async def finish(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        promotion = cluster.status.promotion
        now = self.config.clock()
        message = f"side {promotion.to_side} is primary"
        body, _, ended_here = await self.set_promoting(
            cluster,
            "False",
            "Promoted",
            message,
            promotion_update={
                "result": "Succeeded",
                "finished_at": cond.rfc3339(now),
                "message": message,
            },
            finish=True,
        )
        if not ended_here:
            return  # it had ended already (another runner's record): its Event is posted
        rpo = promotion.rpo_bytes if promotion.rpo_bytes is not None else "unknown"
        post_event(
            body,
            "Normal",
            "PromotionSucceeded",
            f"{promotion.type}: side {promotion.to_side} is primary (RPO {rpo} bytes, "
            f"{time.monotonic() - self.started:.1f}s in this process)",
        )

    # --- giving up (before the point of no return only) -------------------------------------------

    async def give_up(self, step: Step, reason: Reason | None, why: str) -> bool:
        """End the promotion as Failed and unfence the old primary — only after confirming that
        the standby is still in recovery. Returns False (everything stays fenced, ``Promoting``
        reason ``PromotionStuck``) when that cannot be confirmed."""
        body = await self._read()
        if body is None:
            return True
        cluster = parse_fresh(body, self.state).cluster
        if cluster is None or cluster.status.promotion.result != "InProgress":
            return True
        promotion = cluster.status.promotion
        old, new = self.sides(cluster)
        try:
            standby = await (await self.client(cluster, new)).observe()
            confirmed, detail = bool(standby.reachable and standby.in_recovery), standby.error
            if standby.reachable and not standby.in_recovery:
                detail = "it is not in recovery"
        except Exception as exc:  # unconfirmed, whatever the cause
            confirmed, detail = False, self._safe(exc)
        if not confirmed:
            text = (
                f"{promotion.type} stopped at {step}: {why}. Side {old} stays fenced because side "
                f"{new} could not be confirmed to be still a standby ({detail}). Check that "
                f"Postgres on side {new} is in recovery (SELECT pg_is_in_recovery()) and that side "
                f"{old} has not been promoted elsewhere; the operator re-checks every "
                f"{STUCK_RECHECK_SECONDS:g}s and unfences side {old} once side {new} answers as a "
                "standby."
            )
            body, _, changed = await self.set_promoting(
                cluster, "False", Reason.PROMOTION_STUCK, text
            )
            if changed:
                post_event(body, "Warning", Reason.PROMOTION_STUCK, text)
            return False
        if reason is None:
            reason = (
                Reason.SWITCHOVER_FAILED
                if promotion.type == "Switchover"
                else Reason.FAILOVER_FAILED
            )
        now = self.config.clock()
        text = f"{promotion.type} failed at {step}: {why}; side {old} serves again"
        body, _, _ = await self.set_promoting(
            cluster,
            "False",
            "PromotionFailed",
            text,
            promotion_update={
                "result": "Failed",
                "reason": reason,
                "finished_at": cond.rfc3339(now),
                "message": text,
            },
            finish=True,
        )
        post_event(body, "Warning", "PromotionFailed", text)
        await self.unfence()
        return True

    async def unfence(self) -> None:
        """Apply the children as the failed promotion's status implies (nothing fenced). Retried
        until it succeeds; the reconcile of an operator restart does the same."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                body = await self.writer.fetch()
                if body is None:
                    return
                cluster = parse_fresh(body, self.state).cluster
                if cluster is None or cluster.status.promotion.result == "InProgress":
                    return
                old = cluster.status.promotion.from_side
                if old is not None and cluster.status.primary in (None, old):
                    # Issue #12: the old primary serves again, so it holds the Lease again.
                    await return_primary_lease(self.config.kube, cluster, old, self.config.clock)
                await self.apply(body, cluster)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("%s: unfencing failed (%s); retrying", self.ref, self._safe(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
