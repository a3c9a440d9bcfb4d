"""The operator's configuration and its per-cluster in-process state.

:class:`OperatorConfig` is what differs between a production run, a test and the demo. It also
owns the in-process state of every cluster this process supervises (:class:`ClusterState`): a typed
object shared by the reconcile handler, the observation loop and the promotion runner of one
cluster, instead of string keys in kopf's memo.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from gocd_ha_operator.api.constants import Side, operator_namespace_from
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.controller.metrics import OperatorMetrics
from gocd_ha_operator.controller.tls import CERTIFICATE_CHECK_INTERVAL, CertificateVerdict
from gocd_ha_operator.controller.webhook import WebhookConfig
from gocd_ha_operator.kube.apply import KubeClient, default_client
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.kube.lease import LeaseRecord
from gocd_ha_operator.rules.promotion import ObservationRecord, StepHook
from gocd_ha_operator.rules.rollout import Pin


@dataclass(frozen=True)
class ClusterRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ReconcileProblem:
    """Why the last reconcile could not apply the children (``Ready=False`` with this reason).

    The reconcile does not write conditions itself: the supervisor is their only writer, and puts
    this into ``Ready`` (one writer per status field, so no update is lost to a concurrent one).
    """

    reason: str
    message: str


@dataclass
class ClusterState:
    """What one operator process knows about one cluster between handler calls.

    Nothing here is needed for correctness after a restart (status holds everything durable); it
    coordinates the tasks of this process.
    """

    #: Set to run the observation loop now (a promotion annotation changed, a reconcile ended).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The values of ``gocdha.io/promote`` and ``promote-force`` last seen in a watch event
    #: (``None`` before the first): a change wakes the loop.
    seen_requests: tuple[str | None, str | None] | None = None
    #: When the supervisor last wrote an observation into status (a promotion request right
    #: after it is decided on it: ``rules.promotion.decide_on_recorded_observation``).
    last_observation: ObservationRecord | None = None
    #: Around "read status, build, apply children": the reconcile and a promotion step never apply
    #: children built from different role assignments at the same time.
    apply_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Around "read status, change it, patch it": the observation loop and the promotion runner
    #: of this process never overwrite each other's status changes.
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The primary Lease records this process saw and when (expiry is judged from first sight).
    lease_memo: dict[str, Any] = field(default_factory=dict)
    #: The last spec that parsed: observation and a running promotion go on with it while the
    #: resource's spec is invalid (children are never rebuilt from an invalid spec anyway).
    last_valid: GoCDHACluster | None = None
    #: The outcome of the last reconcile, when it failed.
    reconcile_problem: ReconcileProblem | None = None
    #: The promotion runner's task while a promotion runs in this process.
    runner: asyncio.Task[None] | None = None
    #: The credentials as their Secrets held them when last read, and the token Secret reference
    #: they were read with (``credentials_key``). The generated Secrets are never rewritten, so
    #: this is only dropped (:meth:`forget_credentials`) when it may have gone stale: a reconcile
    #: (spec change, operator start), a Postgres instance that rejects the operator's password,
    #: a changed reference or a changed user token Secret (``controller/status.py``).
    credentials: ClusterCredentials | None = None
    credentials_key: tuple[str, ...] | None = None
    #: Counts the status patches of this process (the supervisor's and the runner's), +1 when
    #: one is sent and +1 when it is answered: a body read before the last change is stale.
    status_writes: int = 0
    #: The cluster CA certificate clients verify Postgres with, and when the supervisor last
    #: checked the TLS Secrets (renewal, docs/architecture.md §17). Certificates live for months:
    #: checking them once per ``CERTIFICATE_CHECK_INTERVAL`` instead of at every observation keeps
    #: an idle cluster at one Secret read per interval (issue #16), and a promotion step reads none.
    ca_pem: bytes | None = None
    certificates_checked_at: datetime | None = None
    #: With a user-provided certificate (``spec.tls.serverCertificateSecret``): the last check's
    #: verdict, which the supervisor puts in ``CertificateReady``.
    certificate_verdict: CertificateVerdict | None = None
    #: What both Postgres StatefulSets run, handed over by the reconcile that created them: the
    #: supervisor's next observation records it in status instead of reading them (issue #16).
    created_pins: dict[Side, Pin] | None = None
    #: The primary Lease as the reconcile that created it got it back: the supervisor's next
    #: iteration (the one that reconcile's end wakes) judges it instead of reading it (issue
    #: #16), and drops it whether it used it or not.
    created_lease: LeaseRecord | None = None
    #: ``observedGeneration``, ``standbyMode`` and ``gocdVersion`` (API form; a key left out is
    #: removed) as the last reconcile concluded them, until a status patch of the supervisor
    #: carries them (``controller/status.py``).
    reconciled_status: dict[str, Any] | None = None

    def forget_credentials(self) -> None:
        self.credentials = None
        self.credentials_key = None


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
    #: Threads for the synchronous Kubernetes client (``asyncio.to_thread``): a running
    #: reconcile holds one, every supervisor's read takes one briefly.
    api_threads: int = 32
    #: Test hook called at every promotion step (see ``promotion.StepHook``).
    promotion_hook: StepHook | None = None
    #: Adjusts kopf's settings after the project's own (tests: timeouts of the API emulator).
    tune_settings: Callable[[kopf.OperatorSettings], None] | None = None
    #: The validating admission webhook; ``None``: no webhook (invalid resources are reported in
    #: their status only).
    webhook: WebhookConfig | None = None
    #: The operator's metrics (fed from status); served on ``metrics_address`` while it runs.
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    #: ``(host, port)`` of ``/metrics`` (port 0: any free port); ``None``: not served.
    metrics_address: tuple[str, int] | None = None
    #: How long a step before the point of no return retries transient errors (a refused
    #: connection, a failed API write) before the promotion gives up and unfences.
    step_retry_seconds: float = 30.0
    #: How often the supervisor checks the TLS Secrets (renewal; a changed user-provided
    #: certificate). Tests shorten it.
    certificate_check_interval: timedelta = CERTIFICATE_CHECK_INTERVAL
    _kube: KubeClient | None = field(default=None, init=False, repr=False)
    _reconciles: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    _clusters: dict[ClusterRef, ClusterState] = field(default_factory=dict, init=False, repr=False)

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
            self._kube.on_error = self.metrics.api_error
        return self._kube

    def state(self, ref: ClusterRef) -> ClusterState:
        """The in-process state of one cluster, created on first use (in the operator's loop)."""
        state = self._clusters.get(ref)
        if state is None:
            state = self._clusters[ref] = ClusterState()
        return state

    def forget(self, ref: ClusterRef) -> None:
        self._clusters.pop(ref, None)
