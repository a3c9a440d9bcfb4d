"""Five-field cron schedules (``spec.backup.schedule``), parsed and evaluated without a clock.

Minute hour day-of-month month day-of-week, in UTC, as Kubernetes CronJobs read them, plus the
``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly`` shorthands. Like Vixie cron, when both
day fields are restricted a day matches either of them. Part of the resource model because the
spec is validated with it; callers pass the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

#: field name, lowest value, highest value
_FIELDS: Final = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_SHORTHANDS: Final[dict[str, str]] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
#: A schedule that never fires within this horizon (30 February) is refused as invalid.
SEARCH_HORIZON: Final = timedelta(days=366 * 5)
#: Backups are unhealthy when the last success is older than this many schedule intervals.
MISSED_INTERVALS_UNHEALTHY: Final = 2


class CronError(ValueError):
    """A schedule that is not five-field cron; the message says which field and why."""


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # Python: Monday = 0; cron: Sunday = 0
        day_ok = moment.day in self.days
        weekday_ok = weekday in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after ``moment`` (UTC, whole minutes) the schedule fires."""
        candidate = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = candidate + SEARCH_HORIZON
        while candidate < limit:
            if candidate.month not in self.months or not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
                continue
            if candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
                continue
            return candidate
        raise CronError("the schedule never fires (no date matches its fields)")


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} field '{text}' has an empty list item")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name} step '{step_text}' must be a whole number from 1")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            if not (first.isdigit() and last.isdigit()):
                raise CronError(f"{name} range '{base}' must be two numbers, e.g. 1-5")
            start, end = int(first), int(last)
        elif base.isdigit():
            start = end = int(base)
            if step_text:
                end = high
        else:
            raise CronError(f"{name} value '{base}' is not a number, a range or *")
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise CronError(f"{name} '{part}' is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_schedule(text: str) -> CronSchedule:
    """Parse a five-field cron schedule (or a shorthand); :class:`CronError` names the field."""
    expanded = _SHORTHANDS.get(text.strip(), text)
    fields = expanded.split()
    if len(fields) != len(_FIELDS):
        raise CronError(
            f"'{text}' has {len(fields)} fields; a schedule has five "
            "(minute hour day-of-month month day-of-week, UTC), e.g. '0 2 * * *', or @daily"
        )
    parsed = [
        _parse_field(field, name, low, high)
        for field, (name, low, high) in zip(fields, _FIELDS, strict=True)
    ]
    weekdays = frozenset(0 if day == 7 else day for day in parsed[4])
    schedule = CronSchedule(
        minutes=parsed[0],
        hours=parsed[1],
        days=parsed[2],
        months=parsed[3],
        weekdays=weekdays,
        days_restricted=fields[2] != "*",
        weekdays_restricted=fields[4] != "*",
    )
    schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # refuses 30 February and the like
    return schedule
