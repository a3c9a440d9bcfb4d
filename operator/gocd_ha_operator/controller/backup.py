"""The backup controller: starts backup Jobs and records what they did in ``status.backup``.

One timer per cluster (``handlers.py``) calls :func:`backup_tick`, which reads the resource and its
backup Jobs fresh from the API and then:

1. records every finished Job (the manifest its container left as termination message, or why it
   failed) in ``status.backup`` with an Event, and only then deletes the Job;
2. starts a backup when the schedule or a new ``gocdha.io/backup`` value asks for one and none is
   running (:func:`gocd_ha_operator.rules.backup.backup_due`): from the standby while it streams,
   from the primary otherwise.

Exactly once per annotation value: the value is written on the Job it starts, and a value found on
any Job counts as handled, so an operator that dies between creating the Job and writing status
does not start a second backup for it. This module is the only writer of ``status.backup``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf

from gocd_ha_operator.api.constants import (
    ANNOTATION_BACKUP,
    API_VERSION,
    COMPONENT_BACKUP,
    KIND,
    LABEL_BACKUP,
    LABEL_BACKUP_TRIGGER,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    Side,
)
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.cron import parse_schedule
from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.api.status import BackupRecord, BackupStatus, status_patch
from gocd_ha_operator.api.validation import SpecError
from gocd_ha_operator.builders import BuildInputs
from gocd_ha_operator.builders.backup import build_backup_job
from gocd_ha_operator.kube.apply import KubeClient
from gocd_ha_operator.kube.labels import with_owner
from gocd_ha_operator.rules.backup import BackupTrigger, backup_due
from gocd_ha_operator.rules.promotion import topology_of

logger = logging.getLogger(__name__)

#: Annotation on a backup Job: the ``gocdha.io/backup`` value that started it.
JOB_TOKEN_ANNOTATION: Final = f"{ANNOTATION_BACKUP}-token"
#: Credentials are not needed to build a Job (it mounts the Secret); builders want a value.
_NO_CREDENTIALS: Final = ClusterCredentials("", "", "", "", "")


@dataclass(frozen=True)
class FinishedBackup:
    """What one finished Job says about its backup."""

    job: str
    record: BackupRecord
    succeeded: bool
    oldest_kept_finished_at: str | None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _termination_message(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            if terminated.get("message"):
                return str(terminated["message"])
    return None


def finished_backup(job: Mapping[str, Any], pods: list[dict[str, Any]]) -> FinishedBackup | None:
    """A finished Job as a backup record; ``None`` while it runs. Pure."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    complete = (conditions.get("Complete") or {}).get("status") == "True"
    failed = (conditions.get("Failed") or {}).get("status") == "True"
    if not complete and not failed:
        return None
    labels = job.get("metadata", {}).get("labels") or {}
    name = str(job["metadata"]["name"])
    record = BackupRecord(
        name=labels.get(LABEL_BACKUP),
        trigger=labels.get(LABEL_BACKUP_TRIGGER),
        started_at=status.get("startTime"),
        finished_at=status.get("completionTime")
        or (conditions.get("Failed") or {}).get("lastTransitionTime"),
    )
    message = _termination_message(pods)
    if failed:
        reason = (conditions.get("Failed") or {}).get("message") or "the backup Job failed"
        detail = (message or "").strip().splitlines()[-3:]
        text = reason if not detail else f"{reason}: {' / '.join(detail)}"
        return FinishedBackup(name, record.model_copy(update={"message": text[:500]}), False, None)
    try:
        report = json.loads(message or "")
        manifest = report["manifest"]
        retention = report.get("retention") or {}
    except (ValueError, KeyError, TypeError):
        return FinishedBackup(
            name,
            record.model_copy(
                update={"message": "the backup Job succeeded but left no readable manifest"}
            ),
            False,
            None,
        )
    record = record.model_copy(
        update={
            "started_at": manifest.get("startedAt") or record.started_at,
            "finished_at": manifest.get("finishedAt") or record.finished_at,
            "size_bytes": manifest.get("sizeBytes"),
            "duration_seconds": manifest.get("durationSeconds"),
            "first_wal": manifest.get("startWal"),
            "last_wal": manifest.get("endWal"),
        }
    )
    return FinishedBackup(name, record, True, retention.get("oldestFinishedAt"))


def backup_source(cluster: GoCDHACluster) -> Side:
    """The standby while it streams (the primary keeps serving undisturbed), else the primary."""
    topology = topology_of(cluster)
    status = cluster.status
    if status.replication.state == "Streaming" and topology.running(topology.standby):
        return topology.standby
    return topology.primary


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class BackupTick:
    """One pass for one cluster; ``clock`` and ``event`` are injectable for tests."""

    kube: KubeClient
    operator_image: str
    clock: Callable[[], datetime]
    event: Callable[[dict[str, Any], str, str, str], None]

    def run(self, namespace: str, name: str) -> None:
        body = self.kube.get(API_VERSION, KIND, namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return
        try:
            cluster = parse_cluster(body)
        except SpecError:
            return  # the reconcile reports an invalid spec; nothing to back up by
        old = cluster.status.backup
        new = old.model_copy(deep=True)
        selector = {LABEL_INSTANCE: cluster.name, LABEL_COMPONENT: COMPONENT_BACKUP}
        jobs = self.kube.list("batch/v1", "Job", namespace, selector)
        running: list[dict[str, Any]] = []
        finished: list[FinishedBackup] = []
        for job in jobs:
            token = (job["metadata"].get("annotations") or {}).get(JOB_TOKEN_ANNOTATION)
            if token and token != new.handled_token and token == _annotation(body):
                new.handled_token = token  # started by an earlier pass that died before status
            pods = self.kube.list(
                "v1", "Pod", namespace, {"job-name": str(job["metadata"]["name"])}
            )
            done = finished_backup(job, pods)
            if done is None:
                running.append(job)
            else:
                finished.append(done)
        for done in sorted(finished, key=lambda d: d.record.name or ""):
            if done.succeeded:
                new.last_successful = done.record
                if done.oldest_kept_finished_at:
                    new.earliest_recoverable = done.oldest_kept_finished_at
            else:
                new.last_failed = done.record
        new.running = str(running[0]["metadata"]["name"]) if running else None
        self._recovered(cluster, new)

        now = self.clock()
        spec = cluster.spec.backup
        schedule = parse_schedule(spec.schedule) if spec and spec.schedule else None
        decision = None
        if spec is not None:
            created = _parse_time(body["metadata"].get("creationTimestamp")) or now
            decision = backup_due(
                schedule=schedule,
                last_scheduled=_parse_time(new.last_scheduled),
                created=created,
                now=now,
                annotation_token=_annotation(body),
                handled_token=new.handled_token,
                running=bool(running),
            )
        started: dict[str, Any] | None = None
        if decision is not None:
            started = self._start(body, cluster, decision.name, decision.trigger, decision.token)
            new.running = str(started["metadata"]["name"])
            if decision.trigger == BackupTrigger.SCHEDULE:
                new.last_scheduled = _rfc3339(now)
            else:
                new.handled_token = decision.token
        new.next_scheduled = _rfc3339(schedule.next_after(now)) if schedule else None
        self._write(body, old, new)
        for done in finished:
            self._report(body, done)
            self.kube.delete("batch/v1", "Job", namespace, done.job, propagation="Background")
        if started is not None:
            self.event(
                body,
                "Normal",
                "BackupStarted",
                f"backup {started['metadata']['labels'][LABEL_BACKUP]} started "
                f"({decision.trigger if decision else ''}) from side "
                f"{backup_source(cluster)}",
            )

    @staticmethod
    def _recovered(cluster: GoCDHACluster, new: BackupStatus) -> None:
        bootstrap = cluster.spec.bootstrap
        if bootstrap is None or bootstrap.recovery is None or new.bootstrap_recovered:
            return
        side_a = cluster.status.sides.a
        if side_a is not None and side_a.postgres.reachable and not side_a.postgres.in_recovery:
            new.bootstrap_recovered = True

    def _start(
        self,
        body: dict[str, Any],
        cluster: GoCDHACluster,
        backup: str,
        trigger: BackupTrigger,
        token: str | None,
    ) -> dict[str, Any]:
        inputs = BuildInputs(
            cluster=cluster,
            topology=topology_of(cluster),
            credentials=_NO_CREDENTIALS,
            operator_image=self.operator_image,
        )
        job = build_backup_job(inputs, backup, backup_source(cluster), str(trigger))
        if token is not None:
            job["metadata"]["annotations"] = {JOB_TOKEN_ANNOTATION: token}
        created: dict[str, Any] = self.kube.create(with_owner(job, body))
        return created

    def _write(self, body: dict[str, Any], old: BackupStatus, new: BackupStatus) -> None:
        changes = status_patch(old.to_api(), new.to_api())
        if changes:
            meta = body["metadata"]
            self.kube.patch_status(
                API_VERSION, KIND, meta["namespace"], meta["name"], {"backup": changes}
            )

    def _report(self, body: dict[str, Any], done: FinishedBackup) -> None:
        record = done.record
        if done.succeeded:
            self.event(
                body,
                "Normal",
                "BackupSucceeded",
                f"backup {record.name}: {record.size_bytes} bytes in "
                f"{record.duration_seconds} s, WAL {record.first_wal}..{record.last_wal}",
            )
        else:
            self.event(body, "Warning", "BackupFailed", f"backup {record.name}: {record.message}")


def _annotation(body: Mapping[str, Any]) -> str | None:
    value = (body.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_BACKUP)
    return str(value) if value else None


def _kopf_event(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message[:1000])


async def backup_tick(
    kube: KubeClient, operator_image: str, clock: Callable[[], datetime], namespace: str, name: str
) -> None:
    """One pass of the backup controller for one cluster (the kopf timer's body). The API calls
    run in a thread (the client is synchronous); Events are posted back on the event loop."""
    events: list[tuple[dict[str, Any], str, str, str]] = []
    tick = BackupTick(
        kube=kube,
        operator_image=operator_image,
        clock=clock,
        event=lambda *args: events.append(args),
    )
    await asyncio.to_thread(tick.run, namespace, name)
    for args in events:
        _kopf_event(*args)
