"""``metav1.Condition`` bookkeeping: one small pure helper that every status writer goes through.

Semantics follow ``meta.SetStatusCondition`` of apimachinery: one entry per type, and
``lastTransitionTime`` moves only when ``status`` flips — a changed reason or message alone is not
a transition. The clock is a parameter so that callers (and tests) decide what "now" is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from gocd_ha_operator.api.status import Condition, ConditionStatus

READY: Final = "Ready"
PRIMARY_AVAILABLE: Final = "PrimaryAvailable"
STANDBY_REPLICATING: Final = "StandbyReplicating"
CONFIG_SYNCED: Final = "ConfigSynced"
FAILOVER_POSSIBLE: Final = "FailoverPossible"
PROMOTING: Final = "Promoting"
DEGRADED: Final = "Degraded"
#: Only with ``spec.backup``: the newest backup attempt succeeded and is recent.
BACKUP_HEALTHY: Final = "BackupHealthy"
#: Only with ``spec.tls.serverCertificateSecret``: the user's certificate is valid and in use.
CERTIFICATE_READY: Final = "CertificateReady"
#: The reason of a condition no observation has set yet (``Unknown`` from the first status write):
#: the supervisor's first observation of a cluster moves every condition out of it at once.
INITIALIZING: Final = "Initializing"
#: Every condition the operator maintains, in the order they are listed in status.
CONDITION_TYPES: Final = (
    READY,
    PRIMARY_AVAILABLE,
    STANDBY_REPLICATING,
    CONFIG_SYNCED,
    FAILOVER_POSSIBLE,
    PROMOTING,
    DEGRADED,
)


RFC3339_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(moment: datetime) -> str:
    """Kubernetes' timestamp format: UTC, seconds precision, ``Z`` suffix."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime(RFC3339_FORMAT)


def parse_rfc3339(value: str) -> datetime:
    """The inverse of :func:`rfc3339`."""
    return datetime.strptime(value, RFC3339_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Transition:
    """A condition whose status changed (or appeared): worth an Event."""

    type: str
    old_status: ConditionStatus | None
    new: Condition


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime,
) -> tuple[list[Condition], Transition | None]:
    """Return the new condition list and the transition, if ``status`` changed."""
    result: list[Condition] = []
    transition: Transition | None = None
    found = False
    for existing in conditions:
        if existing.type != type:
            result.append(existing)
            continue
        found = True
        flipped = existing.status != status
        updated = Condition(
            type=type,
            status=status,
            reason=reason,
            message=message,
            observed_generation=observed_generation,
            last_transition_time=rfc3339(now) if flipped else existing.last_transition_time,
        )
        result.append(updated)
        if flipped:
            transition = Transition(type, existing.status, updated)
    if not found:
        created = Condition(
            type=type,
            status=status,
            reason=reason,
            message=message,
            observed_generation=observed_generation,
            last_transition_time=rfc3339(now),
        )
        result.append(created)
        transition = Transition(type, None, created)
    return result, transition


def get_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)
