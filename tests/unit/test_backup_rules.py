"""The backup schedule, the one-at-a-time and exactly-once rules, and BackupHealthy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gocd_ha_operator.api.cron import CronError, parse_schedule
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.rules.backup import (
    BackupDecision,
    BackupHealth,
    BackupTrigger,
    backup_due,
    backup_health,
    backup_name,
)
from gocd_ha_operator.rules.conditions import backup_healthy
from tests.support.clusters import cluster_body

T0 = datetime(2026, 12, 2, 1, 30, 15, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("0 2 * * *", T0, datetime(2026, 12, 2, 2, 0, tzinfo=UTC)),
        ("@daily", T0, datetime(2026, 12, 3, 0, 0, tzinfo=UTC)),
        ("*/15 * * * *", T0, datetime(2026, 12, 2, 1, 45, tzinfo=UTC)),
        ("5/20 * * * *", T0, datetime(2026, 12, 2, 1, 45, tzinfo=UTC)),
        ("0 0 * * 0", T0, datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),  # next Sunday
        ("0 0 * * 7", T0, datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),  # 7 is Sunday too
        ("0 3 1 * *", T0, datetime(2027, 1, 1, 3, 0, tzinfo=UTC)),
        ("30 1 * * *", T0, datetime(2026, 12, 3, 1, 30, tzinfo=UTC)),  # strictly after
        # Both day fields restricted: either matches (the 15th, or a Monday).
        ("0 0 15 * 1", T0, datetime(2026, 12, 7, 0, 0, tzinfo=UTC)),
        ("0 0 29 2 *", T0, datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),
        ("0,30 9-10 * * 1-5", T0, datetime(2026, 12, 2, 9, 0, tzinfo=UTC)),
    ],
)
def test_the_next_run_follows_cron(schedule: str, after: datetime, expected: datetime) -> None:
    assert parse_schedule(schedule).next_after(after) == expected


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 2 * *", "has 4 fields; a schedule has five"),
        ("60 * * * *", "minute '60' is outside 0-59"),
        ("* 24 * * *", "hour '24' is outside 0-23"),
        ("* * 0 * *", "day of month '0' is outside 1-31"),
        ("* * * 13 *", "month '13' is outside 1-12"),
        ("* * * * 8", "day of week '8' is outside 0-7"),
        ("*/0 * * * *", "minute step '0' must be a whole number from 1"),
        ("5-1 * * * *", "minute '5-1' is outside 0-59"),
        ("a * * * *", "minute value 'a' is not a number"),
        ("1,,2 * * * *", "empty list item"),
        ("0 0 30 2 *", "never fires"),
        ("@sometimes", "has 1 fields"),
    ],
)
def test_a_bad_schedule_names_the_field(schedule: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_schedule(schedule)


def test_names_sort_by_time_and_fit_a_job_name() -> None:
    first, second = backup_name(T0), backup_name(T0 + timedelta(seconds=1))
    assert first == "20261202t013015z" and first < second


def due(**overrides: object) -> BackupDecision | None:
    arguments: dict[str, object] = {
        "schedule": parse_schedule("0 2 * * *"),
        "last_scheduled": None,
        "created": T0,
        "now": T0,
        "annotation_token": None,
        "handled_token": None,
        "running": False,
    }
    arguments.update(overrides)
    return backup_due(**arguments)  # type: ignore[arg-type]


def test_a_schedule_slot_is_taken_once_and_only_when_reached() -> None:
    assert due() is None
    at_two = datetime(2026, 12, 2, 2, 0, 5, tzinfo=UTC)
    decision = due(now=at_two)
    assert decision is not None and decision.trigger == BackupTrigger.SCHEDULE
    assert due(now=at_two, last_scheduled=at_two) is None
    # Three missed slots while the operator was down: one backup, not three.
    later = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
    assert due(now=later) is not None
    assert due(now=later, last_scheduled=later) is None


def test_an_annotation_value_is_taken_exactly_once_and_never_beside_a_running_backup() -> None:
    decision = due(annotation_token="now-1", schedule=None)
    assert decision is not None and decision.trigger == BackupTrigger.ANNOTATION
    assert decision.token == "now-1"
    assert due(annotation_token="now-1", handled_token="now-1", schedule=None) is None
    assert due(annotation_token="now-2", handled_token="now-1", running=True) is None
    assert due(now=datetime(2026, 12, 2, 2, 1, tzinfo=UTC), running=True) is None


def test_backup_health() -> None:
    daily = parse_schedule("0 2 * * *")
    created = T0
    assert backup_health(
        schedule=daily, last_success=None, last_failure=None, created=created, now=T0
    ) == (False, BackupHealth.NONE_YET)
    success = datetime(2026, 12, 2, 2, 1, tzinfo=UTC)
    assert backup_health(
        schedule=daily, last_success=success, last_failure=None, created=created, now=success
    ) == (True, BackupHealth.RECENT)
    failure = success + timedelta(days=1)
    assert backup_health(
        schedule=daily, last_success=success, last_failure=failure, created=created, now=failure
    ) == (False, BackupHealth.LAST_FAILED)
    # Two daily slots passed without a backup: stale, even with no failure recorded.
    assert backup_health(
        schedule=daily,
        last_success=success,
        last_failure=None,
        created=created,
        now=success + timedelta(days=2, hours=1),
    ) == (False, BackupHealth.STALE)
    assert backup_health(
        schedule=daily,
        last_success=None,
        last_failure=None,
        created=created,
        now=created + timedelta(days=3),
    ) == (False, BackupHealth.STALE)


def test_backup_healthy_condition_follows_status_backup() -> None:
    body = cluster_body(
        "backup-cluster.yaml", metadata={"creationTimestamp": "2026-12-02T01:00:00Z"}
    )
    now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    assert backup_healthy(parse_cluster(cluster_body()), now) is None  # no spec.backup
    verdict = backup_healthy(parse_cluster(body), now)
    assert verdict is not None
    assert (verdict.status, verdict.reason) == ("False", "NoBackupYet")
    body["status"] = {
        "backup": {"lastSuccessful": {"name": "b1", "finishedAt": "2026-12-02T02:00:40Z"}}
    }
    verdict = backup_healthy(parse_cluster(body), now)
    assert verdict is not None and (verdict.status, verdict.reason) == ("True", "BackupRecent")
    body["status"]["backup"]["lastFailed"] = {
        "name": "b2",
        "finishedAt": "2026-12-02T02:30:00Z",
        "message": "pg_basebackup: could not connect",
    }
    verdict = backup_healthy(parse_cluster(body), now)
    assert verdict is not None and (verdict.status, verdict.reason) == ("False", "LastBackupFailed")
    assert "could not connect" in verdict.message
