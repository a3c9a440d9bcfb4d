"""Pieces shared by the builders: build inputs, metadata and security contexts.

Everything here is pure: model in, plain dicts out. No I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gocd_ha_operator.api.constants import DEFAULT_OPERATOR_NAMESPACE, Role, Side
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster, ResourceRequirements
from gocd_ha_operator.kube.labels import object_labels
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.rules.rollout import Pin
from gocd_ha_operator.rules.topology import Topology

#: ``spec.clusterIP`` of a headless Service: no virtual IP, cluster DNS answers with the pods'.
HEADLESS: Final = "None"


@dataclass(frozen=True)
class BuildInputs:
    """Everything a builder may depend on."""

    cluster: GoCDHACluster
    topology: Topology
    credentials: ClusterCredentials
    operator_image: str
    #: Where the operator runs: the only namespace the Postgres NetworkPolicy admits it from.
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    #: What each Postgres StatefulSet runs (image, restart revision), when it is pinned: only a
    #: rolling restart moves a side to the spec's image (docs/architecture.md §16). A side not
    #: here gets the spec's image and no restart annotation.
    pins: Mapping[Side, Pin] = field(default_factory=dict)

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
