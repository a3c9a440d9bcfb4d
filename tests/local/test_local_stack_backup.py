"""Backups end to end in the local stack: the operator starts a backup Job, the local kubelet runs
it (a real pg_basebackup from the streaming standby, the Cold mirror, the manifest), the result
reaches status, and a new cluster bootstraps its primary from that backup and builds its standby."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from gocd_ha_operator.local.stack import local_stack
from gocd_ha_operator.local.workload import RowWriter, streaming_from
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

SOURCE = "ci"
RESTORED = "restored"
SPEC: dict[str, Any] = {
    "gocd": {"image": "gocd/gocd-server:v26.1.0"},
    "postgres": {"image": "postgres:15"},
    "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
}


def body(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gocdha.io/v1alpha1",
        "kind": "GoCDHACluster",
        "metadata": {"name": name},
        "spec": {**SPEC, **extra},
    }


async def wait_until_true(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


def last_backup(status: dict[str, Any]) -> dict[str, Any] | None:
    backup = status.get("backup") or {}
    return backup.get("lastSuccessful") or (
        {"failed": backup["lastFailed"]} if backup.get("lastFailed") else None
    )


async def test_a_backup_job_runs_and_a_new_cluster_recovers_from_it() -> None:
    async with local_stack([SOURCE, RESTORED], namespace="build", observe_interval=0.5) as stack:
        await stack.apply(
            body(SOURCE, backup={"volume": {"size": "1Gi"}, "retention": {"count": 2}})
        )
        await stack.wait_for(
            lambda s: streaming_from("a", s), SOURCE, timeout=120, what="b streaming from a"
        )
        # GoCD's configuration changes on the source (an edit through GoCD); the sync agent mirrors
        # it to the shared volume, and the backup takes the mirror.
        config = stack.kubelet.claim_dir(f"{SOURCE}-gocd-a") / "godata" / "config"
        edited = config / "cruise-config.xml"
        edited.write_text(edited.read_text().replace("<server", "<server siteUrl='backed-up'", 1))
        mirror = stack.kubelet.claim_dir(f"{SOURCE}-shared") / "gocd" / "manifest.json"
        digest = hashlib.sha256(edited.read_bytes()).hexdigest()
        await wait_until_true(lambda: mirror.exists() and digest in mirror.read_text(), 60)
        writer = RowWriter(stack, SOURCE)
        await writer.prepare()
        writer.start()
        await asyncio.sleep(1.0)
        before_backup = set(writer.acknowledged)
        await stack.annotate(SOURCE, "gocdha.io/backup", "first")
        record = await stack.wait_for(last_backup, SOURCE, timeout=180, what="the backup's result")
        await writer.stop()
        if "failed" in record:
            log = stack.kubelet.pod_log(f"{SOURCE}-bk-{record['failed']['name']}")
            raise AssertionError(f"{record}\n{log[-3000:]}")
        assert record["trigger"] == "Annotation" and record["sizeBytes"] > 0
        assert len(record["firstWal"]) == 24
        status = await stack.status(SOURCE)
        assert status["backup"]["handledToken"] == "first"
        assert not status["backup"].get("running")
        # On the backup volume: the base backup, the Cold mirror of GoCD's files, the manifest.
        backups = stack.kubelet.claim_dir(f"{SOURCE}-backup")
        taken = backups / record["name"]
        manifest = json.loads((taken / "manifest.json").read_text())
        assert manifest["gocdFiles"] is True
        assert (taken / "pgdata" / "backup_manifest").exists()
        assert any((taken / "gocd").rglob("*"))
        log = stack.kubelet.pod_log(f"{SOURCE}-bk-{record['name']}")
        assert f"taking base backup '{record['name']}'" in log

        # A new resource whose first primary comes from that backup (new passwords of its own).
        await stack.apply(
            body(RESTORED, bootstrap={"recovery": {"backupClaim": f"{SOURCE}-backup"}})
        )
        await stack.wait_for(
            lambda s: streaming_from("a", s),
            RESTORED,
            timeout=240,
            what="the recovered primary streams to its new standby",
        )
        restored_writer = RowWriter(stack, RESTORED)
        found = await restored_writer.rows_on(f"{RESTORED}-pg-primary")
        assert before_backup <= found, "rows acknowledged before the backup are missing"
        # Its GoCD server started from the configuration of the backup's moment.
        restored = stack.kubelet.claim_dir(f"{RESTORED}-gocd-a") / "godata" / "config"
        assert "siteUrl='backed-up'" in (restored / "cruise-config.xml").read_text()
        assert "restored" in stack.kubelet.pod_log(f"{RESTORED}-gocd-a")
        await stack.wait_for(
            lambda s: (s.get("backup") or {}).get("bootstrapRecovered") is True,
            RESTORED,
            timeout=60,
            what="bootstrapRecovered",
        )
