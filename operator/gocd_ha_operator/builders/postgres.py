"""Postgres children: ConfigMap, StatefulSets, Services, shared volume, NetworkPolicy, PDB.

Why the role is not in the pod template: the entrypoint reads ``GOCDHA_ROLE`` from the ConfigMap
key ``role-<side>`` when the container starts. A promotion changes that key and the role Services,
never a pod template, so promoting does not restart the new primary; a restarted old primary reads
``standby`` and cannot come back as a primary (fencing).
"""

from __future__ import annotations

from importlib import resources as importlib_resources
from typing import Any, Final

from gocd_ha_operator.api.constants import (
    ANNOTATION_RESTART_REVISION,
    BACKUP_MOUNT,
    CM_ARCHIVE_WAL,
    CM_BACKUP,
    CM_CLEANUP_WAL,
    CM_ENTRYPOINT,
    CM_PG_HBA_CONF,
    CM_POSTGRESQL_CONF,
    CM_RECOVER,
    CM_RESTORE_WAL,
    COMPONENT_BACKUP,
    COMPONENT_GOCD,
    COMPONENT_POSTGRES,
    COMPONENT_STORAGE,
    ENV_ARCHIVE_DIR,
    ENV_CONFIG_DIR,
    ENV_DATABASE,
    ENV_GOCD_PASSWORD_FILE,
    ENV_LEASE_GRANT_FILE,
    ENV_OPERATOR_PASSWORD_FILE,
    ENV_PEER_HOST,
    ENV_PEER_PORT,
    ENV_PORT,
    ENV_REPLICATION_PASSWORD_FILE,
    ENV_ROLE,
    ENV_SCRIPTS_DIR,
    ENV_SIDE,
    ENV_SOCKET_DIR,
    ENV_SUPERUSER_PASSWORD_FILE,
    GOCD_GID,
    GOCD_MIRROR_SUBDIR,
    LABEL_SIDE,
    NAMESPACE_NAME_LABEL,
    NO_SIDE,
    OPERATOR_POD_LABEL,
    OPERATOR_POD_LABEL_VALUE,
    PG_CONFIG_DIR,
    PG_DATA_MOUNT,
    PG_SECRETS_DIR,
    PG_SOCKET_DIR,
    PGDATA,
    POSTGRES_PORT,
    POSTGRES_UID_ALPINE,
    POSTGRES_UID_DEBIAN,
    RECOVERY_ARCHIVE_MOUNT,
    RECOVERY_MARKER,
    SHARED_MOUNT,
    SIDES,
    WAL_ARCHIVE_SUBDIR,
    Role,
    Side,
    cm_role_key,
    other_side,
)
from gocd_ha_operator.api.versions import is_alpine_image
from gocd_ha_operator.builders.common import (
    HEADLESS,
    BuildInputs,
    claim_spec,
    container_security_context,
    metadata,
    pod_security_context,
    resources,
    service_host,
)
from gocd_ha_operator.builders.guard import (
    GRANT_PATH,
    guard_container,
    guard_volumes,
    lease_timing_data,
)
from gocd_ha_operator.builders.tls import (
    guard_tls_arguments,
    server_tls_env,
    server_tls_mount,
    server_tls_volume,
)
from gocd_ha_operator.kube.labels import selector_labels
from gocd_ha_operator.postgres import config as pgconfig

#: The instance scripts shipped in the ConfigMap, read once from the package (not per build).
INSTANCE_SCRIPTS: Final[dict[str, str]] = {
    key: (importlib_resources.files("gocd_ha_operator.postgres") / "scripts" / key).read_text()
    for key in (
        CM_ENTRYPOINT,
        CM_ARCHIVE_WAL,
        CM_RESTORE_WAL,
        CM_CLEANUP_WAL,
        CM_BACKUP,
        CM_RECOVER,
    )
}

#: Secret volume files must be readable by the pod's fsGroup, and by nobody else.
SECRET_FILE_MODE: Final = 0o440
CONFIG_FILE_MODE: Final = 0o444
_CREDENTIAL_DIRS: Final = ("superuser", "replication", "operator", "gocd")


def postgres_uid(image: str) -> int:
    return POSTGRES_UID_ALPINE if is_alpine_image(image) else POSTGRES_UID_DEBIAN


def shared_claim_name(inputs: BuildInputs) -> str:
    existing = inputs.cluster.spec.shared_storage.existing_claim
    return existing if existing is not None else inputs.names.shared_pvc


def build_postgres_configmap(inputs: BuildInputs) -> dict[str, Any]:
    spec = inputs.cluster.spec.postgres
    data = {
        CM_POSTGRESQL_CONF: pgconfig.render_postgresql_conf(
            parameters=spec.parameters, synchronous=spec.synchronous
        ),
        CM_PG_HBA_CONF: pgconfig.render_pg_hba(database=spec.database),
        **INSTANCE_SCRIPTS,
    }
    for side in SIDES:
        data[cm_role_key(side)] = inputs.topology.role(side)
    data.update(lease_timing_data(inputs))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(inputs, inputs.names.postgres_configmap, COMPONENT_POSTGRES),
        "data": data,
    }


def build_shared_pvc(inputs: BuildInputs) -> dict[str, Any] | None:
    """The RWX claim for the WAL archive and GoCD mirror; ``None`` with ``existingClaim``."""
    shared = inputs.cluster.spec.shared_storage
    if shared.existing_claim is not None or shared.size is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(inputs, inputs.names.shared_pvc, COMPONENT_STORAGE),
        "spec": claim_spec(shared.size, shared.storage_class_name, "ReadWriteMany"),
    }


def _env(inputs: BuildInputs, side: Side) -> list[dict[str, Any]]:
    names = inputs.names
    peer = other_side(side)
    plain = {
        "PGDATA": PGDATA,
        ENV_SIDE: side,
        ENV_PEER_HOST: service_host(inputs, names.postgres_instance_service(peer)),
        ENV_PEER_PORT: str(POSTGRES_PORT),
        ENV_PORT: str(POSTGRES_PORT),
        ENV_ARCHIVE_DIR: f"{SHARED_MOUNT}/{WAL_ARCHIVE_SUBDIR}",
        ENV_CONFIG_DIR: PG_CONFIG_DIR,
        ENV_SCRIPTS_DIR: PG_CONFIG_DIR,
        ENV_SOCKET_DIR: PG_SOCKET_DIR,
        ENV_DATABASE: inputs.cluster.spec.postgres.database,
        ENV_SUPERUSER_PASSWORD_FILE: f"{PG_SECRETS_DIR}/superuser/password",
        ENV_REPLICATION_PASSWORD_FILE: f"{PG_SECRETS_DIR}/replication/password",
        ENV_OPERATOR_PASSWORD_FILE: f"{PG_SECRETS_DIR}/operator/password",
        ENV_GOCD_PASSWORD_FILE: f"{PG_SECRETS_DIR}/gocd/password",
        # A primary starts only with the instance guard's grant (docs/operator.md).
        ENV_LEASE_GRANT_FILE: GRANT_PATH,
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    env.append(
        {
            "name": ENV_ROLE,
            "valueFrom": {
                "configMapKeyRef": {"name": names.postgres_configmap, "key": cm_role_key(side)}
            },
        }
    )
    return env


def _pg_isready_probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": ["pg_isready", "--host", PG_SOCKET_DIR, "--port", str(POSTGRES_PORT)]},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _credential_volume(inputs: BuildInputs) -> dict[str, Any]:
    names = inputs.names
    secret_names = (
        names.superuser_secret,
        names.replication_secret,
        names.operator_secret,
        names.gocd_db_user_secret,
    )
    return {
        "name": "credentials",
        "projected": {
            "defaultMode": SECRET_FILE_MODE,
            "sources": [
                {
                    "secret": {
                        "name": secret,
                        "items": [{"key": "password", "path": f"{directory}/password"}],
                    }
                }
                for secret, directory in zip(secret_names, _CREDENTIAL_DIRS, strict=True)
            ],
        },
    }


#: The side whose instance is the first primary, and so the one that bootstraps from a backup.
BOOTSTRAP_SIDE: Final[Side] = "a"


def recovering(inputs: BuildInputs) -> bool:
    """The cluster bootstraps from a backup and its first primary has not finished yet."""
    bootstrap = inputs.cluster.spec.bootstrap
    return (
        bootstrap is not None
        and bootstrap.recovery is not None
        and not inputs.cluster.status.backup.bootstrap_recovered
    )


def recovery_additions(inputs: BuildInputs) -> tuple[list[dict[str, str]], list[Any], list[Any]]:
    """Env, mounts and volumes the first primary (side a) needs to bootstrap from a backup (empty
    lists without ``spec.bootstrap.recovery``). Read-only: recovery never writes to the source.
    In Cold mode the backup's GoCD files go to this cluster's mirror on the shared volume, for
    the GoCD server's restore init container (which waits for :data:`RECOVERY_MARKER`)."""
    bootstrap = inputs.cluster.spec.bootstrap
    recovery = bootstrap.recovery if bootstrap is not None else None
    if recovery is None or not recovering(inputs):
        # Once the primary has recovered, the source's claims are no longer needed (and may be
        # deleted): the mounts go, at the cost of one restart of that freshly recovered primary.
        return [], [], []
    env = {
        "GOCDHA_RECOVERY_BACKUP_DIR": BACKUP_MOUNT,
        "GOCDHA_RECOVERY_BACKUP": recovery.backup,
        "GOCDHA_RECOVERY_MARKER": RECOVERY_MARKER,
    }
    if inputs.cluster.spec.gocd.effective_standby_mode == "Cold":
        env["GOCDHA_GOCD_RESTORE_DIR"] = f"{SHARED_MOUNT}/{GOCD_MIRROR_SUBDIR}"
        env["GOCDHA_GOCD_FILES_GROUP"] = str(GOCD_GID)
    mounts: list[Any] = [
        {
            "name": "recovery-backups",
            "mountPath": env["GOCDHA_RECOVERY_BACKUP_DIR"],
            "readOnly": True,
        }
    ]
    volumes: list[Any] = [
        {
            "name": "recovery-backups",
            "persistentVolumeClaim": {"claimName": recovery.backup_claim, "readOnly": True},
        }
    ]
    if recovery.target_time is not None:
        env["GOCDHA_RECOVERY_TARGET_TIME"] = recovery.target_time
    if recovery.archive_claim is not None:
        env["GOCDHA_RECOVERY_ARCHIVE_DIR"] = f"{RECOVERY_ARCHIVE_MOUNT}/{WAL_ARCHIVE_SUBDIR}"
        mounts.append(
            {"name": "recovery-source", "mountPath": RECOVERY_ARCHIVE_MOUNT, "readOnly": True}
        )
        volumes.append(
            {
                "name": "recovery-source",
                "persistentVolumeClaim": {"claimName": recovery.archive_claim, "readOnly": True},
            }
        )
    return [{"name": k, "value": v} for k, v in env.items()], mounts, volumes


def build_postgres_statefulset(inputs: BuildInputs, side: Side) -> dict[str, Any]:
    names = inputs.names
    spec = inputs.cluster.spec.postgres
    pin = inputs.pins.get(side)
    image = pin.image if pin is not None else spec.image
    uid = postgres_uid(image)
    name = names.postgres_statefulset(side)
    labels = selector_labels(inputs.cluster.name, COMPONENT_POSTGRES, side)
    pod_meta = metadata(inputs, name, COMPONENT_POSTGRES, side=side)
    template_meta: dict[str, Any] = {"labels": pod_meta["labels"]}
    if pin is not None and pin.restart_revision is not None:
        # A rolling restart replaces this side's pod (docs/architecture.md §16).
        template_meta["annotations"] = {ANNOTATION_RESTART_REVISION: pin.restart_revision}
    container: dict[str, Any] = {
        "name": "postgres",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["bash", f"{PG_CONFIG_DIR}/{CM_ENTRYPOINT}"],
        "env": _env(inputs, side),
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        # A base backup of a large database can take long: the startup probe allows an hour.
        "startupProbe": _pg_isready_probe(period=10, failures=360),
        "readinessProbe": _pg_isready_probe(period=5, failures=3),
        "livenessProbe": _pg_isready_probe(period=10, failures=6),
        "resources": resources(spec.resources),
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": [
            {"name": "data", "mountPath": PG_DATA_MOUNT},
            {"name": "config", "mountPath": PG_CONFIG_DIR, "readOnly": True},
            {"name": "credentials", "mountPath": PG_SECRETS_DIR, "readOnly": True},
            {"name": "shared", "mountPath": SHARED_MOUNT},
            {"name": "run", "mountPath": PG_SOCKET_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp
        ],
    }
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {"name": names.postgres_configmap, "defaultMode": CONFIG_FILE_MODE},
        },
        _credential_volume(inputs),
        {"name": "shared", "persistentVolumeClaim": {"claimName": shared_claim_name(inputs)}},
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    pod_security = pod_security_context(uid, uid)
    if side == BOOTSTRAP_SIDE and recovering(inputs):
        # The backup's GoCD files are handed to GoCD's group (0) on the shared volume.
        pod_security["supplementalGroups"] = [GOCD_GID]
    guard = guard_container(inputs, side)
    # TLS (docs/architecture.md §17): the server certificate Secret in both containers.
    container["env"].append(server_tls_env())
    container["volumeMounts"].append(server_tls_mount())
    guard["command"] = [*guard["command"], *guard_tls_arguments()]
    guard["volumeMounts"] = [*guard["volumeMounts"], server_tls_mount()]
    volumes.append(server_tls_volume(inputs, SECRET_FILE_MODE))
    if side == BOOTSTRAP_SIDE:
        env, mounts, extra_volumes = recovery_additions(inputs)
        container["env"] = [*container["env"], *env]
        container["volumeMounts"] = [*container["volumeMounts"], *mounts]
        volumes.extend(extra_volumes)
    storage = spec.storage
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(
            inputs, name, COMPONENT_POSTGRES, side=side, role=inputs.topology.role(side)
        ),
        "spec": {
            "serviceName": names.postgres_instance_service(side),
            "replicas": 1 if inputs.topology.postgres_running(side) else 0,
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            # The data outlives the resource: deleting a GoCDHACluster never deletes a database.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": template_meta,
                "spec": {
                    # The token is projected into the guard container only.
                    "automountServiceAccountToken": False,
                    "serviceAccountName": names.guard_account,
                    # The guard stops the postmaster with a signal (it runs as the same uid).
                    "shareProcessNamespace": True,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": pod_security,
                    "containers": [container, guard],
                    "volumes": [*volumes, *guard_volumes(inputs, SECRET_FILE_MODE)],
                },
            },
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "data", "labels": labels},
                    "spec": claim_spec(storage.size, storage.storage_class_name, "ReadWriteOnce"),
                }
            ],
        },
    }


def _postgres_service(
    inputs: BuildInputs,
    name: str,
    selected_side: str,
    *,
    side: Side | None,
    role: Role | None,
    publish_not_ready: bool,
    headless: bool,
) -> dict[str, Any]:
    selector = selector_labels(inputs.cluster.name, COMPONENT_POSTGRES)
    selector[LABEL_SIDE] = selected_side
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(inputs, name, COMPONENT_POSTGRES, side=side, role=role),
        "spec": {
            "type": "ClusterIP",
            **({"clusterIP": HEADLESS} if headless else {}),
            "selector": selector,
            "publishNotReadyAddresses": publish_not_ready,
            "ports": [
                {
                    "name": "postgres",
                    "port": POSTGRES_PORT,
                    "targetPort": "postgres",
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_postgres_instance_service(inputs: BuildInputs, side: Side) -> dict[str, Any]:
    """One Service per instance. It also publishes not-ready pods, so the operator can observe an
    instance that is running but not (yet) ready, and a standby can reach a starting primary.
    Headless: its one pod never moves, so it needs no virtual IP (cluster DNS answers with the
    pod's address; clients dial the Service port, which is the container port)."""
    return _postgres_service(
        inputs,
        inputs.names.postgres_instance_service(side),
        side,
        side=side,
        role=None,
        publish_not_ready=True,
        headless=True,
    )


def build_postgres_role_service(inputs: BuildInputs, role: Role) -> dict[str, Any]:
    """``<name>-pg-primary`` / ``-standby``: selectors follow the roles; a fenced side is not
    selected at all."""
    topology = inputs.topology
    side = topology.primary if role == "primary" else topology.standby
    selected = side if topology.running(side) else NO_SIDE
    return _postgres_service(
        inputs,
        inputs.names.postgres_role_service(role),
        selected,
        side=None,
        role=role,
        publish_not_ready=False,
        headless=False,
    )


def build_postgres_network_policy(inputs: BuildInputs) -> dict[str, Any]:
    """Postgres accepts connections only from its peer, its GoCD servers and the operator."""
    cluster = inputs.cluster.name
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(inputs, inputs.names.postgres_network_policy, COMPONENT_POSTGRES),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cluster, COMPONENT_POSTGRES)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "podSelector": {
                                "matchLabels": selector_labels(cluster, COMPONENT_POSTGRES)
                            }
                        },
                        {"podSelector": {"matchLabels": selector_labels(cluster, COMPONENT_GOCD)}},
                        # Backup Jobs take base backups over a replication connection.
                        {
                            "podSelector": {
                                "matchLabels": selector_labels(cluster, COMPONENT_BACKUP)
                            }
                        },
                        # One peer with both selectors: the operator's pods in the operator's
                        # namespace only (two peers would admit either, from anywhere).
                        {
                            "namespaceSelector": {
                                "matchLabels": {NAMESPACE_NAME_LABEL: inputs.operator_namespace}
                            },
                            "podSelector": {
                                "matchLabels": {OPERATOR_POD_LABEL: OPERATOR_POD_LABEL_VALUE}
                            },
                        },
                    ],
                    "ports": [{"protocol": "TCP", "port": POSTGRES_PORT}],
                }
            ],
        },
    }


def build_postgres_pdb(inputs: BuildInputs) -> dict[str, Any]:
    """At most one Postgres instance may be evicted at a time: a node drain never takes the primary
    and the standby down together (and waits for a missing standby to come back first)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(inputs, inputs.names.postgres_pdb, COMPONENT_POSTGRES),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(inputs.cluster.name, COMPONENT_POSTGRES)},
        },
    }
