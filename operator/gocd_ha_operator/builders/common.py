"""Pieces shared by the builders: topology, metadata and security contexts.

Everything here is pure: model in, plain dicts out. No I/O, no clock, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gocd_ha_operator.constants import SIDES, Role, Side, other_side
from gocd_ha_operator.credentials import ClusterCredentials
from gocd_ha_operator.labels import object_labels
from gocd_ha_operator.models import GoCDHACluster, ResourceRequirements
from gocd_ha_operator.names import ChildNames


@dataclass(frozen=True)
class Topology:
    """Which side is primary, and what a promotion has done to the sides so far.

    * ``fenced``: the side's GoCD server is stopped and no role Service selects it;
    * ``stopped``: the side's Postgres StatefulSet is at 0 replicas;
    * ``maintenance``: the side's GoCD server starts in maintenance mode (a promoted server,
      when the resource asks for it).
    """

    primary: Side = "a"
    fenced: frozenset[Side] = field(default_factory=frozenset)
    stopped: frozenset[Side] = field(default_factory=frozenset)
    maintenance: frozenset[Side] = field(default_factory=frozenset)

    @property
    def standby(self) -> Side:
        return other_side(self.primary)

    def role(self, side: Side) -> Role:
        return "primary" if side == self.primary else "standby"

    def running(self, side: Side) -> bool:
        """Whether the side serves: not fenced (its GoCD may run and Services may select it)."""
        return side not in self.fenced

    def postgres_running(self, side: Side) -> bool:
        return side not in self.stopped

    def __post_init__(self) -> None:
        sides = set(SIDES)
        if self.primary not in sides or not self.fenced | self.stopped | self.maintenance <= sides:
            raise ValueError(f"invalid topology: {self!r}")


@dataclass(frozen=True)
class BuildInputs:
    """Everything a builder may depend on."""

    cluster: GoCDHACluster
    topology: Topology
    credentials: ClusterCredentials
    operator_image: str

    @property
    def names(self) -> ChildNames:
        return ChildNames(self.cluster.name)


def metadata(
    inputs: BuildInputs,
    name: str,
    component: str,
    *,
    side: Side | None = None,
    role: Role | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": inputs.cluster.namespace,
        "labels": object_labels(inputs.cluster.name, component, side, role),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def service_host(inputs: BuildInputs, service: str) -> str:
    """In-cluster DNS name of a Service of this cluster."""
    return f"{service}.{inputs.cluster.namespace}.svc"


def pod_security_context(uid: int, gid: int) -> dict[str, Any]:
    """Pod Security "restricted" at pod level; ``fsGroup`` makes volumes writable for ``uid``."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(*, read_only_root: bool) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def resources(spec: ResourceRequirements) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if spec.requests:
        result["requests"] = dict(spec.requests)
    if spec.limits:
        result["limits"] = dict(spec.limits)
    return result


def claim_spec(size: str, storage_class: str | None, access_mode: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [access_mode],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return spec


#: Operator-image containers (sync agent, restore, add-on install) are small Python processes.
HELPER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "64Mi"},
    "limits": {"cpu": "200m", "memory": "128Mi"},
}
