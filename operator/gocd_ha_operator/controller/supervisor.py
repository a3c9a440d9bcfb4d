"""The per-cluster supervisor: observe, write status, and run promotions to completion.

One loop per ``GoCDHACluster`` (a kopf daemon) does everything that happens over time:

* read the resource fresh from the API (never a stale copy after its own writes);
* continue a promotion that is in progress (also one an earlier operator process started);
* otherwise observe the cluster, write what changed in status, and start a promotion when an
  annotation asks for one (exactly once per value) or automatic failover calls for one.

Status is written through the ``status`` subresource as soon as it changes, so a promotion's
progress is recorded *before* each step acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Final, cast

import kopf

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import API_VERSION, KIND, SLOT_PREFIX, Side
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.api.status import ConditionStatus, GoCDHAClusterStatus, status_patch
from gocd_ha_operator.api.validation import SpecError
from gocd_ha_operator.controller.observe import compute_status, event_for, observe_cluster
from gocd_ha_operator.controller.reconcile import reconcile_children
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.postgres.client import (
    PostgresClient,
    PostgresError,
    PostgresUnreachable,
    format_lsn,
    parse_lsn,
)
from gocd_ha_operator.rules import promotion as promo

logger = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_SECONDS: Final = 120.0
STOP_TIMEOUT_SECONDS: Final = 90.0
PROMOTE_WAIT_SECONDS: Final = 60


class PromotionAbortedError(Exception):
    """A step cannot complete; the promotion ends as Failed and the old primary is unfenced."""


@dataclass
class ClusterRef:
    namespace: str
    name: str


def apply_lock(memo: MutableMapping[str, Any]) -> asyncio.Lock:
    """One lock per cluster around "read status, build, apply": the reconcile and a promotion
    step never apply children built from different role assignments at the same time."""
    lock: asyncio.Lock = memo.setdefault("apply_lock", asyncio.Lock())
    return lock


class Supervisor:
    """The work of one loop iteration for one cluster."""

    def __init__(self, config: Any, ref: ClusterRef, memo: MutableMapping[str, Any]) -> None:
        self.config = config
        self.ref = ref
        self.memo = memo

    # --- API plumbing ---------------------------------------------------------------------------

    async def fetch(self) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await asyncio.to_thread(
            self.config.kube.get, API_VERSION, KIND, self.ref.namespace, self.ref.name
        )
        return body

    async def write_status(self, body: dict[str, Any], new: GoCDHAClusterStatus) -> None:
        changes = status_patch(dict(body.get("status") or {}), new.to_api())
        if changes:
            await asyncio.to_thread(
                self.config.kube.patch_status,
                API_VERSION,
                KIND,
                self.ref.namespace,
                self.ref.name,
                changes,
            )
            body["status"] = new.to_api()

    def event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message[:1000])

    def post_transitions(self, body: dict[str, Any], transitions: list[cond.Transition]) -> None:
        for transition in transitions:
            self.event(body, *event_for(transition))

    def client(
        self, cluster: GoCDHACluster, side: Side, credentials: ClusterCredentials
    ) -> PostgresClient:
        overrides: Any = self.config.endpoints
        return PostgresClient.for_service(
            cluster.namespace,
            ChildNames(cluster.name).postgres_instance_service(side),
            password=credentials.operator_password,
            overrides=overrides,
        )

    async def apply(self, body: dict[str, Any], cluster: GoCDHACluster) -> None:
        await asyncio.to_thread(
            reconcile_children,
            self.config.kube,
            body,
            cluster,
            operator_image=self.config.operator_image,
            topology=promo.topology_of(cluster),
        )

    # --- one iteration --------------------------------------------------------------------------

    async def run_once(self) -> None:
        body = await self.fetch()
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return
        try:
            cluster = parse_cluster(body)
        except SpecError:
            return  # the reconcile reports it; nothing can be observed for an invalid resource
        credentials: ClusterCredentials | None = self.memo.get("credentials")
        if credentials is None:
            return  # not reconciled in this process yet: the Secrets may not exist
        if cluster.status.promotion.result == "InProgress":
            await self.promote(body, cluster, credentials)
            return
        now = self.config.clock()
        topology = promo.topology_of(cluster)
        endpoints: dict[str, Endpoint] | None = (
            dict(self.config.endpoints) if self.config.endpoints is not None else None
        )
        observation = await observe_cluster(
            cluster,
            credentials,
            topology,
            now=now,
            operator_image=self.config.operator_image,
            overrides=endpoints,
        )
        status, transitions = compute_status(
            cluster, observation, topology, now=now, observe_interval=self.config.observe_interval
        )
        request = promo.pending_request(cluster)
        if request is None:
            reason = promo.automatic_failover_due(cluster, status, now)
            if reason is not None:
                request = promo.PromotionRequest(
                    token=f"automatic-{cond.rfc3339(now)}",
                    force=False,
                    trigger="Automatic",
                    annotation=None,
                )
                self.event(body, "Warning", "AutomaticFailover", reason)
        if request is None:
            await self.write_status(body, status)
            self.post_transitions(body, transitions)
            return

        status = promo.mark_handled(status, request)
        why = promo.refusal(cluster, status, request)
        if why is not None:
            status = promo.with_history(status, promo.refused(request, status, why, now))
            status, flip = self._promoting(
                status, "False", reason="PromotionRefused", message=why, cluster=cluster, now=now
            )
            await self.write_status(body, status)
            self.post_transitions(body, [*transitions, *flip])
            self.event(body, "Warning", "PromotionRefused", f"{request.token!r}: {why}")
            return
        started = promo.started(request, status, now, cluster.spec)
        status = status.model_copy(update={"promotion": started})
        status, flip = self._promoting(
            status,
            "True",
            reason="Promoting",
            message=f"{started.type} to side {started.to_side}",
            cluster=cluster,
            now=now,
        )
        await self.write_status(body, status)
        self.post_transitions(body, [*transitions, *flip])
        self.event(
            body,
            "Normal",
            "PromotionStarted",
            f"{started.type} from side {started.from_side} to side {started.to_side} "
            f"({request.trigger}, token {request.token!r})",
        )
        await self.promote(body, cluster.model_copy(update={"status": status}), credentials)

    def _promoting(
        self,
        status: GoCDHAClusterStatus,
        value: ConditionStatus,
        *,
        reason: str,
        message: str,
        cluster: GoCDHACluster,
        now: Any,
    ) -> tuple[GoCDHAClusterStatus, list[cond.Transition]]:
        conditions, transition = cond.set_condition(
            status.conditions,
            type=cond.PROMOTING,
            status=value,
            reason=reason,
            message=message,
            observed_generation=cluster.metadata.generation,
            now=now,
        )
        return status.model_copy(update={"conditions": conditions}), (
            [transition] if transition else []
        )

    # --- the promotion --------------------------------------------------------------------------

    async def promote(
        self, body: dict[str, Any], cluster: GoCDHACluster, credentials: ClusterCredentials
    ) -> None:
        status = cluster.status
        step = status.promotion.step or promo.FENCING
        hook = self.config.promotion_hook
        started = time.monotonic()
        try:
            for current in promo.STEPS[promo.STEPS.index(step) :]:
                promotion = status.promotion
                if current == promo.CATCHING_UP and promotion.type == "Failover":
                    continue
                rejoin = promotion.rejoin or cluster.spec.failover.rejoin
                if current == promo.REJOINING and rejoin == "Manual":
                    continue
                status = status.model_copy(
                    update={"promotion": promotion.model_copy(update={"step": current})}
                )
                cluster = cluster.model_copy(update={"status": status})
                async with apply_lock(self.memo):
                    await self.write_status(body, status)
                self.event(body, "Normal", f"Promotion{current}", self._describe(current, status))
                if hook is not None:
                    await hook(current)
                status = await self.act(current, body, cluster, credentials)
                cluster = cluster.model_copy(update={"status": status})
                if hook is not None:
                    await hook(f"{current}:done")
        except PromotionAbortedError as exc:
            await self.fail(body, cluster, str(exc))
            return
        now = self.config.clock()
        promotion = status.promotion.model_copy(
            update={
                "result": "Succeeded",
                "finished_at": cond.rfc3339(now),
                "message": f"side {status.promotion.to_side} is primary",
            }
        )
        status = promo.with_history(status.model_copy(update={"promotion": promotion}), promotion)
        status, flip = self._promoting(
            status,
            "False",
            reason="Promoted",
            message=promotion.message or "",
            cluster=cluster,
            now=now,
        )
        async with apply_lock(self.memo):
            await self.write_status(body, status)
        self.post_transitions(body, flip)
        self.event(
            body,
            "Normal",
            "PromotionSucceeded",
            f"{promotion.type}: side {promotion.to_side} is primary "
            f"(RPO {promotion.rpo_bytes if promotion.rpo_bytes is not None else 'unknown'} "
            f"bytes, {time.monotonic() - started:.1f}s in this process)",
        )

    def _describe(self, step: str, status: GoCDHAClusterStatus) -> str:
        p = status.promotion
        old, new = p.from_side, p.to_side
        return {
            promo.FENCING: f"stopping GoCD on side {old}; Services stop selecting it",
            promo.CATCHING_UP: f"waiting until side {new} has replayed side {old}'s last WAL",
            promo.STOPPING_OLD_PRIMARY: f"stopping Postgres on side {old}",
            promo.PROMOTING: f"promoting Postgres on side {new}",
            promo.SWITCHING_ROLES: f"side {new} becomes primary; Services and roles follow",
            promo.REJOINING: f"side {old} rejoins as a standby of side {new}",
            promo.DONE: "recording the result",
        }[step]

    async def act(
        self,
        step: str,
        body: dict[str, Any],
        cluster: GoCDHACluster,
        credentials: ClusterCredentials,
    ) -> GoCDHAClusterStatus:
        status = cluster.status
        p = status.promotion
        old: Side = p.from_side or "a"
        new: Side = p.to_side or "b"
        if step in (promo.FENCING, promo.REJOINING):
            async with apply_lock(self.memo):
                await self.apply(body, cluster)
        elif step == promo.CATCHING_UP:
            status = await self.catch_up(body, cluster, credentials, old, new)
        elif step == promo.STOPPING_OLD_PRIMARY:
            async with apply_lock(self.memo):
                await self.apply(body, cluster)
            if p.type == "Switchover":
                await self.wait_stopped(cluster, credentials, old)
        elif step == promo.PROMOTING:
            client = self.client(cluster, new, credentials)
            try:
                result = await client.promote(wait_seconds=PROMOTE_WAIT_SECONDS)
                await client.create_slot_if_missing(f"{SLOT_PREFIX}{old}")
            except PostgresError as exc:
                raise PromotionAbortedError(f"promoting side {new} failed: {exc}") from None
            message = f"side {new} promoted to timeline {result.timeline}"
            update = {"message": message, "promote_seconds": round(result.duration_seconds, 3)}
            status = status.model_copy(update={"promotion": p.model_copy(update=update)})
        elif step == promo.SWITCHING_ROLES:
            status = status.model_copy(update={"primary": new, "standby": old})
            switched = cluster.model_copy(update={"status": status})
            async with apply_lock(self.memo):
                await self.write_status(body, status)
                await self.apply(body, switched)
        return status

    async def catch_up(
        self,
        body: dict[str, Any],
        cluster: GoCDHACluster,
        credentials: ClusterCredentials,
        old: Side,
        new: Side,
    ) -> GoCDHAClusterStatus:
        status = cluster.status
        p = status.promotion
        lsn_text = p.lsn
        if lsn_text is None:
            source = self.client(cluster, old, credentials)
            try:
                await source.end_client_sessions()
                await source.checkpoint()
                lsn = await source.current_lsn()
            except PostgresUnreachable:
                # The old primary went away between the request and now: this is a failover.
                failover = p.model_copy(
                    update={"type": "Failover", "rpo_bytes": status.replication.lag_bytes}
                )
                status = status.model_copy(update={"promotion": failover})
                await self.write_status(body, status)
                return status
            except PostgresError as exc:
                raise PromotionAbortedError(f"fencing writes on side {old} failed: {exc}") from None
            lsn_text = format_lsn(lsn)
            status = status.model_copy(update={"promotion": p.model_copy(update={"lsn": lsn_text})})
            await self.write_status(body, status)
        target = parse_lsn(lsn_text)
        try:
            await self.client(cluster, new, credentials).wait_for_replay(
                target, timeout=CATCH_UP_TIMEOUT_SECONDS
            )
        except PostgresError as exc:
            raise PromotionAbortedError(f"side {new} did not catch up: {exc}") from None
        caught_up = status.promotion.model_copy(update={"rpo_bytes": 0})
        status = status.model_copy(update={"promotion": caught_up})
        await self.write_status(body, status)
        return status

    async def wait_stopped(
        self, cluster: GoCDHACluster, credentials: ClusterCredentials, side: Side
    ) -> None:
        client = self.client(cluster, side, credentials)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            observation = await client.observe()
            if not observation.reachable:
                return
            await asyncio.sleep(0.3)
        raise PromotionAbortedError(
            f"Postgres on side {side} did not stop within {STOP_TIMEOUT_SECONDS:g}s"
        )

    async def fail(self, body: dict[str, Any], cluster: GoCDHACluster, reason: str) -> None:
        """End the promotion as Failed: nothing stays fenced, the old primary serves again (unless
        the roles had already switched, in which case the new primary keeps them)."""
        now = self.config.clock()
        status = cluster.status
        failed = status.promotion.model_copy(
            update={"result": "Failed", "finished_at": cond.rfc3339(now), "message": reason}
        )
        status = promo.with_history(status.model_copy(update={"promotion": failed}), failed)
        status, flip = self._promoting(
            status, "False", reason="PromotionFailed", message=reason, cluster=cluster, now=now
        )
        failed_cluster = cluster.model_copy(update={"status": status})
        async with apply_lock(self.memo):
            await self.write_status(body, status)
            await self.apply(body, failed_cluster)
        self.post_transitions(body, flip)
        self.event(body, "Warning", "PromotionFailed", reason)


async def supervise(
    config: Any,
    ref: ClusterRef,
    memo: MutableMapping[str, Any],
    stopped: Any,
) -> None:
    """The daemon body: one iteration, then wait for the interval or a wake-up (an annotation)."""
    wake: asyncio.Event = memo.setdefault("wake", asyncio.Event())
    supervisor = Supervisor(config, ref, memo)
    while not stopped:
        try:
            await supervisor.run_once()
        except Exception:  # the loop must survive anything; it is logged
            logger.exception("supervising %s/%s failed; retrying", ref.namespace, ref.name)
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=config.observe_interval)
