"""Pure builders: a parsed ``GoCDHACluster`` (plus topology and credentials) in, manifests out.

No I/O, no clock, no randomness: the same inputs always give the same objects, which is what lets
the apply layer skip writes when nothing changed and lets ``render`` work without a cluster.
Owner references are not set here (they need the live object's uid); the apply layer adds them.

A layer above ``rules``: builders may import ``api``, ``kube`` (names, labels), ``postgres``
(configuration rendering), ``gocd`` and ``rules`` (the topology they render); the controller
imports them, never the reverse.
"""

from __future__ import annotations

from typing import Any

from gocd_ha_operator.api.constants import SIDES
from gocd_ha_operator.builders.backup import build_backup_pvc
from gocd_ha_operator.builders.common import BuildInputs
from gocd_ha_operator.builders.gocd import (
    build_artifacts_pvc,
    build_gocd_deployment,
    build_gocd_pvc,
    build_gocd_service,
    build_gocd_side_service,
)
from gocd_ha_operator.builders.guard import (
    build_guard_role,
    build_guard_role_binding,
    build_guard_service_account,
)
from gocd_ha_operator.builders.postgres import (
    build_postgres_configmap,
    build_postgres_instance_service,
    build_postgres_network_policy,
    build_postgres_pdb,
    build_postgres_role_service,
    build_postgres_statefulset,
    build_shared_pvc,
)
from gocd_ha_operator.builders.secrets import build_credential_secrets, build_gocd_db_secret


def build_children(inputs: BuildInputs) -> list[dict[str, Any]]:
    """Every child object, in an order that lets each one find what it refers to."""
    children: list[dict[str, Any] | None] = [
        *build_credential_secrets(inputs),
        *(build_gocd_db_secret(inputs, side) for side in SIDES),
        build_postgres_configmap(inputs),
        build_shared_pvc(inputs),
        build_backup_pvc(inputs),
        build_artifacts_pvc(inputs),
        *(build_gocd_pvc(inputs, side) for side in SIDES),
        *(build_postgres_instance_service(inputs, side) for side in SIDES),
        build_postgres_role_service(inputs, "primary"),
        build_postgres_role_service(inputs, "standby"),
        *(build_gocd_side_service(inputs, side) for side in SIDES),
        build_gocd_service(inputs),
        build_postgres_network_policy(inputs),
        build_postgres_pdb(inputs),
        build_guard_service_account(inputs),
        build_guard_role(inputs),
        build_guard_role_binding(inputs),
        *(build_postgres_statefulset(inputs, side) for side in SIDES),
        *(build_gocd_deployment(inputs, side) for side in SIDES),
    ]
    return [child for child in children if child is not None]


__all__ = ["BuildInputs", "build_children"]
