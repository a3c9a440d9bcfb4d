"""kopf handlers: thin registrations over the reconcile and observation modules.

Everything is registered on a registry built by :func:`build_registry`, so the operator, the
tests and the embedded demo each run their own operator with their own configuration (an API
emulator's address, a short observation interval) without global state.

* one idempotent reconcile for create, spec updates and resume (annotation and status changes do
  not trigger it, so they never cause child writes);
* one supervisor daemon per cluster (``supervisor.py``) that observes, writes status — only
  what changed — with an Event per condition transition, and runs promotions (``runner.py``);
  it is the only writer of conditions: the reconcile hands it its outcome in memory;
* a wake-up when a promotion annotation changes, so a promotion starts at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from gocd_ha_operator.api.constants import (
    ANNOTATION_PROMOTE,
    ANNOTATION_PROMOTE_FORCE,
    ANNOTATION_RECONCILED_SPEC,
    API_VERSION,
    FINALIZER,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
)
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.api.validation import SpecError
from gocd_ha_operator.controller import webhook
from gocd_ha_operator.controller.backup import backup_tick
from gocd_ha_operator.controller.config import ClusterRef, OperatorConfig, ReconcileProblem
from gocd_ha_operator.controller.observe import instance_checked_topology
from gocd_ha_operator.controller.reconcile import (
    MissingSecretError,
    never_reconciled,
    reconcile_children,
)
from gocd_ha_operator.controller.status import (
    RECONCILE_STATUS_KEYS,
    credentials_key,
    spec_json,
    status_of,
)
from gocd_ha_operator.controller.supervisor import supervise
from gocd_ha_operator.kube.apply import KubeApiError, NotOwnedError
from gocd_ha_operator.rules.promotion import topology_of

__all__ = ["OperatorConfig", "build_registry", "configure_settings", "reconcile_resource"]

logger = logging.getLogger(__name__)


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


def _ref(body: kopf.Body) -> ClusterRef:
    metadata = body.get("metadata", {})
    return ClusterRef(namespace=str(metadata.get("namespace")), name=str(metadata.get("name")))


def _report(
    config: OperatorConfig, body: kopf.Body, problem: ReconcileProblem | None, *, event: bool
) -> None:
    """Hand the outcome to the supervisor (the only writer of ``Ready``) and wake it."""
    state = config.state(_ref(body))
    state.reconcile_problem = problem
    if problem is not None and event:
        kopf.event(body, type="Warning", reason=problem.reason, message=problem.message[:1000])
    state.wake.set()


async def reconcile_resource(config: OperatorConfig, body: kopf.Body, patch: kopf.Patch) -> None:
    """Parse, apply every child, record the outcome. Raises kopf errors to retry.

    Status is the supervisor's, which gets the outcome: ``Ready`` from it, and
    ``observedGeneration``, ``standbyMode``, ``gocdVersion`` (:data:`RECONCILE_STATUS_KEYS`) as
    this reconcile concluded them, in its next status patch.
    """
    generation = body.get("metadata", {}).get("generation")
    try:
        cluster = parse_cluster(body)
    except SpecError as exc:
        _report(config, body, ReconcileProblem("InvalidSpec", str(exc)), event=True)
        raise kopf.PermanentError(f"invalid GoCDHACluster: {exc}") from None

    state = config.state(_ref(body))
    try:
        async with config.reconcile_slots, state.apply_lock:
            # The roles come from the status as it is now, not as this event saw it: a promotion
            # may have moved them in the meantime.
            fresh = await asyncio.to_thread(
                config.kube.get, API_VERSION, KIND, cluster.namespace, cluster.name
            )
            current = dict((fresh or body).get("status") or {})
            cluster = cluster.model_copy(update={"status": status_of({"status": current})})
            outcome = await asyncio.to_thread(
                reconcile_children,
                config.kube,
                body,
                cluster,
                operator_image=config.operator_image,
                # A resource never reconciled has no instance to ask (nor a Secret to ask with).
                topology=(
                    topology_of(cluster)
                    if never_reconciled(fresh or body)
                    else await instance_checked_topology(config.kube, cluster, config.endpoints)
                ),
                operator_namespace=config.operator_namespace,
            )
    except MissingSecretError as exc:
        _report(config, body, ReconcileProblem("SecretNotFound", str(exc)), event=True)
        raise kopf.TemporaryError(str(exc), delay=config.retry_delay) from None
    except NotOwnedError as exc:
        _report(config, body, ReconcileProblem("ChildConflict", str(exc)), event=True)
        raise kopf.TemporaryError(str(exc), delay=config.retry_delay * 4) from None
    except KubeApiError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from None

    # What the Secrets hold now (read back, or just created): the supervisor and the runner use
    # these until something suggests they changed.
    state.credentials, state.credentials_key = outcome.credentials, credentials_key(cluster)
    if outcome.certificates_created:
        # It created the CA and every server certificate just now (no user certificate to judge):
        # the supervisor verifies with that CA and checks the Secrets again in
        # ``certificate_check_interval``, instead of reading back what was just made (issue #16).
        state.ca_pem, state.certificate_verdict = outcome.ca_pem, None
        state.certificates_checked_at = config.clock()
    elif outcome.certificates_checked:
        # It checked the TLS Secrets just now (renewing what was due, judging a user's
        # certificate): its verdict is the supervisor's, so CertificateReady follows a spec
        # change at once without the supervisor reading them again (issue #16).
        state.ca_pem, state.certificate_verdict = outcome.ca_pem, outcome.certificate_verdict
        state.certificates_checked_at = config.clock()
    else:
        # Nothing to verify with yet: the supervisor checks at its next iteration.
        state.certificates_checked_at = None
    # What the StatefulSets it created run: recorded in status without reading them back.
    state.created_pins = outcome.created_pins
    # The Lease it created, judged by the observation it wakes without reading it back.
    state.created_lease = outcome.created_lease
    if outcome.image_refusal is not None:
        # The children were applied with the StatefulSets' images kept; nothing rolls.
        _report(config, body, ReconcileProblem("InvalidSpec", outcome.image_refusal), event=True)
        return
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
            "standby_mode": cluster.spec.gocd.effective_standby_mode,
            "gocd_version": str(version) if version is not None else None,
        }
    )
    # Written by the supervisor's next status patch, which this reconcile's end wakes: one status
    # write after a reconcile instead of kopf's and the supervisor's (issue #16).
    reconciled = status.to_api()
    state.reconciled_status = {k: v for k, v in reconciled.items() if k in RECONCILE_STATUS_KEYS}
    applied_spec = spec_json(body)
    if (
        body.get("metadata", {}).get("annotations", {}).get(ANNOTATION_RECONCILED_SPEC)
        != applied_spec
    ):
        patch.setdefault("metadata", {}).setdefault("annotations", {})[
            ANNOTATION_RECONCILED_SPEC
        ] = applied_spec
    _report(config, body, None, event=False)


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator, bound to ``config``."""
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings)
        # The threads of every `asyncio.to_thread` (the Kubernetes client is synchronous). The
        # default, CPUs + 4 (6 on 2 cores), let 4 reconciles hold 4 of them for their whole run
        # while the supervisors of every other cluster queued for the remaining 2 (issue #16).
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=config.api_threads, thread_name_prefix="gocdha-api")
        )
        if config.webhook is not None:
            # The chart renders the ValidatingWebhookConfiguration; kopf only serves.
            settings.admission.managed = None
            settings.admission.server = webhook.server(
                config.kube, config.webhook, now=config.clock()
            )
        if config.tune_settings is not None:
            config.tune_settings(settings)
        if config.metrics_address is not None:
            try:
                host, port = config.metrics.serve(config.metrics_address)
            except OSError as exc:
                # A taken port is a configuration error: stop rather than run unobserved.
                where = ":".join(map(str, config.metrics_address))
                raise kopf.PermanentError(f"cannot serve metrics on {where}: {exc}") from None
            logger.info("metrics served on http://%s:%d/metrics", host, port)

    @kopf.on.cleanup(registry=registry)
    def stop_metrics(**_: Any) -> None:
        config.metrics.stop_serving()

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
    async def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        meta = body.get("metadata", {})
        began, error = time.monotonic(), None
        try:
            await reconcile_resource(config, body, patch)
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            config.metrics.reconcile_finished(
                str(meta.get("namespace")), str(meta.get("name")), time.monotonic() - began, error
            )

    @kopf.daemon(*resource, registry=registry, cancellation_timeout=10)
    async def supervise_cluster(meta: kopf.Meta, stopped: kopf.DaemonStopped, **_: Any) -> None:
        ref = ClusterRef(namespace=str(meta["namespace"]), name=str(meta["name"]))
        try:
            await supervise(config, ref, stopped)
        finally:
            # The daemon stops when the resource is deleted (or the operator exits): its series go.
            config.metrics.forget(ref.namespace, ref.name)

    @kopf.timer(*resource, interval=config.observe_interval, registry=registry)
    async def backups(meta: kopf.Meta, spec: kopf.Spec, **_: Any) -> None:
        """Start scheduled and requested backups, record finished ones (controller/backup.py).
        A cluster without backups or a recovery to follow costs no API request here."""
        if not spec.get("backup") and not (spec.get("bootstrap") or {}).get("recovery"):
            return
        await backup_tick(
            config.kube,
            config.operator_image,
            config.clock,
            str(meta["namespace"]),
            str(meta["name"]),
        )

    @kopf.on.event(*resource, registry=registry)
    def promotion_requested(meta: kopf.Meta, **_: Any) -> None:
        """Wake the cluster's supervisor now instead of at its next interval when a promotion
        annotation changed. A low-level event handler, not ``on.field``: kopf leaves every
        annotation under its own storage prefix (``gocdha.io/``) out of the diff that change
        handlers see, so an ``on.field`` handler of ``gocdha.io/promote`` never runs."""
        ref = ClusterRef(namespace=str(meta["namespace"]), name=str(meta["name"]))
        annotations = meta.get("annotations") or {}
        requested = (
            annotations.get(ANNOTATION_PROMOTE) or None,
            annotations.get(ANNOTATION_PROMOTE_FORCE) or None,
        )
        state = config.state(ref)
        if requested == state.seen_requests:
            return  # any other change (a status write, its echo): nothing to wake for
        previous, state.seen_requests = state.seen_requests, requested
        # The first sight (operator start) shows values set before: their clock, if they are
        # still pending, starts at the promotion's start (metrics.py), not now.
        for index, value in enumerate(requested):
            if value is not None and previous is not None and previous[index] != value:
                config.metrics.promotion_requested(ref.namespace, ref.name, value)
        if any(requested):
            state.wake.set()

    return registry
