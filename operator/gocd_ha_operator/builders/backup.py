"""Backup children: the backup volume's claim and one Job per backup; recovery mounts.

A backup Job runs ``backup.sh`` from the ``<name>-postgres`` ConfigMap in the Postgres image the
cluster already uses (no image of its own): ``pg_basebackup`` from the standby when it streams
(from the primary otherwise), the Cold mirror of GoCD's files from the shared volume, and the
retention of older backups. It writes its ``manifest.json`` as the container's termination
message, which is how the operator learns the backup's size and WAL range without mounting
anything. A Job is never retried by Kubernetes (``backoffLimit: 0``): a failed backup is reported
as such and the next schedule slot tries again.
"""

from __future__ import annotations

from typing import Any, Final

from gocd_ha_operator.api.constants import (
    BACKUP_MOUNT,
    CM_BACKUP,
    COMPONENT_BACKUP,
    ENV_ARCHIVE_DIR,
    ENV_REPLICATION_PASSWORD_FILE,
    GOCD_GID,
    GOCD_MIRROR_SUBDIR,
    LABEL_BACKUP,
    LABEL_BACKUP_TRIGGER,
    PG_CONFIG_DIR,
    PG_SECRETS_DIR,
    POSTGRES_PORT,
    SHARED_MOUNT,
    WAL_ARCHIVE_SUBDIR,
    Side,
)
from gocd_ha_operator.builders.common import (
    BuildInputs,
    claim_spec,
    container_security_context,
    metadata,
    pod_security_context,
    service_host,
)
from gocd_ha_operator.builders.postgres import (
    CONFIG_FILE_MODE,
    SECRET_FILE_MODE,
    postgres_uid,
    shared_claim_name,
)
from gocd_ha_operator.builders.tls import CA_FILE, ca_mount, ca_volume

#: A backup that has not finished after this long is stopped and reported failed.
BACKUP_DEADLINE_SECONDS: Final = 6 * 3600
#: Where the container writes its manifest for the operator to read (the Kubernetes default).
TERMINATION_LOG: Final = "/dev/termination-log"
BACKUP_RESOURCES: Final[dict[str, Any]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


def backup_claim_name(inputs: BuildInputs) -> str | None:
    backup = inputs.cluster.spec.backup
    if backup is None:
        return None
    existing = backup.volume.existing_claim
    return existing if existing is not None else inputs.names.backup_pvc


def build_backup_pvc(inputs: BuildInputs) -> dict[str, Any] | None:
    """The backup volume, when the operator creates it (``spec.backup.volume.size``)."""
    backup = inputs.cluster.spec.backup
    if backup is None or backup.volume.size is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(inputs, inputs.names.backup_pvc, COMPONENT_BACKUP),
        "spec": claim_spec(backup.volume.size, backup.volume.storage_class_name, "ReadWriteOnce"),
    }


def _backup_env(inputs: BuildInputs, backup: str, source: Side) -> list[dict[str, str]]:
    spec = inputs.cluster.spec
    assert spec.backup is not None
    retention = spec.backup.retention
    env = {
        "GOCDHA_BACKUP_DIR": BACKUP_MOUNT,
        "GOCDHA_BACKUP_HOST": service_host(inputs, inputs.names.postgres_instance_service(source)),
        "GOCDHA_BACKUP_PORT": str(POSTGRES_PORT),
        "GOCDHA_BACKUP_NAME": backup,
        ENV_REPLICATION_PASSWORD_FILE: f"{PG_SECRETS_DIR}/replication/password",
        ENV_ARCHIVE_DIR: f"{SHARED_MOUNT}/{WAL_ARCHIVE_SUBDIR}",
        "GOCDHA_TERMINATION_LOG": TERMINATION_LOG,
        "GOCDHA_TLS_CA_FILE": CA_FILE,
    }
    if spec.gocd.effective_standby_mode == "Cold":
        env["GOCDHA_GOCD_FILES_DIR"] = f"{SHARED_MOUNT}/{GOCD_MIRROR_SUBDIR}"
    if retention.count is not None:
        env["GOCDHA_BACKUP_KEEP"] = str(retention.count)
    if retention.max_age_days is not None:
        env["GOCDHA_BACKUP_MAX_AGE_SECONDS"] = str(retention.max_age_days * 86400)
    return [{"name": key, "value": value} for key, value in env.items()]


def build_backup_job(
    inputs: BuildInputs, backup: str, source: Side, trigger: str
) -> dict[str, Any]:
    """The Job that takes backup ``backup`` from the instance of side ``source``."""
    claim = backup_claim_name(inputs)
    if claim is None:
        raise ValueError("spec.backup is not set: no backup volume to write to")
    names = inputs.names
    image = inputs.cluster.spec.postgres.image
    uid = postgres_uid(image)
    meta = metadata(inputs, names.backup_job(backup), COMPONENT_BACKUP)
    meta["labels"] = {**meta["labels"], LABEL_BACKUP: backup, LABEL_BACKUP_TRIGGER: trigger}
    pod_labels = {**meta["labels"]}
    container = {
        "name": "backup",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["bash", f"{PG_CONFIG_DIR}/{CM_BACKUP}"],
        "env": _backup_env(inputs, backup, source),
        "resources": BACKUP_RESOURCES,
        "securityContext": container_security_context(read_only_root=True),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "backup", "mountPath": BACKUP_MOUNT},
            {"name": "shared", "mountPath": SHARED_MOUNT},
            {"name": "config", "mountPath": PG_CONFIG_DIR, "readOnly": True},
            {"name": "credentials", "mountPath": PG_SECRETS_DIR, "readOnly": True},
            ca_mount(),
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": BACKUP_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # Group 0 as well: the Cold mirror is written by the GoCD server's sidecar
                    # (uid 1000, gid 0) with group-readable files.
                    "securityContext": {
                        **pod_security_context(uid, uid),
                        "supplementalGroups": [GOCD_GID],
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "backup", "persistentVolumeClaim": {"claimName": claim}},
                        {
                            "name": "shared",
                            "persistentVolumeClaim": {"claimName": shared_claim_name(inputs)},
                        },
                        {
                            "name": "config",
                            "configMap": {
                                "name": names.postgres_configmap,
                                "defaultMode": CONFIG_FILE_MODE,
                            },
                        },
                        {
                            "name": "credentials",
                            "projected": {
                                "defaultMode": SECRET_FILE_MODE,
                                "sources": [
                                    {
                                        "secret": {
                                            "name": names.replication_secret,
                                            "items": [
                                                {
                                                    "key": "password",
                                                    "path": "replication/password",
                                                }
                                            ],
                                        }
                                    }
                                ],
                            },
                        },
                        ca_volume(inputs),
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
