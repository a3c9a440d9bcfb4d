"""What status follows from one observation: the replication summary and each condition.

Pure: observation + previous status + clock in, verdicts out, one small function per condition
so that each rule is a unit test away. :mod:`gocd_ha_operator.controller.observe` does the I/O and
writes what these functions decide.

The lag rule (issue #11): the failover gate and a failover's ``rpoBytes`` must not be fooled by a
standby that does not know what it missed. A standby only knows what it *received*; only the
primary knows what it *wrote*. So lag is measured from the primary's side — its current LSN
against the standby's replay position — and the last measurement is kept in status with its time.
When the primary is gone, lag is that last measurement; when none is recent enough, lag is
unknown and no failover is possible without ``promote-force``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import SLOT_PREFIX, Side
from gocd_ha_operator.api.cron import parse_schedule
from gocd_ha_operator.api.spec import FailoverSpec, GoCDHACluster
from gocd_ha_operator.api.status import ConditionStatus, ReplicationStatus
from gocd_ha_operator.gocd.client import ConfigSyncReading, bc_api_exposure_warning
from gocd_ha_operator.postgres.client import InstanceObservation, ReplicationConnection
from gocd_ha_operator.rules.backup import BackupHealth, backup_health
from gocd_ha_operator.rules.topology import Topology

#: "Recently replicating" for failover decisions: the standby streamed within this window.
RECENT_STREAMING_SECONDS: Final = 300.0
#: ``replication.lastStreamingTime`` is refreshed at most this often (it is not a heartbeat).
STREAMING_TIME_RESOLUTION_SECONDS: Final = 60.0
#: ``replication.lastPrimaryLagMeasuredAt`` is refreshed at least this often while the measured
#: value does not change (a changed value refreshes it at once). Without a resolution an idle
#: cluster would write status at every observation; the freshness bound adds it back.
LAG_TIME_RESOLUTION_SECONDS: Final = 30.0
#: Extra condition for GoCD 20.6-21.2 in Warm mode (their primary sync API has no auth).
BC_API_EXPOSED: Final = "BusinessContinuityAPIExposed"


class Reason(StrEnum):
    """Every condition reason the observation writes."""

    PRIMARY_UNREACHABLE = "PrimaryUnreachable"
    PRIMARY_IN_RECOVERY = "PrimaryInRecovery"
    PRIMARY_WRITABLE = "PrimaryWritable"
    STREAMING = "Streaming"
    STANDBY_UNREACHABLE = "StandbyUnreachable"
    STANDBY_NOT_IN_RECOVERY = "StandbyNotInRecovery"
    NOT_STREAMING = "NotStreaming"
    NOT_OBSERVED = "NotObserved"
    PROMOTION_IN_PROGRESS = "PromotionInProgress"
    STANDBY_NOT_REPLICATING = "StandbyNotReplicating"
    LAG_UNKNOWN = "LagUnknown"
    LAG_TOO_HIGH = "LagTooHigh"
    STANDBY_READY = "StandbyReady"
    PROMOTING = "Promoting"
    IDLE = "Idle"
    ARCHIVE_FAILING = "ArchiveFailing"
    CONFIG_NOT_SYNCED = "ConfigNotSynced"
    STANDBY_SERVER_UNHEALTHY = "StandbyServerUnhealthy"
    PROTECTED = "Protected"
    PRIMARY_UNAVAILABLE = "PrimaryUnavailable"
    GOCD_SERVER_UNAVAILABLE = "GoCDServerUnavailable"
    UNAUTHENTICATED_SYNC_API = "UnauthenticatedSyncAPI"


@dataclass(frozen=True)
class GoCDObservation:
    """One GoCD server: how many replicas it should have and whether its health check passed."""

    replicas: int
    healthy: bool | None
    message: str | None = None


@dataclass(frozen=True)
class ClusterObservation:
    """Everything one observation saw: both instances, both GoCD servers, the config sync."""

    postgres: Mapping[Side, InstanceObservation]
    gocd: Mapping[Side, GoCDObservation]
    config_sync: ConfigSyncReading | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: An instance answered and rejected the operator's password (the credentials it used may
    #: be stale: they are read from their Secrets again).
    credentials_rejected: bool = False


@dataclass(frozen=True)
class ConditionVerdict:
    status: ConditionStatus
    reason: str
    message: str


def seconds_since(timestamp: str | None, now: datetime) -> float | None:
    if timestamp is None:
        return None
    return (now - cond.parse_rfc3339(timestamp)).total_seconds()


def refreshed(previous: str | None, now: datetime, resolution: float) -> str:
    """``now``, unless ``previous`` is younger than ``resolution``: a timestamp that moved on
    every observation would make every observation a status write."""
    age = seconds_since(previous, now)
    if previous is not None and age is not None and 0 <= age < resolution:
        return previous
    return cond.rfc3339(now)


# --- lag ----------------------------------------------------------------------------------------


def standby_row(primary: InstanceObservation, standby_side: Side) -> ReplicationConnection | None:
    """The primary's ``pg_stat_replication`` row of the standby, if it has one."""
    app = f"{SLOT_PREFIX}{standby_side}"
    return next((r for r in primary.replication if r.application_name == app), None)


def primary_side_lag(
    primary: InstanceObservation, standby: InstanceObservation, standby_side: Side
) -> int | None:
    """WAL the primary wrote that the standby has not replayed, measured now, or ``None``.

    Only a writable primary can say how much WAL exists: its ``pg_stat_replication`` row
    (``current - replay``), or — when the standby does not stream (no row) — its current LSN
    against the replay position the standby reports. The standby's own received - replayed is
    never lag: it cannot count WAL it never received.
    """
    if not primary.reachable or primary.in_recovery is not False:
        return None
    row = standby_row(primary, standby_side)
    if row is not None and row.replay_lag_bytes is not None:
        return max(0, row.replay_lag_bytes)
    if (
        standby.reachable
        and standby.in_recovery
        and primary.current_lsn is not None
        and standby.replayed_lsn is not None
    ):
        return max(0, primary.current_lsn - standby.replayed_lsn)
    return None


def lag_freshness_bound(failover: FailoverSpec, observe_interval: float) -> float:
    """How old the last primary-side measurement may be and still stand for the lag.

    ``primaryUnavailableSeconds`` (an automatic failover waits that long after the primary went
    away) + two observation intervals (the last measurement is one interval before the first
    failed observation; the failover decision is taken at an observation, up to one interval
    late) + the timestamp's resolution + 2 s (whole-second stamps). Anything older was not taken
    just before the primary went away: the standby may have fallen behind since.
    """
    return (
        failover.primary_unavailable_seconds
        + 2 * observe_interval
        + LAG_TIME_RESOLUTION_SECONDS
        + 2.0
    )


def recent_primary_lag(
    replication: ReplicationStatus, failover: FailoverSpec, observe_interval: float, now: datetime
) -> int | None:
    """The last primary-side lag if it is recent enough (:func:`lag_freshness_bound`)."""
    age = seconds_since(replication.last_primary_lag_measured_at, now)
    if replication.last_primary_lag_bytes is None or age is None:
        return None
    if age > lag_freshness_bound(failover, observe_interval):
        return None
    return replication.last_primary_lag_bytes


def replication_state(
    primary: InstanceObservation, standby: InstanceObservation, standby_side: Side
) -> str:
    """Streaming, Catchup, …, Archive, Disconnected or NotInRecovery, as the instances say."""
    row = standby_row(primary, standby_side)
    if not standby.reachable:
        return "Disconnected"
    if standby.in_recovery is False:
        return "NotInRecovery"
    if row is not None:
        return "Streaming" if row.state == "streaming" else row.state.capitalize()
    if standby.wal_receiver_status == "streaming":
        return "Streaming"
    return "Archive"


def replication_status(
    observation: ClusterObservation,
    topology: Topology,
    previous: ReplicationStatus,
    *,
    failover: FailoverSpec,
    observe_interval: float,
    now: datetime,
) -> ReplicationStatus:
    """``status.replication`` after this observation.

    ``lagBytes`` is the primary-side lag measured now; without one (the primary is gone), the
    last measurement while it is recent enough; otherwise ``None`` (unknown), never 0.
    """
    primary = observation.postgres[topology.primary]
    standby = observation.postgres[topology.standby]
    state = replication_state(primary, standby, topology.standby)
    row = standby_row(primary, topology.standby)
    slot_name = f"{SLOT_PREFIX}{topology.standby}"
    slot = next((s for s in primary.slots if s.slot_name == slot_name), None)
    stamp = cond.rfc3339(now)

    measured = primary_side_lag(primary, standby, topology.standby)
    last_bytes, last_at = previous.last_primary_lag_bytes, previous.last_primary_lag_measured_at
    if measured is not None:
        last_at = (
            refreshed(last_at, now, LAG_TIME_RESOLUTION_SECONDS)
            if measured == last_bytes
            else stamp
        )
        last_bytes = measured
    kept = previous.model_copy(
        update={"last_primary_lag_bytes": last_bytes, "last_primary_lag_measured_at": last_at}
    )
    lag_bytes = (
        measured
        if measured is not None
        else recent_primary_lag(kept, failover, observe_interval, now)
    )
    # The standby's own "age of the last replayed transaction" reads 0 when it received nothing:
    # only the primary's row says how late the standby is.
    lag_seconds = row.replay_lag_seconds if row is not None else None
    archiver = primary.archiver if primary.reachable else None
    return ReplicationStatus(
        state=state,
        lag_bytes=lag_bytes,
        lag_seconds=round(lag_seconds, 3) if lag_seconds is not None else None,
        slot_active=slot.active if slot is not None else None,
        slot_wal_status=slot.wal_status if slot is not None else None,
        last_archived_wal=archiver.last_archived_wal if archiver else previous.last_archived_wal,
        last_archived_time=(
            cond.rfc3339(archiver.last_archived_time)
            if archiver and archiver.last_archived_time
            else previous.last_archived_time
        ),
        archive_failures=archiver.failed_count if archiver else previous.archive_failures,
        last_failed_wal=archiver.last_failed_wal if archiver else previous.last_failed_wal,
        last_streaming_time=refreshed(
            previous.last_streaming_time, now, STREAMING_TIME_RESOLUTION_SECONDS
        )
        if state == "Streaming"
        else previous.last_streaming_time,
        last_primary_lag_bytes=last_bytes,
        last_primary_lag_measured_at=last_at,
    )


# --- one function per condition -----------------------------------------------------------------


def primary_available(observation: ClusterObservation, topology: Topology) -> ConditionVerdict:
    side = topology.primary
    primary = observation.postgres[side]
    if not primary.reachable:
        return ConditionVerdict(
            "False", Reason.PRIMARY_UNREACHABLE, f"Postgres on side {side}: {primary.error}"
        )
    if primary.in_recovery:
        return ConditionVerdict(
            "False",
            Reason.PRIMARY_IN_RECOVERY,
            f"Postgres on side {side} is in recovery and does not accept writes",
        )
    return ConditionVerdict(
        "True", Reason.PRIMARY_WRITABLE, f"Postgres on side {side} accepts writes"
    )


def standby_replicating(
    observation: ClusterObservation, topology: Topology, replication: ReplicationStatus
) -> ConditionVerdict:
    primary_side, standby_side = topology.primary, topology.standby
    standby = observation.postgres[standby_side]
    if replication.state == "Streaming":
        lag = replication.lag_bytes
        return ConditionVerdict(
            "True",
            Reason.STREAMING,
            f"side {standby_side} streams from side {primary_side}"
            + (f", {lag} bytes behind" if lag is not None else ""),
        )
    if not standby.reachable:
        return ConditionVerdict(
            "False", Reason.STANDBY_UNREACHABLE, f"Postgres on side {standby_side}: {standby.error}"
        )
    if not standby.in_recovery:
        return ConditionVerdict(
            "False",
            Reason.STANDBY_NOT_IN_RECOVERY,
            f"Postgres on side {standby_side} is not in recovery: it is not a standby",
        )
    return ConditionVerdict(
        "False",
        Reason.NOT_STREAMING,
        f"side {standby_side} is in recovery but not streaming "
        f"({replication.state}); it replays from the WAL archive only",
    )


def config_synced(observation: ClusterObservation) -> ConditionVerdict:
    sync = observation.config_sync
    if sync is None:
        return ConditionVerdict(
            "Unknown", Reason.NOT_OBSERVED, "the config sync source could not be read"
        )
    return ConditionVerdict("True" if sync["synced"] else "False", sync["reason"], sync["message"])


def failover_possible(
    observation: ClusterObservation,
    topology: Topology,
    replication: ReplicationStatus,
    *,
    failover: FailoverSpec,
    promotion_running: bool,
    now: datetime,
) -> ConditionVerdict:
    """Whether promoting the standby now stays within ``maxLagBytes``.

    ``replication.lagBytes`` is ``None`` when no primary-side measurement is recent enough: that
    is ``LagUnknown``, never "no lag".
    """
    standby_side = topology.standby
    standby = observation.postgres[standby_side]
    streamed_ago = seconds_since(replication.last_streaming_time, now)
    recently = streamed_ago is not None and streamed_ago <= RECENT_STREAMING_SECONDS
    lag = replication.lag_bytes
    if promotion_running:
        return ConditionVerdict(
            "False", Reason.PROMOTION_IN_PROGRESS, "a promotion is already running"
        )
    if not standby.reachable:
        return ConditionVerdict(
            "False",
            Reason.STANDBY_UNREACHABLE,
            f"Postgres on side {standby_side} cannot be reached",
        )
    if not standby.in_recovery:
        return ConditionVerdict(
            "False", Reason.STANDBY_NOT_IN_RECOVERY, f"side {standby_side} is not a standby"
        )
    if not recently:
        return ConditionVerdict(
            "False",
            Reason.STANDBY_NOT_REPLICATING,
            f"side {standby_side} has not streamed from the primary in the last "
            f"{int(RECENT_STREAMING_SECONDS)} s",
        )
    if lag is None:
        return ConditionVerdict(
            "False",
            Reason.LAG_UNKNOWN,
            "no lag measured from the primary's side recently enough (last: "
            f"{replication.last_primary_lag_measured_at or 'never'}); what the standby missed "
            "is unknown; gocdha.io/promote-force allows a promotion anyway",
        )
    if lag > failover.max_lag_bytes:
        return ConditionVerdict(
            "False",
            Reason.LAG_TOO_HIGH,
            f"standby lag {lag} bytes exceeds maxLagBytes "
            f"{failover.max_lag_bytes}; gocdha.io/promote-force allows it",
        )
    return ConditionVerdict(
        "True",
        Reason.STANDBY_READY,
        f"side {standby_side} can be promoted (lag {lag} bytes, "
        f"maxLagBytes {failover.max_lag_bytes})",
    )


def promoting(promotion_running: bool) -> ConditionVerdict:
    if promotion_running:
        return ConditionVerdict("True", Reason.PROMOTING, "a promotion is running")
    return ConditionVerdict("False", Reason.IDLE, "no promotion is running")


def degraded(
    observation: ClusterObservation,
    topology: Topology,
    replication: ReplicationStatus,
    *,
    replicating: ConditionVerdict,
    synced: ConditionVerdict,
) -> ConditionVerdict:
    primary = observation.postgres[topology.primary]
    problems: list[tuple[str, str]] = []
    if replicating.status != "True":
        problems.append((Reason.STANDBY_NOT_REPLICATING, replicating.message))
    if replication.archive_failures and primary.archiver and primary.archiver.failing:
        problems.append(
            (
                Reason.ARCHIVE_FAILING,
                f"WAL archiving fails (last failed: {replication.last_failed_wal})",
            )
        )
    if synced.status == "False":
        problems.append((Reason.CONFIG_NOT_SYNCED, synced.message))
    gocd_standby = observation.gocd[topology.standby]
    if gocd_standby.replicas and gocd_standby.healthy is False:
        problems.append((Reason.STANDBY_SERVER_UNHEALTHY, gocd_standby.message or ""))
    if problems:
        return ConditionVerdict("True", problems[0][0], "; ".join(m for _, m in problems))
    return ConditionVerdict("False", Reason.PROTECTED, "the standby is replicating and in sync")


def ready(
    observation: ClusterObservation,
    topology: Topology,
    *,
    available: ConditionVerdict,
    replicating: ConditionVerdict,
) -> ConditionVerdict:
    gocd_primary = observation.gocd[topology.primary]
    if available.status != "True":
        return ConditionVerdict("False", Reason.PRIMARY_UNAVAILABLE, available.message)
    if gocd_primary.healthy is not True:
        return ConditionVerdict(
            "False",
            Reason.GOCD_SERVER_UNAVAILABLE,
            f"GoCD server on side {topology.primary}: {gocd_primary.message}",
        )
    if replicating.status != "True":
        return ConditionVerdict("False", Reason.STANDBY_NOT_REPLICATING, replicating.message)
    return ConditionVerdict(
        "True",
        Reason.PROTECTED,
        f"side {topology.primary} serves; side {topology.standby} replicates",
    )


def bc_api_exposed(cluster: GoCDHACluster) -> ConditionVerdict | None:
    version = cluster.spec.gocd.version
    if cluster.spec.gocd.effective_standby_mode != "Warm" or version is None:
        return None
    warning = bc_api_exposure_warning((version.major, version.minor, version.patch))
    if warning is None:
        return None
    return ConditionVerdict("True", Reason.UNAUTHENTICATED_SYNC_API, warning)


def backup_healthy(cluster: GoCDHACluster, now: datetime) -> ConditionVerdict | None:
    """``BackupHealthy`` (only with ``spec.backup``): the newest attempt succeeded and is not
    older than two schedule intervals (:func:`gocd_ha_operator.rules.backup.backup_health`)."""
    spec = cluster.spec.backup
    if spec is None:
        return None
    backup = cluster.status.backup
    healthy, reason = backup_health(
        schedule=parse_schedule(spec.schedule) if spec.schedule else None,
        last_success=_time(backup.last_successful.finished_at if backup.last_successful else None),
        last_failure=_time(backup.last_failed.finished_at if backup.last_failed else None),
        created=_time(cluster.metadata.creation_timestamp) or now,
        now=now,
    )
    messages = {
        BackupHealth.RECENT: "the last backup succeeded",
        BackupHealth.NONE_YET: "no backup has been taken yet",
        BackupHealth.LAST_FAILED: "the last backup failed: "
        + str(backup.last_failed.message if backup.last_failed else ""),
        BackupHealth.STALE: "no successful backup within two schedule intervals",
    }
    return ConditionVerdict("True" if healthy else "False", str(reason), messages[reason])


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def evaluate_conditions(
    cluster: GoCDHACluster,
    *,
    observation: ClusterObservation,
    topology: Topology,
    replication: ReplicationStatus,
    promotion_running: bool,
    now: datetime,
) -> dict[str, ConditionVerdict]:
    """Every condition's verdict from one observation (no history except what status keeps)."""
    available = primary_available(observation, topology)
    replicating = standby_replicating(observation, topology, replication)
    synced = config_synced(observation)
    verdicts = {
        cond.PRIMARY_AVAILABLE: available,
        cond.STANDBY_REPLICATING: replicating,
        cond.CONFIG_SYNCED: synced,
        cond.FAILOVER_POSSIBLE: failover_possible(
            observation,
            topology,
            replication,
            failover=cluster.spec.failover,
            promotion_running=promotion_running,
            now=now,
        ),
        cond.PROMOTING: promoting(promotion_running),
        cond.DEGRADED: degraded(
            observation, topology, replication, replicating=replicating, synced=synced
        ),
        cond.READY: ready(observation, topology, available=available, replicating=replicating),
    }
    exposed = bc_api_exposed(cluster)
    if exposed is not None:
        verdicts[BC_API_EXPOSED] = exposed
    backups = backup_healthy(cluster, now)
    if backups is not None:
        verdicts[cond.BACKUP_HEALTHY] = backups
    return verdicts
