"""When a backup is due, what it is called, and whether backups are healthy: pure rules.

The schedule is parsed by :mod:`gocd_ha_operator.api.cron`. No clock is read here: callers pass
``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from gocd_ha_operator.api.cron import CronSchedule

#: Backups are unhealthy when the last success is older than this many schedule intervals.
MISSED_INTERVALS_UNHEALTHY: Final = 2
#: Name of a backup (and of its Job suffix): its start time, sortable, DNS-1123 friendly.
BACKUP_NAME_FORMAT: Final = "%Y%m%dt%H%M%Sz"


def backup_name(started: datetime) -> str:
    """``20261202t013000z``: sortable by time and valid in a Job name and a directory."""
    return started.astimezone(UTC).strftime(BACKUP_NAME_FORMAT)


class BackupTrigger(StrEnum):
    """Why a backup starts: the schedule, or the ``gocdha.io/backup`` annotation."""

    SCHEDULE = "Schedule"
    ANNOTATION = "Annotation"


@dataclass(frozen=True)
class BackupDecision:
    trigger: BackupTrigger
    name: str
    token: str | None = None


def backup_due(
    *,
    schedule: CronSchedule | None,
    last_scheduled: datetime | None,
    created: datetime,
    now: datetime,
    annotation_token: str | None,
    handled_token: str | None,
    running: bool,
) -> BackupDecision | None:
    """Whether a backup starts now. One at a time: nothing starts while one runs (a missed
    schedule slot is then taken once when it ends, not once per missed slot, like a CronJob with
    ``concurrencyPolicy: Forbid``). An annotation value is taken exactly once."""
    if running:
        return None
    if annotation_token and annotation_token != handled_token:
        return BackupDecision(BackupTrigger.ANNOTATION, backup_name(now), annotation_token)
    if schedule is None:
        return None
    since = last_scheduled or created
    if schedule.next_after(since) <= now:
        return BackupDecision(BackupTrigger.SCHEDULE, backup_name(now))
    return None


class BackupHealth(StrEnum):
    """Reasons of the ``BackupHealthy`` condition."""

    RECENT = "BackupRecent"
    NONE_YET = "NoBackupYet"
    LAST_FAILED = "LastBackupFailed"
    STALE = "BackupStale"


def backup_health(
    *,
    schedule: CronSchedule | None,
    last_success: datetime | None,
    last_failure: datetime | None,
    created: datetime,
    now: datetime,
) -> tuple[bool, BackupHealth]:
    """Healthy when the newest attempt succeeded and it is not older than
    :data:`MISSED_INTERVALS_UNHEALTHY` schedule intervals (a silent scheduler is not healthy)."""
    if last_failure is not None and (last_success is None or last_failure > last_success):
        return False, BackupHealth.LAST_FAILED
    if last_success is None:
        if schedule is not None:
            deadline = created
            for _ in range(MISSED_INTERVALS_UNHEALTHY):
                deadline = schedule.next_after(deadline)
            if now > deadline:
                return False, BackupHealth.STALE
        return False, BackupHealth.NONE_YET
    if schedule is not None:
        deadline = last_success
        for _ in range(MISSED_INTERVALS_UNHEALTHY):
            deadline = schedule.next_after(deadline)
        if now > deadline:
            return False, BackupHealth.STALE
    return True, BackupHealth.RECENT
