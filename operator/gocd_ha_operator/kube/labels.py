"""Labels and owner references of every child object.

Labels are owner-independent (they depend on the cluster's name, the component and the side, never
on the owner's uid), so ``render`` without a cluster produces the same labels as the operator.
Pod template labels deliberately carry the side but never the role: a role change must not change
a pod template, or every promotion would restart the newly promoted primary. Role Services select
on the side instead, and the operator moves their selectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gocd_ha_operator.api.constants import (
    APP_NAME,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_ROLE,
    LABEL_SIDE,
    OPERATOR_NAME,
    PART_OF,
    Role,
    Side,
)


def selector_labels(cluster_name: str, component: str, side: Side | None = None) -> dict[str, str]:
    """The labels a selector matches on: stable for the life of the pod."""
    labels = {LABEL_NAME: APP_NAME, LABEL_INSTANCE: cluster_name, LABEL_COMPONENT: component}
    if side is not None:
        labels[LABEL_SIDE] = side
    return labels


def object_labels(
    cluster_name: str, component: str, side: Side | None = None, role: Role | None = None
) -> dict[str, str]:
    """The labels of a child object: the selector labels plus management and (optional) role."""
    labels = selector_labels(cluster_name, component, side)
    labels[LABEL_MANAGED_BY] = OPERATOR_NAME
    labels[LABEL_PART_OF] = PART_OF
    if role is not None:
        labels[LABEL_ROLE] = role
    return labels


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller owner reference to ``owner`` (a Kubernetes object with metadata.uid).

    ``blockOwnerDeletion`` makes foreground deletion wait for children; ``controller`` marks the
    operator as the one that reconciles them.
    """
    metadata = owner.get("metadata") or {}
    missing = [k for k in ("name", "uid") if not metadata.get(k)]
    if missing or not owner.get("apiVersion") or not owner.get("kind"):
        fields = ", ".join([*(f"metadata.{k}" for k in missing)] or ["apiVersion/kind"])
        raise ValueError(f"cannot reference an owner without {fields}")
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def with_owner(child: Mapping[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``child`` owned by ``owner``; other owners the child already has are kept."""
    reference = owner_reference(owner)
    result = dict(child)
    metadata = dict(result.get("metadata") or {})
    others = [r for r in metadata.get("ownerReferences") or [] if r.get("uid") != reference["uid"]]
    metadata["ownerReferences"] = [*others, reference]
    result["metadata"] = metadata
    return result
