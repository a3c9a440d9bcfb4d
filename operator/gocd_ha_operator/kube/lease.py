"""``coordination.k8s.io/v1`` Leases: read, create, and compare-and-swap update.

Two things hold a Lease in this project: each cluster's primary instance guard
(``<name>-primary``) and the operator's leader election (``gocd-ha-operator``). Both need the
same primitive: *write only if nobody wrote since I read*. A JSON merge patch that carries
``metadata.resourceVersion`` is exactly that on a real API server (it answers 409 Conflict when
the version moved), and needs no verb but ``update``/``patch`` on the one named Lease.

Times are ``MicroTime`` (``2006-01-02T15:04:05.000000Z``). A holder's *own* safety never depends
on comparing these wall-clock stamps with another machine's clock: see :mod:`rules.lease`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from gocd_ha_operator.api.constants import ANNOTATION_LEASE_TIMELINE, OPERATOR_NAME
from gocd_ha_operator.kube.apply import KubeApiError, KubeClient

API_VERSION: Final = "coordination.k8s.io/v1"
KIND: Final = "Lease"
MICROTIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


class LeaseConflictError(Exception):
    """Someone else wrote the Lease since it was read: re-read before deciding anything."""


def format_microtime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(MICROTIME_FORMAT)


def parse_microtime(value: str | None) -> datetime | None:
    """``MicroTime`` or ``Time`` (some clients write whole seconds); ``None`` when absent/bad."""
    if not value:
        return None
    for pattern in (MICROTIME_FORMAT, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease this project reads and writes."""

    name: str
    namespace: str
    holder: str | None
    duration_seconds: int | None
    renew_time: datetime | None
    acquire_time: datetime | None = None
    transitions: int = 0
    resource_version: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def timeline(self) -> int | None:
        value = self.annotations.get(ANNOTATION_LEASE_TIMELINE)
        return int(value) if value and value.isdigit() else None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> LeaseRecord:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            holder=spec.get("holderIdentity") or None,
            duration_seconds=int(duration) if duration is not None else None,
            renew_time=parse_microtime(spec.get("renewTime")),
            acquire_time=parse_microtime(spec.get("acquireTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=meta.get("resourceVersion"),
            annotations=dict(meta.get("annotations") or {}),
        )


def lease_object(
    name: str,
    namespace: str,
    *,
    holder: str | None,
    duration_seconds: int,
    now: datetime,
    labels: Mapping[str, str] | None = None,
    timeline: int | None = None,
) -> dict[str, Any]:
    """A new Lease as the API takes it."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    if timeline is not None:
        metadata["annotations"] = {ANNOTATION_LEASE_TIMELINE: str(timeline)}
    spec: dict[str, Any] = {"leaseDurationSeconds": duration_seconds, "leaseTransitions": 0}
    if holder is not None:
        spec.update(
            holderIdentity=holder,
            acquireTime=format_microtime(now),
            renewTime=format_microtime(now),
        )
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def get_lease(kube: KubeClient, namespace: str, name: str) -> LeaseRecord | None:
    obj = kube.get(API_VERSION, KIND, namespace, name)
    return LeaseRecord.from_api(obj) if obj is not None else None


def create_lease(kube: KubeClient, obj: Mapping[str, Any]) -> LeaseRecord:
    """Create; :class:`LeaseConflictError` when it already exists (someone was faster)."""
    try:
        return LeaseRecord.from_api(kube.create(obj))
    except KubeApiError as exc:
        if exc.status == 409:
            raise LeaseConflictError(str(exc)) from None
        raise


def write_lease(
    kube: KubeClient,
    current: LeaseRecord,
    *,
    holder: str,
    duration_seconds: int,
    now: datetime,
    timeline: int | None = None,
) -> LeaseRecord:
    """Renew (same holder) or take over (new holder) ``current``, only if it is still the version
    that was read: :class:`LeaseConflictError` otherwise."""
    if current.resource_version is None:
        raise ValueError("a Lease without resourceVersion cannot be updated safely")
    taking_over = holder != current.holder
    spec: dict[str, Any] = {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration_seconds,
        "renewTime": format_microtime(now),
    }
    if taking_over:
        spec["acquireTime"] = format_microtime(now)
        spec["leaseTransitions"] = current.transitions + 1
    metadata: dict[str, Any] = {"resourceVersion": current.resource_version}
    if timeline is not None:
        metadata["annotations"] = {ANNOTATION_LEASE_TIMELINE: str(timeline)}
    try:
        written = kube.patch(
            API_VERSION,
            KIND,
            current.namespace,
            current.name,
            {"metadata": metadata, "spec": spec},
        )
    except KubeApiError as exc:
        if exc.status == 409:
            raise LeaseConflictError(str(exc)) from None
        raise
    return LeaseRecord.from_api(written)


def hand_lease_to(
    kube: KubeClient,
    namespace: str,
    name: str,
    *,
    holder: str,
    duration_seconds: int,
    now: datetime,
) -> LeaseRecord | None:
    """Make ``holder`` the holder in one request, whoever held it: a merge patch without a
    ``resourceVersion`` precondition. Only for a holder that is known to have stopped (a
    switchover's stopped old primary), where a compare-and-swap that lost to the stopped side's
    last renewal would be read and written again anyway. ``None`` when the Lease is missing."""
    moment = format_microtime(now)
    spec = {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration_seconds,
        "acquireTime": moment,
        "renewTime": moment,
    }
    try:
        written = kube.patch(API_VERSION, KIND, namespace, name, {"spec": spec})
    except KubeApiError as exc:
        if exc.status == 404:
            return None
        raise
    return LeaseRecord.from_api(written)


def operator_identity(pod_name: str | None, hostname: str) -> str:
    """The operator replica's holder identity: its pod name, else the host name."""
    return pod_name or f"{OPERATOR_NAME}-{hostname}"
