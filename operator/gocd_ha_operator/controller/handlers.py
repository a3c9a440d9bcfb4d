"""kopf handlers: thin registrations over the reconcile and observation modules.

Everything is registered on a registry built by :func:`build_registry`, so the operator, the
tests and the embedded demo each run their own operator with their own configuration (an API
emulator's address, a short observation interval) without global state.

* one idempotent reconcile for create, spec updates and resume (annotation and status changes do
  not trigger it, so they never cause child writes);
* one supervisor daemon per cluster (``supervisor.py``) that observes, writes status — only
  what changed — with an Event per condition transition, and runs promotions;
* a wake-up when a promotion annotation changes, so a promotion starts at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import (
    ANNOTATION_PROMOTE,
    ANNOTATION_PROMOTE_FORCE,
    API_VERSION,
    FINALIZER,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    operator_namespace_from,
)
from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.api.status import GoCDHAClusterStatus, status_patch
from gocd_ha_operator.api.validation import SpecError
from gocd_ha_operator.controller import webhook
from gocd_ha_operator.controller.backup import backup_tick
from gocd_ha_operator.controller.observe import event_for, instance_checked_topology
from gocd_ha_operator.controller.reconcile import MissingSecretError, reconcile_children
from gocd_ha_operator.controller.supervisor import ClusterRef, apply_lock, supervise
from gocd_ha_operator.controller.webhook import WebhookConfig
from gocd_ha_operator.kube.apply import KubeApiError, KubeClient, NotOwnedError, default_client
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.rules.promotion import StepHook

logger = logging.getLogger(__name__)

#: Ready reasons the reconcile itself sets; a later successful reconcile clears them.
RECONCILE_FAILURE_REASONS: Final = frozenset({"InvalidSpec", "SecretNotFound", "ChildConflict"})


@dataclass
class OperatorConfig:
    """What differs between a production run, a test and the demo."""

    operator_image: str
    observe_interval: float = 10.0
    #: The operator's namespace (the Postgres NetworkPolicy admits the operator from there).
    operator_namespace: str = field(default_factory=lambda: operator_namespace_from(os.environ))
    kube_factory: Callable[[], KubeClient] = default_client
    #: ``None``: read ``GOCDHA_ENDPOINTS`` from the environment.
    endpoints: Mapping[str, Endpoint] | None = None
    #: When set, kopf connects here instead of using its own login (tests, demo).
    connection: kopf.ConnectionInfo | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: How soon a reconcile that waits for a user's Secret, or for a conflicting object to go,
    #: is retried (kopf keeps retrying; each retry re-reads the Secret).
    retry_delay: float = 15.0
    #: Reconciles that talk to the API at the same time. A restarted operator resumes every
    #: cluster at once; this keeps that burst from hammering the API server.
    max_concurrent_reconciles: int = 4
    #: Test hook called at every promotion step (see ``promotion.StepHook``).
    promotion_hook: StepHook | None = None
    #: Adjusts kopf's settings after the project's own (tests: timeouts of the API emulator).
    tune_settings: Callable[[kopf.OperatorSettings], None] | None = None
    #: The validating admission webhook; ``None``: no webhook (invalid resources are reported in
    #: their status only).
    webhook: WebhookConfig | None = None
    _kube: KubeClient | None = field(default=None, init=False, repr=False)
    _reconciles: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    @property
    def reconcile_slots(self) -> asyncio.Semaphore:
        """Created on first use, inside the operator's own event loop."""
        if self._reconciles is None:
            self._reconciles = asyncio.Semaphore(self.max_concurrent_reconciles)
        return self._reconciles

    @property
    def kube(self) -> KubeClient:
        if self._kube is None:
            self._kube = self.kube_factory()
        return self._kube


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """All kopf settings in one place, chosen once: storage keys under gocdha.io from day one."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    # Recover from silently idle watch connections (kopf issues #698, #204).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60


def _status_of(body: Mapping[str, Any]) -> GoCDHAClusterStatus:
    try:
        return GoCDHAClusterStatus.model_validate(body.get("status") or {})
    except ValueError:
        return GoCDHAClusterStatus()


def _post_transitions(body: kopf.Body, transitions: list[cond.Transition]) -> None:
    for transition in transitions:
        kind, reason, message = event_for(transition)
        kopf.event(body, type=kind, reason=reason, message=message)


def _with_ready(
    status: GoCDHAClusterStatus,
    *,
    generation: int | None,
    now: datetime,
    ready: tuple[str, str, str] | None,
) -> tuple[GoCDHAClusterStatus, list[cond.Transition]]:
    """Conditions after a reconcile: every type present (Unknown on the first visit), and Ready
    set to ``ready`` — or cleared from a reconcile failure once the reconcile succeeds."""
    conditions = list(status.conditions)
    transitions: list[cond.Transition] = []
    for type_ in cond.CONDITION_TYPES:
        if cond.get_condition(conditions, type_) is None:
            conditions, _ = cond.set_condition(
                conditions,
                type=type_,
                status="Unknown",
                reason="Initializing",
                message="not observed yet",
                observed_generation=generation,
                now=now,
            )
    current = cond.get_condition(conditions, cond.READY)
    if ready is None and current is not None and current.reason in RECONCILE_FAILURE_REASONS:
        ready = ("Unknown", "Reconciled", "children applied; waiting for the next observation")
    if ready is not None:
        conditions, transition = cond.set_condition(
            conditions,
            type=cond.READY,
            status=ready[0],  # type: ignore[arg-type]
            reason=ready[1],
            message=ready[2],
            observed_generation=generation,
            now=now,
        )
        if transition is not None:
            transitions.append(transition)
    return status.model_copy(update={"conditions": conditions}), transitions


#: The status fields a reconcile writes; everything else belongs to the supervisor (observation,
#: promotion), which may have moved on since this reconcile read the status.
RECONCILE_STATUS_KEYS: Final = frozenset(
    {"observedGeneration", "primary", "standby", "standbyMode", "gocdVersion", "conditions"}
)


def _write_status(base: Mapping[str, Any], patch: kopf.Patch, new: GoCDHAClusterStatus) -> None:
    """Put into ``patch`` the reconcile-owned fields of ``new`` that differ from ``base``."""
    changes = status_patch(dict(base), new.to_api())
    for key, value in changes.items():
        if key in RECONCILE_STATUS_KEYS:
            patch.status[key] = value


async def reconcile_resource(
    config: OperatorConfig, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo
) -> None:
    """Parse, apply every child, record the outcome in status. Raises kopf errors to retry."""
    now = config.clock()
    generation = body.get("metadata", {}).get("generation")
    try:
        cluster = parse_cluster(body)
    except SpecError as exc:
        status, transitions = _with_ready(
            _status_of(body),
            generation=generation,
            now=now,
            ready=("False", "InvalidSpec", str(exc)),
        )
        _write_status(body.get("status") or {}, patch, status)
        kopf.event(body, type="Warning", reason="InvalidSpec", message=str(exc)[:1000])
        raise kopf.PermanentError(f"invalid GoCDHACluster: {exc}") from None

    try:
        async with config.reconcile_slots, apply_lock(memo):
            # The roles come from the status as it is now, not as this event saw it: a promotion
            # may have moved them in the meantime.
            fresh = await asyncio.to_thread(
                config.kube.get, API_VERSION, KIND, cluster.namespace, cluster.name
            )
            current = dict((fresh or body).get("status") or {})
            cluster = cluster.model_copy(update={"status": _status_of({"status": current})})
            outcome = await asyncio.to_thread(
                reconcile_children,
                config.kube,
                body,
                cluster,
                operator_image=config.operator_image,
                topology=await instance_checked_topology(config.kube, cluster, config.endpoints),
                operator_namespace=config.operator_namespace,
            )
    except MissingSecretError as exc:
        _fail(body, patch, cluster, now=now, reason="SecretNotFound", message=str(exc))
        raise kopf.TemporaryError(str(exc), delay=config.retry_delay) from None
    except NotOwnedError as exc:
        _fail(body, patch, cluster, now=now, reason="ChildConflict", message=str(exc))
        raise kopf.TemporaryError(str(exc), delay=config.retry_delay * 4) from None
    except KubeApiError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from None

    memo["credentials"] = outcome.credentials
    applied = outcome.applied
    if applied.created:
        kopf.event(
            body,
            type="Normal",
            reason="ChildrenCreated",
            message=f"created {len(applied.created)}: {', '.join(applied.created)}"[:1000],
        )
    if applied.patched or applied.deleted:
        changed = [*applied.patched, *(f"{d} (deleted)" for d in applied.deleted)]
        kopf.event(
            body,
            type="Normal",
            reason="ChildrenUpdated",
            message=f"updated {len(changed)}: {', '.join(changed)}"[:1000],
        )
    version = cluster.spec.gocd.version
    status = cluster.status.model_copy(
        update={
            "observed_generation": generation,
            "primary": outcome.topology.primary,
            "standby": outcome.topology.standby,
            "standby_mode": cluster.spec.gocd.effective_standby_mode,
            "gocd_version": str(version) if version is not None else None,
        }
    )
    status, transitions = _with_ready(status, generation=generation, now=now, ready=None)
    _write_status(current, patch, status)
    _post_transitions(body, transitions)


def _fail(
    body: kopf.Body,
    patch: kopf.Patch,
    cluster: GoCDHACluster,
    *,
    now: datetime,
    reason: str,
    message: str,
) -> None:
    status, transitions = _with_ready(
        cluster.status,
        generation=cluster.metadata.generation,
        now=now,
        ready=("False", reason, message),
    )
    _write_status(cluster.status.to_api(), patch, status)
    if not transitions:
        # Ready was already False for this reason: still say it, the message may be new.
        kopf.event(body, type="Warning", reason=reason, message=message[:1000])
    _post_transitions(body, transitions)


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator, bound to ``config``."""
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings)
        if config.webhook is not None:
            # The chart renders the ValidatingWebhookConfiguration; kopf only serves.
            settings.admission.managed = None
            settings.admission.server = webhook.server(
                config.kube, config.webhook, now=config.clock()
            )
        if config.tune_settings is not None:
            config.tune_settings(settings)

    if config.webhook is not None:
        webhook.register(registry, resource)

    connection = config.connection

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In a pod: the service account; elsewhere: the kubeconfig (or the given connection)."""
        if connection is not None:
            return connection
        found: kopf.ConnectionInfo | None = kopf.login_with_service_account(
            **kwargs
        ) or kopf.login_with_kubeconfig(**kwargs)
        return found

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, field="spec", registry=registry)
    async def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        await reconcile_resource(config, body, patch, memo)

    @kopf.daemon(*resource, registry=registry, cancellation_timeout=10)
    async def supervise_cluster(
        meta: kopf.Meta, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        ref = ClusterRef(namespace=str(meta["namespace"]), name=str(meta["name"]))
        await supervise(config, ref, memo, stopped)

    @kopf.timer(*resource, interval=config.observe_interval, registry=registry)
    async def backups(meta: kopf.Meta, **_: Any) -> None:
        """Start scheduled and requested backups, record finished ones (controller/backup.py)."""
        await backup_tick(
            config.kube,
            config.operator_image,
            config.clock,
            str(meta["namespace"]),
            str(meta["name"]),
        )

    @kopf.on.field(
        *resource, field=("metadata", "annotations", ANNOTATION_PROMOTE), registry=registry
    )
    @kopf.on.field(
        *resource, field=("metadata", "annotations", ANNOTATION_PROMOTE_FORCE), registry=registry
    )
    def promotion_requested(memo: kopf.Memo, **_: Any) -> None:
        """Wake the cluster's supervisor now instead of at its next interval."""
        wake = memo.get("wake")
        if wake is not None:
            wake.set()

    return registry
