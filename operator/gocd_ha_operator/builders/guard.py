"""The instance guard's objects: its container in each Postgres pod, its ServiceAccount, a Role that
reaches exactly two named objects, the binding, and the primary Lease itself.

Why so narrow: the guard runs next to the database with an API token. A Role limited by
``resourceNames`` to ``get``/``patch``/``watch`` of ``<name>-primary`` and ``get`` of
``<name>-postgres`` means a stolen token can neither read a Secret nor move any other Lease (the
operator's, another cluster's); ``patch`` is how it renews (a merge patch carrying
``resourceVersion`` is a compare-and-swap), ``watch`` (with a ``metadata.name`` field selector, the
only form ``resourceNames`` allows) is how it learns at once that the Lease was handed to its side,
and ``create`` is not needed (the operator creates the Lease).

The token is mounted into the guard container only (a projected volume), never into Postgres:
the pod keeps ``automountServiceAccountToken: false``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from gocd_ha_operator.api.constants import (
    CM_LEASE_TIMING_KEYS,
    COMPONENT_POSTGRES,
    LEASE_GRANT_FILE,
    PG_SOCKET_DIR,
    Side,
)
from gocd_ha_operator.builders.common import (
    HELPER_RESOURCES,
    BuildInputs,
    container_security_context,
    metadata,
)
from gocd_ha_operator.kube.lease import lease_object
from gocd_ha_operator.rules.lease import holder_identity

GUARD_CONTAINER: Final = "instance-guard"
TOKEN_VOLUME: Final = "guard-token"
TOKEN_MOUNT: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
GUARD_CREDENTIALS_VOLUME: Final = "guard-credentials"
GUARD_CREDENTIALS_MOUNT: Final = "/opt/gocdha/guard"
#: The token is rotated by the kubelet long before it expires.
TOKEN_SECONDS: Final = 3600
GRANT_PATH: Final = f"{PG_SOCKET_DIR}/{LEASE_GRANT_FILE}"


def build_guard_service_account(inputs: BuildInputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(inputs, inputs.names.guard_account, COMPONENT_POSTGRES),
        "automountServiceAccountToken": False,
    }


def guard_rules(inputs: BuildInputs) -> list[dict[str, Any]]:
    names = inputs.names
    return [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [names.primary_lease],
            "verbs": ["get", "patch", "watch"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [names.postgres_configmap],
            "verbs": ["get"],
        },
    ]


def build_guard_role(inputs: BuildInputs) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(inputs, inputs.names.guard_account, COMPONENT_POSTGRES),
        "rules": guard_rules(inputs),
    }


def build_guard_role_binding(inputs: BuildInputs) -> dict[str, Any]:
    name = inputs.names.guard_account
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(inputs, name, COMPONENT_POSTGRES),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": name, "namespace": inputs.cluster.namespace}
        ],
    }


def build_primary_lease(inputs: BuildInputs, now: datetime) -> dict[str, Any]:
    """The Lease as first created: held by the side the topology makes primary. Created once and
    never patched by the reconcile (the guard renews it, a promotion moves it)."""
    lease = lease_object(
        inputs.names.primary_lease,
        inputs.cluster.namespace,
        holder=holder_identity(inputs.cluster.name, inputs.topology.primary),
        duration_seconds=inputs.cluster.spec.failover.lease_timings.lease_duration,
        now=now,
        labels=metadata(inputs, inputs.names.primary_lease, COMPONENT_POSTGRES)["labels"],
    )
    return lease


def guard_container(inputs: BuildInputs, side: Side) -> dict[str, Any]:
    return {
        "name": GUARD_CONTAINER,
        "image": inputs.operator_image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "gocd-ha-operator",
            "instance-guard",
            f"--cluster={inputs.cluster.name}",
            f"--side={side}",
            # Paths as separate arguments: a path is a whole argument (what tools that map
            # container paths, such as the local kubelet, rewrite).
            "--socket-dir",
            PG_SOCKET_DIR,
            "--password-file",
            f"{GUARD_CREDENTIALS_MOUNT}/password",
            "--grant-file",
            GRANT_PATH,
        ],
        "env": [
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            }
        ],
        "resources": HELPER_RESOURCES,
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": [
            {"name": "run", "mountPath": PG_SOCKET_DIR},
            {
                "name": GUARD_CREDENTIALS_VOLUME,
                "mountPath": GUARD_CREDENTIALS_MOUNT,
                "readOnly": True,
            },
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT, "readOnly": True},
        ],
    }


def guard_volumes(inputs: BuildInputs, file_mode: int) -> list[dict[str, Any]]:
    """The operator role's password (to ask Postgres whether it is in recovery) and the API token
    with the CA and namespace, as the kubelet would automount them — for this container only."""
    return [
        {
            "name": GUARD_CREDENTIALS_VOLUME,
            "projected": {
                "defaultMode": file_mode,
                "sources": [
                    {
                        "secret": {
                            "name": inputs.names.operator_secret,
                            "items": [{"key": "password", "path": "password"}],
                        }
                    }
                ],
            },
        },
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "defaultMode": 0o444,
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": "token",
                            "expirationSeconds": TOKEN_SECONDS,
                        }
                    },
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        },
    ]


def lease_timing_data(inputs: BuildInputs) -> dict[str, str]:
    """The ConfigMap keys the guards read their timings from (not their arguments: a spec edit
    must not roll the database pods)."""
    timings = inputs.cluster.spec.failover.lease_timings
    values = (timings.lease_duration, timings.renew_deadline, timings.retry_period)
    return {key: str(value) for key, value in zip(CM_LEASE_TIMING_KEYS, values, strict=True)}
