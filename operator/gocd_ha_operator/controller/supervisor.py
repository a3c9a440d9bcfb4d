"""The per-cluster supervisor: an observation loop, and a promotion runner beside it.

One loop per ``GoCDHACluster`` (a kopf daemon) does everything that happens over time:

* read the resource fresh from the API (never a stale copy after its own writes), and its
  credentials from their Secrets (never from another handler's memory);
* observe the cluster and write what changed in status, ``Ready`` included: the reconcile's outcome
  (an invalid spec, a missing Secret, a conflicting child) is put into ``Ready`` here, so the
  supervisor is the only writer of conditions;
* decide on promotion requests (annotations, exactly once per value; automatic failover): refuse
  at once what cannot be honoured — a request made while a promotion runs included — or start one;
* keep a :class:`~gocd_ha_operator.controller.runner.PromotionRunner` task running while status
  shows a promotion ``InProgress``, also one an earlier operator process started.

Nothing stops the loop but the daemon's end: an invalid spec (the last valid one is used), missing
credentials, a failing API or Postgres are observations, and a running promotion goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any, Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.controller.config import (
    ClusterRef,
    ClusterState,
    OperatorConfig,
    ReconcileProblem,
)
from gocd_ha_operator.controller.lease_watch import apply_primary_lease, read_primary_lease
from gocd_ha_operator.controller.observe import ClusterObservation, compute_status, observe_cluster
from gocd_ha_operator.controller.reconcile import MissingSecretError, never_reconciled
from gocd_ha_operator.controller.rollout import (
    RolloutOutcome,
    apply_pins,
    apply_rollout,
    read_live_pins,
)
from gocd_ha_operator.controller.runner import PromotionRunner
from gocd_ha_operator.controller.status import (
    StatusWriter,
    check_user_token,
    cluster_credentials,
    ensure_conditions,
    parse_fresh,
    post_event,
    post_transitions,
)
from gocd_ha_operator.controller.tls import check_certificates
from gocd_ha_operator.kube.apply import KubeApiError, NotOwnedError
from gocd_ha_operator.rules import promotion as promo
from gocd_ha_operator.rules.promotion import Reason
from gocd_ha_operator.rules.topology import Topology

logger = logging.getLogger(__name__)

#: Status fields the observation never changes: the promotion's (runner and request handling).
#: ``primary``/``standby`` follow the topology, which an observation is only applied under.
PROMOTION_FIELDS: Final = ("promotion", "history", "handled_tokens")


class Supervisor:
    """The observation loop's work for one cluster, and the owner of its runner task."""

    def __init__(self, config: OperatorConfig, ref: ClusterRef) -> None:
        self.config = config
        self.ref = ref
        self.state: ClusterState = config.state(ref)
        self.writer = StatusWriter(config, ref, self.state)

    # --- the runner -----------------------------------------------------------------------------

    def ensure_runner(self, start: tuple[dict[str, Any], int] | None = None) -> None:
        """A runner task carries the promotion in status (one per cluster and process).
        ``start``: the body this loop just read or wrote the promotion's start with, and the
        writer's count then (the runner begins from it instead of reading the resource again)."""
        if self.state.runner is None or self.state.runner.done():
            self.state.runner = asyncio.create_task(self._run_promotion(start))

    async def _run_promotion(self, start: tuple[dict[str, Any], int] | None) -> None:
        try:
            runner = PromotionRunner(self.config, self.ref, self.state, self.writer)
            await runner.run(start)
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop starts a new runner on its next iteration
            logger.exception("%s: the promotion runner failed; it will be restarted", self.ref)
        finally:
            self.state.wake.set()

    async def stop_runner(self) -> None:
        runner, self.state.runner = self.state.runner, None
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner

    # --- one iteration --------------------------------------------------------------------------

    async def _certificates(self, body: dict[str, Any], cluster: GoCDHACluster) -> bytes | None:
        """The CA certificate, after renewing the server certificate when it is due (at two
        thirds of its lifetime, docs/architecture.md §17) or, with a user-provided certificate,
        after checking the user's Secret and copying a changed, valid one. The reconcile creates
        the operator's Secrets; this check only renews them, and runs once per
        ``certificate_check_interval`` (the CA certificate and the verdict on a user's
        certificate are remembered in between). ``None`` (Postgres then observed as
        unreachable) while they do not exist or cannot be read or written."""
        now = self.config.clock()
        checked = self.state.certificates_checked_at
        if (
            self.state.ca_pem is not None
            and checked is not None
            and timedelta(0) <= now - checked < self.config.certificate_check_interval
        ):
            return self.state.ca_pem
        try:
            check = await asyncio.to_thread(
                check_certificates,
                self.config.kube,
                body,
                cluster,
                now=now,
                create=False,
            )
        except (KubeApiError, NotOwnedError, OSError) as exc:
            logger.warning("%s: cannot check the Postgres certificates: %s", cluster.name, exc)
            return None
        if check.updated is not None:
            # The pods' kubelets refresh the Secret and the guards reload Postgres (§17).
            post_event(body, "Normal", "ServerCertificateUpdated", check.updated)
        self.state.ca_pem = check.ca_pem
        self.state.certificate_verdict = check.verdict
        self.state.certificates_checked_at = now if check.ca_pem is not None else None
        return check.ca_pem

    def _certificate_condition(
        self,
        cluster: GoCDHACluster | None,
        status: GoCDHAClusterStatus,
        *,
        generation: int | None,
        now: datetime,
        transitions: list[cond.Transition],
    ) -> GoCDHAClusterStatus:
        """``CertificateReady`` from the last check of a user-provided certificate; absent when
        the operator issues the certificate itself (or nothing was checked yet)."""
        tls = cluster.spec.tls if cluster is not None else None
        provided = tls is not None and tls.server_certificate_secret is not None
        verdict = self.state.certificate_verdict if provided else None
        if verdict is None:
            if provided or cond.get_condition(status.conditions, cond.CERTIFICATE_READY) is None:
                return status
            kept = [c for c in status.conditions if c.type != cond.CERTIFICATE_READY]
            return status.model_copy(update={"conditions": kept})
        conditions, transition = cond.set_condition(
            status.conditions,
            type=cond.CERTIFICATE_READY,
            status=verdict.status,
            reason=verdict.reason,
            message=verdict.message,
            observed_generation=generation,
            now=now,
        )
        if transition is not None:
            transitions.append(transition)
        return status.model_copy(update={"conditions": conditions})

    async def run_once(self) -> bool:
        """One iteration; ``True`` when the cluster waits for its first reconcile (the loop then
        waits for the reconcile's wake-up instead of the interval)."""
        writes = self.writer.writes
        # Only the iteration right after the reconcile that created the Lease may use its copy.
        created_lease, self.state.created_lease = self.state.created_lease, None
        body = await self.writer.fetch()
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return False
        parsed = parse_fresh(body, self.state)
        cluster = parsed.cluster
        if cluster is not None and cluster.status.promotion.result == "InProgress":
            # From the body just read (a resumed promotion's first step costs no read of its
            # own); a copy, since this iteration's status write replaces ``status`` in ``body``.
            self.ensure_runner((dict(body), writes))
        problem: ReconcileProblem | None = None
        if parsed.spec_error is not None:
            problem = ReconcileProblem("InvalidSpec", str(parsed.spec_error))
        credentials: ClusterCredentials | None = None
        ca_pem: bytes | None = None
        # Until its first reconcile the cluster has no Secret, instance or Lease to read: the
        # reconcile creates them, hands over the credentials and wakes this loop (issue #16: a
        # cluster waiting for a reconcile slot costs no request after this first visit, however
        # long it waits, so creating N clusters costs each the same requests).
        waiting = (
            never_reconciled(body)
            and self.state.reconcile_problem is None
            and self.state.credentials is None
        )
        if cluster is not None and not waiting:
            try:
                await check_user_token(self.config, self.state, cluster)
                credentials = await cluster_credentials(self.config, self.state, cluster)
            except MissingSecretError as exc:
                problem = problem or ReconcileProblem("SecretNotFound", str(exc))
            ca_pem = await self._certificates(body, cluster)
        problem = problem or self.state.reconcile_problem
        observation: ClusterObservation | None = None
        topology: Topology | None = None
        # A promotion request right after an observation of a healthy pair is decided on that
        # observation: the request starts at once instead of after a new one (issue #16).
        recorded = (
            cluster is not None
            and credentials is not None
            and promo.pending_request(cluster) is not None
            and promo.decide_on_recorded_observation(
                cluster, self.state.last_observation, self.config.clock()
            )
        )
        observed_from = self.config.clock()
        if cluster is not None and credentials is not None and not recorded:
            topology = promo.topology_of(cluster)
            observation = await observe_cluster(
                cluster,
                credentials,
                topology,
                now=self.config.clock(),
                operator_image=self.config.operator_image,
                overrides=self.config.endpoints,
                ca_pem=ca_pem,
            )
            if observation.credentials_rejected:
                self.state.forget_credentials()  # read again next time: they may have changed
        now = self.config.clock()
        # Issue #12: the primary Lease, read before the status change (which cannot wait).
        lease = (
            await read_primary_lease(
                self.config.kube, cluster, self.state.lease_memo, now, known=created_lease
            )
            if cluster is not None and not waiting and not recorded
            else None
        )
        # Issue #13: what the Postgres StatefulSets run, while status does not record it yet.
        live = (
            await read_live_pins(self.config, cluster, self.state)
            if cluster is not None and not waiting and not recorded
            else {}
        )
        transitions: list[cond.Transition] = []
        events: list[tuple[str, str, str]] = []
        start = False
        applied = False
        first_observation = False
        rollout = RolloutOutcome()

        def change(fresh_body: dict[str, Any], fresh: GoCDHAClusterStatus) -> GoCDHAClusterStatus:
            nonlocal start, rollout, applied, first_observation
            current = parse_fresh(fresh_body, self.state).cluster
            generation = fresh_body.get("metadata", {}).get("generation")
            status = ensure_conditions(fresh, generation=generation, now=now)
            before = status
            # Conditions no observation has set yet: this write's transitions are the cluster's
            # first observation, announced in one Event (issue #16).
            first_observation = any(c.reason == cond.INITIALIZING for c in before.conditions)
            observed = False
            if (
                current is not None
                and observation is not None
                and topology is not None
                and promo.topology_of(current.model_copy(update={"status": status})) == topology
            ):
                status = self._observed(
                    current,
                    status=status,
                    observation=observation,
                    topology=topology,
                    now=now,
                    transitions=transitions,
                    observe_interval=self.config.observe_interval,
                )
                if lease is not None:
                    # LeaseHeld blocks failover while the unavailable primary's Lease is valid.
                    status = apply_primary_lease(
                        current, before, status, transitions, lease=lease, now=now
                    )
                observed = applied = True
            status = self._ready(
                before,
                status=status,
                problem=problem,
                generation=generation,
                now=now,
                transitions=transitions,
            )
            status = self._certificate_condition(
                current,
                status,
                generation=generation,
                now=now,
                transitions=transitions,
            )
            if current is None:
                return status
            current = current.model_copy(update={"status": status})
            if observed and observation is not None and topology is not None:
                status, rollout = apply_rollout(
                    current,
                    status,
                    observation=observation,
                    topology=topology,
                    live=live,
                    generation=generation,
                    now=now,
                    transitions=transitions,
                )
                events.extend(rollout.events)
                current = current.model_copy(update={"status": status})
            request = promo.pending_request(current) or rollout.switchover
            if request is None and observed:
                due = promo.automatic_failover_due(current, status, now)
                if due is not None:
                    request = promo.PromotionRequest(
                        token=f"automatic-{cond.rfc3339(now)}",
                        force=False,
                        trigger="Automatic",
                        annotation=None,
                    )
                    events.append(("Warning", "AutomaticFailover", due))
            running = status.promotion.result == "InProgress"
            # Without a new observation: the recorded one, if it still qualifies on this body.
            decidable = observed or (
                recorded
                and promo.decide_on_recorded_observation(current, self.state.last_observation, now)
            )
            if request is None or (not decidable and not running):
                return status  # decided on the next observation
            status = promo.mark_handled(status, request)
            why = promo.refusal(current, status, request)
            if why is not None:
                reason, message = why
                entry = promo.refused(request, status, reason, message, now)
                status = promo.with_history(status, entry)
                if reason != Reason.PROMOTION_IN_PROGRESS:  # the running one is still promoting
                    status = self._promoting(
                        status,
                        value="False",
                        reason="PromotionRefused",
                        message=message,
                        generation=generation,
                        now=now,
                        transitions=transitions,
                    )
                events.append(("Warning", "PromotionRefused", f"{request.token!r}: {message}"))
                return status
            begun = promo.started(request, status, now, current.spec)
            status = status.model_copy(update={"promotion": begun})
            status = self._promoting(
                status,
                value="True",
                reason="Promoting",
                message=f"{begun.type} to side {begun.to_side}",
                generation=generation,
                now=now,
                transitions=transitions,
            )
            events.append(
                (
                    "Normal",
                    "PromotionStarted",
                    f"{begun.type} from side {begun.from_side} to side {begun.to_side} "
                    f"({request.trigger}, token {request.token!r})",
                )
            )
            start = True
            return status

        # The body read at the start is still what this process last wrote unless the runner
        # wrote since; changes by others (an annotation, a spec edit) wake the next iteration.
        written, _ = await self.writer.update(change, read=(body, writes))
        after = self.writer.writes
        if applied and topology is not None:
            self.state.last_observation = promo.ObservationRecord(observed_from, topology)
        post_transitions(written, transitions, first_observation=first_observation)
        for kind, reason, message in events:
            post_event(written, kind, reason, message)
        if start:
            self.ensure_runner((written, after))
        if rollout.pins_changed:
            pinned = parse_fresh(written, self.state).cluster
            if pinned is not None:
                await apply_pins(self.config, self.state, written, pinned)
        return waiting and problem is None

    @staticmethod
    def _observed(
        cluster: GoCDHACluster,
        *,
        observe_interval: float,
        status: GoCDHAClusterStatus,
        observation: ClusterObservation,
        topology: Topology,
        now: datetime,
        transitions: list[cond.Transition],
    ) -> GoCDHAClusterStatus:
        """The observation applied to ``status``; the promotion's fields and the ``Promoting``
        condition stay as the runner left them."""
        observed, changed = compute_status(
            cluster.model_copy(update={"status": status}),
            observation,
            topology,
            now=now,
            observe_interval=observe_interval,
        )
        promoting = cond.get_condition(status.conditions, cond.PROMOTING)
        if promoting is None or promoting.reason == cond.INITIALIZING:
            # Nothing set it yet: the observation's verdict (Idle, or Promoting) stands.
            conditions = list(observed.conditions)
            transitions.extend(changed)
        else:
            conditions = [c if c.type != cond.PROMOTING else promoting for c in observed.conditions]
            transitions.extend(t for t in changed if t.type != cond.PROMOTING)
        keep = {field: getattr(status, field) for field in PROMOTION_FIELDS}
        return observed.model_copy(update={**keep, "conditions": conditions})

    @staticmethod
    def _ready(
        before: GoCDHAClusterStatus,
        *,
        status: GoCDHAClusterStatus,
        problem: ReconcileProblem | None,
        generation: int | None,
        now: datetime,
        transitions: list[cond.Transition],
    ) -> GoCDHAClusterStatus:
        """``Ready=False`` with the reconcile's (or the spec's, or a Secret's) problem, if any:
        it overrides what the observation concluded; the transition is from ``Ready`` as it was
        ``before`` the observation."""
        if problem is None:
            return status
        previous = cond.get_condition(before.conditions, cond.READY)
        others = [c for c in status.conditions if c.type != cond.READY]
        base = [*others, previous] if previous is not None else others
        conditions, transition = cond.set_condition(
            base,
            type=cond.READY,
            status="False",
            reason=problem.reason,
            message=problem.message,
            observed_generation=generation,
            now=now,
        )
        transitions[:] = [t for t in transitions if t.type != cond.READY]
        if transition is not None:
            transitions.append(transition)
        order = {type_: index for index, type_ in enumerate(c.type for c in status.conditions)}
        conditions.sort(key=lambda c: order.get(c.type, len(order)))
        return status.model_copy(update={"conditions": conditions})

    @staticmethod
    def _promoting(
        status: GoCDHAClusterStatus,
        *,
        value: Any,
        reason: str,
        message: str,
        generation: int | None,
        now: datetime,
        transitions: list[cond.Transition],
    ) -> GoCDHAClusterStatus:
        conditions, transition = cond.set_condition(
            status.conditions,
            type=cond.PROMOTING,
            status=value,
            reason=reason,
            message=message,
            observed_generation=generation,
            now=now,
        )
        if transition is not None:
            transitions.append(transition)
        return status.model_copy(update={"conditions": conditions})


async def supervise(config: OperatorConfig, ref: ClusterRef, stopped: Any) -> None:
    """The daemon body: one iteration, then wait for the interval or a wake-up. The runner task
    ends with the daemon (the next operator process resumes the promotion from status)."""
    supervisor = Supervisor(config, ref)
    wake = supervisor.state.wake
    try:
        while not stopped:
            # Cleared before the iteration, not after: a wake-up (a promotion annotation) that
            # arrives while it runs starts the next iteration at once instead of being lost.
            wake.clear()
            waiting = False
            try:
                waiting = await supervisor.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive anything; it is logged
                logger.exception("supervising %s failed; retrying", ref)
            # A cluster waiting for its first reconcile has nothing to observe: the reconcile's
            # end (or a promotion annotation) wakes it, whenever that comes.
            await _pause(wake, stopped, None if waiting else config.observe_interval)
    finally:
        await supervisor.stop_runner()


async def _pause(wake: asyncio.Event, stopped: Any, timeout: float | None) -> None:
    """Until ``wake`` is set, the daemon is stopped, or ``timeout`` seconds passed."""
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(wake.wait())]
    if hasattr(stopped, "wait"):
        waits.append(asyncio.ensure_future(stopped.wait()))
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waited in waits:
            waited.cancel()
