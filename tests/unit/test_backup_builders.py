"""The backup volume, the backup Job and the mounts of a primary that bootstraps from a backup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.builders.backup import build_backup_job, build_backup_pvc
from gocd_ha_operator.builders.postgres import build_postgres_statefulset
from tests.support.pss import restricted_violations

Inputs = Callable[..., BuildInputs]
BACKUP: dict[str, Any] = {
    "backup": {
        "schedule": "0 2 * * *",
        "retention": {"count": 3, "maxAgeDays": 10},
        "volume": {"size": "100Gi", "storageClassName": "standard"},
    }
}


def by_name(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_no_backup_objects_without_spec_backup(inputs: Inputs) -> None:
    built = inputs()
    assert build_backup_pvc(built) is None
    assert not [c for c in build_children(built) if c["metadata"]["name"] == "ci-backup"]
    with pytest.raises(ValueError, match=r"spec\.backup is not set"):
        build_backup_job(built, "20261202t020000z", "b", "Schedule")


def test_the_backup_volume_is_its_own_claim(inputs: Inputs) -> None:
    claim = build_backup_pvc(inputs(BACKUP))
    assert claim is not None
    assert claim["metadata"]["name"] == "ci-backup"
    assert claim["spec"]["storageClassName"] == "standard"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    existing = inputs({"backup": {"volume": {"existingClaim": "elsewhere"}}})
    assert build_backup_pvc(existing) is None
    job = build_backup_job(existing, "20261202t020000z", "b", "Annotation")
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["backup"]["persistentVolumeClaim"]["claimName"] == "elsewhere"


def test_the_backup_job_copies_from_the_given_side_and_keeps_what_retention_says(
    inputs: Inputs,
) -> None:
    job = build_backup_job(inputs(BACKUP), "20261202t020000z", "b", "Schedule")
    assert job["metadata"]["name"] == "ci-bk-20261202t020000z"
    assert job["metadata"]["labels"]["gocdha.io/backup"] == "20261202t020000z"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    assert env["GOCDHA_BACKUP_HOST"] == "ci-pg-b.build.svc"
    assert env["GOCDHA_BACKUP_KEEP"] == "3"
    assert env["GOCDHA_BACKUP_MAX_AGE_SECONDS"] == str(10 * 86400)
    assert env["GOCDHA_GOCD_FILES_DIR"] == "/shared/gocd"  # Cold: the mirror
    assert container["command"] == ["bash", "/opt/gocdha/config/backup.sh"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # Only the replication credential, nothing else.
    (source,) = next(v for v in pod["volumes"] if v["name"] == "credentials")["projected"][
        "sources"
    ]
    assert source["secret"]["name"] == "ci-postgres-replication"
    assert restricted_violations(pod) == []
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_warm_backups_have_no_mirror_to_copy(inputs: Inputs) -> None:
    warm = inputs({**BACKUP, "gocd": {"image": "gocd/gocd-server:v21.2.0"}})
    job = build_backup_job(warm, "20261202t020000z", "a", "Schedule")
    assert "GOCDHA_GOCD_FILES_DIR" not in env_of(job["spec"]["template"]["spec"]["containers"][0])


def test_only_the_first_primary_mounts_the_source_read_only_until_it_recovered(
    inputs: Inputs,
) -> None:
    recovery = {
        "bootstrap": {
            "recovery": {
                "backupClaim": "ci-backup",
                "archiveClaim": "ci-shared",
                "targetTime": "2026-12-01T17:45:00Z",
            }
        }
    }
    built = inputs(recovery)
    side_a = build_postgres_statefulset(built, "a")["spec"]["template"]["spec"]
    side_b = build_postgres_statefulset(built, "b")["spec"]["template"]["spec"]
    env = env_of(side_a["containers"][0])
    assert env["GOCDHA_RECOVERY_BACKUP_DIR"] == "/backup"
    assert env["GOCDHA_RECOVERY_ARCHIVE_DIR"] == "/recovery-source/wal"
    assert env["GOCDHA_RECOVERY_TARGET_TIME"] == "2026-12-01T17:45:00Z"
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"].get("readOnly")
        for v in side_a["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims["ci-backup"] is True and claims["ci-shared"] is True
    assert "GOCDHA_RECOVERY_BACKUP_DIR" not in env_of(side_b["containers"][0])
    mounts = {m["name"]: m for m in side_a["containers"][0]["volumeMounts"]}
    assert mounts["recovery-backups"]["readOnly"] and mounts["recovery-source"]["readOnly"]

    done = built.cluster.model_copy(deep=True)
    done.status.backup.bootstrap_recovered = True
    after = BuildInputs(done, built.topology, built.credentials, built.operator_image)
    side_a = build_postgres_statefulset(after, "a")["spec"]["template"]["spec"]
    assert "GOCDHA_RECOVERY_BACKUP_DIR" not in env_of(side_a["containers"][0])


def test_a_recovering_cold_cluster_restores_gocd_files_from_the_backup(inputs: Inputs) -> None:
    recovery = {"bootstrap": {"recovery": {"backupClaim": "ci-backup"}}}
    built = inputs(recovery)
    pg_a = build_postgres_statefulset(built, "a")["spec"]["template"]["spec"]
    env = env_of(pg_a["containers"][0])
    assert env["GOCDHA_GOCD_RESTORE_DIR"] == "/shared/gocd"
    assert env["GOCDHA_RECOVERY_MARKER"] == "/shared/.gocdha-recovered-from"
    assert pg_a["securityContext"]["supplementalGroups"] == [0]
    gocd_a = by_name(build_children(built))[("Deployment", "ci-gocd-a")]
    restore = next(
        c for c in gocd_a["spec"]["template"]["spec"]["initContainers"] if c["name"] == "restore"
    )
    assert restore["command"][-2:] == ["--wait-for", "/shared/.gocdha-recovered-from"]
    # Not once recovered, and never on side b or in a cluster without recovery.
    done = built.cluster.model_copy(deep=True)
    done.status.backup.bootstrap_recovered = True
    after = BuildInputs(done, built.topology, built.credentials, built.operator_image)
    pg_after = build_postgres_statefulset(after, "a")["spec"]["template"]["spec"]
    assert "supplementalGroups" not in pg_after["securityContext"]
    plain = by_name(build_children(inputs()))[("Deployment", "ci-gocd-a")]
    plain_restore = next(
        c for c in plain["spec"]["template"]["spec"]["initContainers"] if c["name"] == "restore"
    )
    assert "--wait-for" not in plain_restore["command"]
