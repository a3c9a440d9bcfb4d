"""The reconcile of a GoCDHACluster's children: credentials, build, apply, prune.

This is the synchronous core the kopf handler runs in a thread. It is idempotent: running it
again with the same resource issues no write. Credentials are generated only for Secrets that do
not exist yet and are read back from the Secrets otherwise, so a restart of the operator, or a
thousand reconciles, never changes a password under a running database.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from gocd_ha_operator.api.constants import (
    ANNOTATION_RECONCILED_SPEC,
    ANNOTATION_RESTART_REVISION,
    BC_TOKEN_KEY,
    SIDES,
    Side,
    operator_namespace_from,
)
from gocd_ha_operator.api.credentials import ClusterCredentials, decode_secret_value
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.api.versions import image_change_problem
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.builders.guard import build_primary_lease
from gocd_ha_operator.controller.tls import (
    CertificateVerdict,
    check_certificates,
    create_fresh_certificates,
    ensure_certificates,
)
from gocd_ha_operator.gocd.token import TokenFileError, parse_token
from gocd_ha_operator.kube.apply import (
    ApplyResult,
    KubeApiError,
    KubeClient,
    apply_child,
    delete_owned,
)
from gocd_ha_operator.kube.labels import with_owner
from gocd_ha_operator.kube.lease import (
    LeaseConflictError,
    LeaseRecord,
    create_lease,
    get_lease,
)
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.rules.promotion import topology_of
from gocd_ha_operator.rules.rollout import Pin, effective_pins, status_pins
from gocd_ha_operator.rules.topology import Topology

#: Requests one reconcile sends at the same time: its children are
#: independent objects, so a phase of them costs one round trip instead of one per child (issue
#: #16: 200 clusters waited for 4 reconciles sending 30 requests one after another).
APPLY_CONCURRENCY: Final = 8
#: Applied after everything they refer to (Secrets, the ConfigMap, claims, Services, the Lease).
WORKLOAD_KINDS: Final = frozenset({"StatefulSet", "Deployment"})

_T = TypeVar("_T")
_R = TypeVar("_R")


def _at_once(work: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``work`` on every item, up to :data:`APPLY_CONCURRENCY` at a time; results in ``items``'
    order. Every item is attempted; the first error (in that order) is raised."""
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(APPLY_CONCURRENCY, len(items))) as pool:
        return list(pool.map(work, items))


def _merge(result: ApplyResult, parts: Sequence[ApplyResult]) -> None:
    """Each part's outcome into ``result``, in order (the Events list children as built)."""
    for part in parts:
        result.created.extend(part.created)
        result.patched.extend(part.patched)
        result.unchanged.extend(part.unchanged)
        result.deleted.extend(part.deleted)


def _phases(children: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``children`` split into what the workloads refer to, and the workloads."""
    first = [child for child in children if child["kind"] not in WORKLOAD_KINDS]
    return first, [child for child in children if child["kind"] in WORKLOAD_KINDS]


class MissingSecretError(Exception):
    """A Secret the user referenced does not exist (yet). Retried; reported as a condition."""

    def __init__(self, field: str, name: str, key: str, detail: str = "does not exist") -> None:
        self.field = field
        super().__init__(f"{field}: Secret {name!r} (key {key!r}) {detail}")


def credential_secret_names(cluster: GoCDHACluster) -> frozenset[str]:
    """Secrets whose data is generated once and must never be rewritten."""
    names = ChildNames(cluster.name)
    return frozenset(
        {
            names.superuser_secret,
            names.replication_secret,
            names.gocd_db_user_secret,
            names.operator_secret,
            names.bc_token_secret,
        }
    )


def existing_operator_password(kube: KubeClient, cluster: GoCDHACluster) -> str | None:
    """The operator role's password from its Secret, or ``None`` while that Secret is missing."""
    secret = kube.get("v1", "Secret", cluster.namespace, ChildNames(cluster.name).operator_secret)
    return decode_secret_value(secret, "password") if secret is not None else None


def load_credentials(
    kube: KubeClient,
    cluster: GoCDHACluster,
    *,
    known: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> ClusterCredentials:
    """Existing credentials from their Secrets; fresh ones only where a Secret is missing.
    ``known``: Secrets the caller has just read (by name; ``None``: missing), not read again."""
    names = ChildNames(cluster.name)
    namespace = cluster.namespace
    fresh = ClusterCredentials.generate()
    already = known or {}

    def existing(secret_name: str, key: str) -> str | None:
        if secret_name in already:
            secret = already[secret_name]
        else:
            secret = kube.get("v1", "Secret", namespace, secret_name)
        return decode_secret_value(secret, key) if secret is not None else None

    ref = cluster.spec.gocd.business_continuity.token_secret_ref
    if ref is not None:
        token = existing(ref.name, ref.key)
        field = "spec.gocd.businessContinuity.tokenSecretRef"
        if token is None:
            raise MissingSecretError(field, ref.name, ref.key)
        try:
            parse_token(token, source=f"Secret {ref.name!r} key {ref.key!r}")
        except TokenFileError:
            raise MissingSecretError(
                field,
                ref.name,
                ref.key,
                "does not hold exactly one 'user = password' credential",
            ) from None
    else:
        token = existing(names.bc_token_secret, BC_TOKEN_KEY) or fresh.bc_token
    return ClusterCredentials(
        superuser_password=existing(names.superuser_secret, "password") or fresh.superuser_password,
        replication_password=existing(names.replication_secret, "password")
        or fresh.replication_password,
        gocd_password=existing(names.gocd_db_user_secret, "password") or fresh.gocd_password,
        operator_password=existing(names.operator_secret, "password") or fresh.operator_password,
        bc_token=token,
    )


@dataclass
class ReconcileOutcome:
    applied: ApplyResult
    credentials: ClusterCredentials
    topology: Topology
    #: Why spec.postgres.image was not rolled (a major-version change, an unknown tag): the
    #: StatefulSets keep their images (docs/architecture.md §16).
    image_refusal: str | None = None
    #: The cluster CA certificate as the TLS Secrets hold it after this reconcile (checked for
    #: renewal just now); ``None`` when it could not be read.
    ca_pem: bytes | None = None
    #: This reconcile created the CA and every server certificate Secret itself (a new cluster
    #: without a user-provided certificate): ``ca_pem`` is what they hold, and nothing is due for
    #: renewal or to be checked, so the supervisor need not read them again (issue #16).
    certificates_created: bool = False
    #: What both Postgres StatefulSets run when this reconcile created them, taken from the
    #: objects it sent: the supervisor records them in status without reading them back.
    created_pins: dict[Side, Pin] | None = None
    #: This reconcile checked the TLS Secrets (renewing what was due) and ``ca_pem`` is what
    #: they hold; with a user-provided certificate, ``certificate_verdict`` is its verdict. The
    #: supervisor takes both as its own check of now instead of reading the Secrets again.
    certificates_checked: bool = False
    certificate_verdict: CertificateVerdict | None = None
    #: The primary Lease as this reconcile created it (``None``: it existed or was not created
    #: here): the observation its end wakes judges it instead of reading it back (issue #16).
    created_lease: LeaseRecord | None = None


@dataclass(frozen=True)
class _FreshChildren:
    """What :func:`_create_fresh` made: the fields of :class:`ReconcileOutcome` it decides."""

    credentials: ClusterCredentials
    inputs: BuildInputs
    ca_pem: bytes | None
    certificates_created: bool
    created_pins: dict[Side, Pin] | None
    created_lease: LeaseRecord | None


def pin_of(statefulset: Mapping[str, Any] | None) -> Pin | None:
    """What a Postgres StatefulSet runs: its image and restart revision (``None``: no image)."""
    template = ((statefulset or {}).get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    image = next((c.get("image") for c in containers if c.get("name") == "postgres"), None)
    if not isinstance(image, str) or not image:
        return None
    revision = ((template.get("metadata") or {}).get("annotations") or {}).get(
        ANNOTATION_RESTART_REVISION
    )
    return Pin(image, revision if isinstance(revision, str) else None)


def postgres_statefulsets(
    kube: KubeClient, cluster: GoCDHACluster
) -> dict[Side, dict[str, Any] | None]:
    """Both Postgres StatefulSets as they are now (``None``: missing)."""
    names = ChildNames(cluster.name)
    return {
        side: kube.get(
            "apps/v1", "StatefulSet", cluster.namespace, names.postgres_statefulset(side)
        )
        for side in SIDES
    }


def pins_of(statefulsets: Mapping[Side, Mapping[str, Any] | None]) -> dict[Side, Pin]:
    """What each of ``statefulsets`` runs (those without a pin left out)."""
    return {side: pin for side, live in statefulsets.items() if (pin := pin_of(live)) is not None}


def live_pins(kube: KubeClient, cluster: GoCDHACluster) -> dict[Side, Pin]:
    """What each existing Postgres StatefulSet runs: its image and restart revision."""
    return pins_of(postgres_statefulsets(kube, cluster))


def read_credential_secrets(
    kube: KubeClient, cluster: GoCDHACluster
) -> dict[str, dict[str, Any] | None]:
    """The credential Secrets :func:`load_credentials` reads, by name (``None``: missing), read
    at once: the reconcile builds from them and then applies them without reading them again."""
    names = ChildNames(cluster.name)
    wanted = set(credential_secret_names(cluster))
    if cluster.spec.gocd.business_continuity.token_secret_ref is not None:
        wanted.discard(names.bc_token_secret)  # the user's Secret is read instead
    ordered = sorted(wanted)
    found = _at_once(lambda name: kube.get("v1", "Secret", cluster.namespace, name), ordered)
    return dict(zip(ordered, found, strict=True))


def _unwanted_claims(cluster: GoCDHACluster) -> list[str]:
    """Claims this resource created earlier and no longer needs (the user moved to an existing
    claim, or removed the artifacts volume)."""
    names = ChildNames(cluster.name)
    unwanted = []
    if cluster.spec.shared_storage.existing_claim is not None:
        unwanted.append(names.shared_pvc)
    artifacts = cluster.spec.gocd.artifacts
    if artifacts is None or artifacts.existing_claim is not None:
        unwanted.append(names.artifacts_pvc)
    return unwanted


def reconcile_children(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    *,
    operator_image: str,
    topology: Topology | None = None,
    operator_namespace: str | None = None,
) -> ReconcileOutcome:
    """Bring every child to what the resource asks for; return what was written.

    ``operator_namespace`` defaults to ``GOCDHA_OPERATOR_NAMESPACE`` (checked when ``run``
    starts), so every caller renders the same NetworkPolicy.
    """
    if topology is None:
        topology = topology_of(cluster)
    namespace = operator_namespace or operator_namespace_from(os.environ)
    image = cluster.spec.postgres.image
    # A resource never reconciled has no StatefulSet to read a pin from.
    statefulsets = {} if never_reconciled(owner) else postgres_statefulsets(kube, cluster)
    live = pins_of(statefulsets)
    pins = effective_pins(cluster.status.configuration, live, image, cluster.status.promotion)
    image_refusal = next(
        (
            f"spec.postgres.image {problem}"
            for pin in pins.values()
            if (problem := image_change_problem(pin.image, image)) is not None
        ),
        None,
    )
    immutable = credential_secret_names(cluster)
    result = ApplyResult()
    created = _create_fresh(
        kube,
        owner,
        cluster,
        topology=topology,
        operator_image=operator_image,
        operator_namespace=namespace,
        pins=pins,
        result=result,
    )
    certificates_created = certificates_checked = False
    certificate_verdict: CertificateVerdict | None = None
    created_pins: dict[Side, Pin] | None = None
    created_lease: LeaseRecord | None = None
    if created is not None:
        credentials, inputs, ca_pem = created.credentials, created.inputs, created.ca_pem
        certificates_created, created_pins = created.certificates_created, created.created_pins
        created_lease = created.created_lease
    else:
        secrets = read_credential_secrets(kube, cluster)
        credentials = load_credentials(kube, cluster, known=secrets)
        # Read once in this reconcile (under the cluster's apply lock): applied as read.
        known: dict[tuple[str, str], dict[str, Any] | None] = {
            ("Secret", name): secret for name, secret in secrets.items()
        }
        names = ChildNames(cluster.name)
        known.update(
            (("StatefulSet", names.postgres_statefulset(side)), live)
            for side, live in statefulsets.items()
        )
        # Before the pods that mount them (docs/architecture.md §17); renewed by the supervisor.
        check = check_certificates(kube, owner, cluster, now=datetime.now(UTC), result=result)
        ca_pem, certificate_verdict = check.ca_pem, check.verdict
        certificates_checked = ca_pem is not None
        inputs = BuildInputs(
            cluster=cluster,
            topology=topology,
            credentials=credentials,
            operator_image=operator_image,
            operator_namespace=namespace,
            pins=pins,
        )

        def apply(child: dict[str, Any]) -> ApplyResult:
            is_credential = child["kind"] == "Secret" and child["metadata"]["name"] in immutable
            part = ApplyResult()
            apply_child(kube, child, owner, part, immutable_data=is_credential, known=known)
            return part

        first, workloads = _phases(build_children(inputs))
        _merge(result, _at_once(apply, first))
        ensure_primary_lease(kube, owner, inputs, result)
        _merge(result, _at_once(apply, workloads))
    owner_uid = str(owner["metadata"]["uid"])
    # A cluster created just now made no claim it could no longer want.
    for claim in [] if created is not None else _unwanted_claims(cluster):
        delete_owned(
            kube,
            api_version="v1",
            kind="PersistentVolumeClaim",
            namespace=cluster.namespace,
            name=claim,
            owner_uid=owner_uid,
            result=result,
        )
    return ReconcileOutcome(
        applied=result,
        credentials=credentials,
        topology=topology,
        image_refusal=image_refusal,
        ca_pem=ca_pem,
        certificates_created=certificates_created,
        created_pins=created_pins,
        certificates_checked=certificates_checked,
        certificate_verdict=certificate_verdict,
        created_lease=created_lease,
    )


def never_reconciled(owner: Mapping[str, Any]) -> bool:
    """No reconcile has finished for this resource yet (it records the spec it applied and the
    generation it saw): its children most likely do not exist."""
    metadata = owner.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    status = owner.get("status") or {}
    return ANNOTATION_RECONCILED_SPEC not in annotations and not status.get("observedGeneration")


def _create_fresh(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    *,
    topology: Topology,
    operator_image: str,
    operator_namespace: str,
    pins: Mapping[Side, Pin],
    result: ApplyResult,
) -> _FreshChildren | None:
    """A resource never reconciled: its children are created without reading each one first
    (one request per child, issue #16). The credential Secrets go first, with fresh values; when
    one exists after all, nothing else is written and ``None`` sends the caller down the usual
    path (read every credential back, read before writing). Otherwise: the credentials, the
    inputs, the CA certificate, whether the TLS Secrets were all created here, the pins of the
    Postgres StatefulSets when both were created here and the Lease as created here
    (:class:`ReconcileOutcome`)."""
    if not never_reconciled(owner):
        return None
    credentials = ClusterCredentials.generate()
    ref = cluster.spec.gocd.business_continuity.token_secret_ref
    if ref is not None:
        credentials = dataclasses.replace(
            credentials, bc_token=load_credentials(kube, cluster).bc_token
        )
    inputs = BuildInputs(
        cluster=cluster,
        topology=topology,
        credentials=credentials,
        operator_image=operator_image,
        operator_namespace=operator_namespace,
        pins=pins,
    )
    immutable = credential_secret_names(cluster)
    children = build_children(inputs)
    secrets = [c for c in children if c["kind"] == "Secret" and c["metadata"]["name"] in immutable]

    def create_secret(child: dict[str, Any]) -> bool:
        try:
            kube.create(with_owner(child, owner))
        except KubeApiError as exc:
            if exc.status == 409:
                return False  # it exists: its value is the one to use
            raise
        return True

    made = _at_once(create_secret, secrets)
    result.created.extend(
        f"Secret/{child['metadata']['name']}" for child, ok in zip(secrets, made, strict=True) if ok
    )
    if not all(made):
        return None
    # The TLS Secrets before the pods that mount them (docs/architecture.md §17).
    ca_pem = create_fresh_certificates(kube, owner, cluster, now=datetime.now(UTC), result=result)
    certificates_created = ca_pem is not None
    if ca_pem is None:
        ca_pem = ensure_certificates(kube, owner, cluster, now=datetime.now(UTC), result=result)

    leases: list[LeaseRecord] = []

    def create(child: dict[str, Any]) -> ApplyResult:
        part = ApplyResult()
        if child["kind"] == "Lease":
            try:
                leases.append(create_lease(kube, child))
            except LeaseConflictError:
                part.unchanged.append(f"Lease/{inputs.names.primary_lease}")
            else:
                part.created.append(f"Lease/{inputs.names.primary_lease}")
        else:
            apply_child(kube, child, owner, part, create_first=True)
        return part

    # The Lease with what the workloads refer to: the primary's guard needs it to start.
    lease = with_owner(build_primary_lease(inputs, datetime.now(UTC)), owner)
    first, workloads = _phases([c for c in children if c not in secrets])
    _merge(result, _at_once(create, [*first, lease]))
    _merge(result, _at_once(create, workloads))
    names = inputs.names
    statefulsets = {child["metadata"]["name"]: child for child in workloads}
    sent = {side: statefulsets.get(names.postgres_statefulset(side)) for side in SIDES}
    pins = {side: pin for side, child in sent.items() if (pin := pin_of(child)) is not None}
    created_here = all(
        f"StatefulSet/{names.postgres_statefulset(side)}" in result.created for side in SIDES
    )
    return _FreshChildren(
        credentials=credentials,
        inputs=inputs,
        ca_pem=ca_pem,
        certificates_created=certificates_created,
        created_pins=pins if created_here and len(pins) == len(SIDES) else None,
        created_lease=leases[0] if leases else None,
    )


def changed_children(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The objects of ``after`` that ``before`` does not contain exactly as built (by kind and
    name), in ``after``'s order: what a change of topology has to write."""
    built = {(child["kind"], child["metadata"]["name"]): child for child in before}
    return [
        child for child in after if built.get((child["kind"], child["metadata"]["name"])) != child
    ]


def apply_topology_change(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    *,
    before: Topology,
    after: Topology,
    credentials: ClusterCredentials,
    operator_image: str,
    operator_namespace: str | None = None,
) -> ApplyResult:
    """A promotion step's apply: only the children whose built form differs between the
    topology the previous step applied (``before``) and this step's (``after``) — a role
    Service's selector, a workload's replicas, the ConfigMap's roles. Everything else is the
    reconcile's; no Secret is read (the caller has the credentials) and the Lease is not
    touched."""
    namespace = operator_namespace or operator_namespace_from(os.environ)
    # The same pins as every other apply (docs/architecture.md §16): a StatefulSet a step
    # rewrites (its replicas) keeps the image and restart revision status records, never the
    # spec's. The live objects are read only while status does not record both sides.
    configuration = cluster.status.configuration
    recorded = status_pins(configuration)
    live = {} if len(recorded) == len(SIDES) else live_pins(kube, cluster)
    pins = effective_pins(
        configuration, live, cluster.spec.postgres.image, cluster.status.promotion
    )

    def built(topology: Topology) -> list[dict[str, Any]]:
        return build_children(
            BuildInputs(
                cluster=cluster,
                topology=topology,
                credentials=credentials,
                operator_image=operator_image,
                operator_namespace=namespace,
                pins=pins,
            )
        )

    immutable = credential_secret_names(cluster)
    result = ApplyResult()
    changed = changed_children(built(before), built(after))

    def apply(child: dict[str, Any]) -> None:
        is_credential = child["kind"] == "Secret" and child["metadata"]["name"] in immutable
        apply_child(kube, child, owner, result, immutable_data=is_credential)

    # The primary Postgres Service first, alone (issue #16): GoCD's writes wait for it, and
    # among the other writes it would queue behind up to 15 requests at the API server. Then
    # the rest at once: they are independent objects, and the step is recorded done only when
    # every one is written (one round trip instead of one per object; an error is raised as
    # before).
    primary_service = ChildNames(cluster.name).postgres_role_service("primary")
    first = [
        c for c in changed if (c["kind"], c["metadata"]["name"]) == ("Service", primary_service)
    ]
    for child in first:
        apply(child)
    rest = [c for c in changed if c not in first]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(rest)))) as pool:
        list(pool.map(apply, rest))
    return result


def ensure_primary_lease(
    kube: KubeClient, owner: Mapping[str, Any], inputs: BuildInputs, result: ApplyResult
) -> None:
    """Create ``<name>-primary`` for the topology's primary when it does not exist; never patch
    it: the guard renews it and only a promotion hands it over (a reconcile that rewrote the
    holder would undo a failover's takeover)."""
    names = inputs.names
    if get_lease(kube, inputs.cluster.namespace, names.primary_lease) is not None:
        result.unchanged.append(f"Lease/{names.primary_lease}")
        return
    try:
        create_lease(kube, with_owner(build_primary_lease(inputs, datetime.now(UTC)), owner))
    except LeaseConflictError:
        result.unchanged.append(f"Lease/{names.primary_lease}")
        return
    result.created.append(f"Lease/{names.primary_lease}")
