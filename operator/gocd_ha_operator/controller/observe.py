"""Observation: what the operator sees of a cluster, and the status that follows from it.

Two halves, kept apart so every decision is testable without a network:

* :func:`observe_cluster` (I/O): connects to each side's Postgres as the operator role, to each
  running GoCD server's health endpoint, and to the config-sync source (the Warm standby's
  business-continuity dashboard, or the Cold sync agent). Everything has a timeout, and an
  unreachable endpoint is an observation, never an exception.
* :func:`compute_status` (pure): observation + previous status + clock in, new status and the
  conditions that changed out. ``lastTransitionTime`` moves only when a condition's status flips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import (
    GOCD_HTTP_PORT,
    SIDES,
    SLOT_PREFIX,
    SYNC_AGENT_PORT,
    Side,
)
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.api.status import (
    ConditionStatus,
    ConfigSyncStatus,
    GoCDHAClusterStatus,
    GoCDServerStatus,
    PostgresInstanceStatus,
    ReplicationStatus,
    SidesStatus,
    SideStatus,
)
from gocd_ha_operator.builders.common import BuildInputs
from gocd_ha_operator.builders.gocd import gocd_replicas
from gocd_ha_operator.gocd.client import (
    ConfigSyncReading,
    bc_api_exposure_warning,
    check_health,
    read_bc_dashboard,
    read_sync_agent_status,
)
from gocd_ha_operator.gocd.token import TokenFileError, parse_token
from gocd_ha_operator.kube.endpoints import Endpoint, resolve
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.postgres.client import (
    InstanceObservation,
    PostgresClient,
    PostgresError,
    format_lsn,
)
from gocd_ha_operator.rules.topology import Topology

#: A sync older than this is stale (three Warm polling intervals, six Cold sync intervals).
CONFIG_SYNC_MAX_AGE_SECONDS: Final = 180.0
#: "Recently replicating" for failover decisions: the standby streamed within this window.
RECENT_STREAMING_SECONDS: Final = 300.0
#: ``replication.lastStreamingTime`` is refreshed at most this often (it is not a heartbeat).
STREAMING_TIME_RESOLUTION_SECONDS: Final = 60.0
ENDPOINT_TIMEOUT_SECONDS: Final = 5.0
#: Extra condition for GoCD 20.6-21.2 in Warm mode (their primary sync API has no auth).
BC_API_EXPOSED: Final = "BusinessContinuityAPIExposed"


@dataclass(frozen=True)
class GoCDObservation:
    """One GoCD server: how many replicas it should have and whether its health check passed."""

    replicas: int
    healthy: bool | None
    message: str | None = None


@dataclass(frozen=True)
class ClusterObservation:
    postgres: Mapping[Side, InstanceObservation]
    gocd: Mapping[Side, GoCDObservation]
    config_sync: ConfigSyncReading | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


async def _observe_postgres(
    cluster: GoCDHACluster, side: Side, password: str, overrides: Mapping[str, Endpoint] | None
) -> InstanceObservation:
    client = PostgresClient.for_service(
        cluster.namespace,
        ChildNames(cluster.name).postgres_instance_service(side),
        password=password,
        overrides=overrides,
        connect_timeout=ENDPOINT_TIMEOUT_SECONDS,
        statement_timeout=ENDPOINT_TIMEOUT_SECONDS,
    )
    try:
        return await client.observe()
    except (PostgresError, OSError) as exc:
        # Authentication or query failures (the instance answers but cannot be observed), or a
        # name that does not resolve: either way an observation, not a crash.
        return InstanceObservation(endpoint=str(client.endpoint), reachable=False, error=str(exc))


def _base_url(cluster: GoCDHACluster, service: str, port: int, overrides: Any) -> str:
    endpoint = resolve(cluster.namespace, service, port, overrides)
    return f"http://{endpoint.host}:{endpoint.port}"


async def _observe_gocd(
    cluster: GoCDHACluster, side: Side, replicas: int, overrides: Mapping[str, Endpoint] | None
) -> GoCDObservation:
    if replicas == 0:
        return GoCDObservation(replicas=0, healthy=None, message="not running (by design)")
    service = ChildNames(cluster.name).gocd_side_service(side)
    result = await check_health(
        _base_url(cluster, service, GOCD_HTTP_PORT, overrides), timeout=ENDPOINT_TIMEOUT_SECONDS
    )
    return GoCDObservation(replicas=replicas, healthy=result.healthy, message=result.message)


async def _observe_config_sync(
    cluster: GoCDHACluster,
    topology: Topology,
    credentials: ClusterCredentials,
    overrides: Mapping[str, Endpoint] | None,
    now: datetime,
) -> ConfigSyncReading | None:
    try:
        token = parse_token(credentials.bc_token)
    except TokenFileError:
        return None
    names = ChildNames(cluster.name)
    if cluster.spec.gocd.effective_standby_mode == "Warm":
        url = _base_url(
            cluster, names.gocd_side_service(topology.standby), GOCD_HTTP_PORT, overrides
        )
        return await read_bc_dashboard(
            url,
            token,
            max_age_seconds=CONFIG_SYNC_MAX_AGE_SECONDS,
            now=now,
            timeout=ENDPOINT_TIMEOUT_SECONDS,
        )
    url = _base_url(cluster, names.gocd_side_service(topology.primary), SYNC_AGENT_PORT, overrides)
    return await read_sync_agent_status(
        url,
        token,
        max_age_seconds=CONFIG_SYNC_MAX_AGE_SECONDS,
        now=now,
        timeout=ENDPOINT_TIMEOUT_SECONDS,
    )


async def observe_cluster(
    cluster: GoCDHACluster,
    credentials: ClusterCredentials,
    topology: Topology,
    *,
    now: datetime,
    operator_image: str,
    overrides: Mapping[str, Endpoint] | None = None,
) -> ClusterObservation:
    """Look at everything at once; the slowest endpoint bounds the time taken."""
    inputs = BuildInputs(cluster, topology, credentials, operator_image)
    replicas = {side: gocd_replicas(inputs, side) for side in SIDES}
    pg_a, pg_b, gocd_a, gocd_b, config_sync = await asyncio.gather(
        _observe_postgres(cluster, "a", credentials.operator_password, overrides),
        _observe_postgres(cluster, "b", credentials.operator_password, overrides),
        _observe_gocd(cluster, "a", replicas["a"], overrides),
        _observe_gocd(cluster, "b", replicas["b"], overrides),
        _observe_config_sync(cluster, topology, credentials, overrides, now),
    )
    return ClusterObservation(
        postgres={"a": pg_a, "b": pg_b}, gocd={"a": gocd_a, "b": gocd_b}, config_sync=config_sync
    )


# --- pure status computation ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionVerdict:
    status: ConditionStatus
    reason: str
    message: str


def _replication(
    observation: ClusterObservation, topology: Topology, previous: ReplicationStatus, now: str
) -> ReplicationStatus:
    primary = observation.postgres[topology.primary]
    standby = observation.postgres[topology.standby]
    app = f"{SLOT_PREFIX}{topology.standby}"
    row = next((r for r in primary.replication if r.application_name == app), None)
    slot = next((s for s in primary.slots if s.slot_name == app), None)

    if not standby.reachable:
        state = "Disconnected"
    elif standby.in_recovery is False:
        state = "NotInRecovery"
    elif row is not None and row.state == "streaming":
        state = "Streaming"
    elif row is not None:
        state = row.state.capitalize()
    elif standby.wal_receiver_status == "streaming":
        state = "Streaming"
    else:
        state = "Archive"

    lag_bytes = row.replay_lag_bytes if row is not None else None
    lag_seconds = row.replay_lag_seconds if row is not None else None
    if lag_bytes is None and standby.reachable and standby.in_recovery:
        lag_bytes, lag_seconds = standby.lag_bytes, standby.lag_seconds
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
        last_streaming_time=_refreshed(previous.last_streaming_time, now)
        if state == "Streaming"
        else previous.last_streaming_time,
    )


def _refreshed(previous: str | None, now: str) -> str:
    """``now``, unless ``previous`` is recent enough: a timestamp that moved on every observation
    would make every observation a status write."""
    if previous is not None:
        age = _seconds_since(previous, cond.parse_rfc3339(now))
        if age is not None and 0 <= age < STREAMING_TIME_RESOLUTION_SECONDS:
            return previous
    return now


def _seconds_since(timestamp: str | None, now: datetime) -> float | None:
    if timestamp is None:
        return None
    return (now - cond.parse_rfc3339(timestamp)).total_seconds()


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
    primary_side, standby_side = topology.primary, topology.standby
    primary = observation.postgres[primary_side]
    standby = observation.postgres[standby_side]
    gocd_primary = observation.gocd[primary_side]
    failover = cluster.spec.failover
    verdicts: dict[str, ConditionVerdict] = {}

    if not primary.reachable:
        verdicts[cond.PRIMARY_AVAILABLE] = ConditionVerdict(
            "False", "PrimaryUnreachable", f"Postgres on side {primary_side}: {primary.error}"
        )
    elif primary.in_recovery:
        verdicts[cond.PRIMARY_AVAILABLE] = ConditionVerdict(
            "False",
            "PrimaryInRecovery",
            f"Postgres on side {primary_side} is in recovery and does not accept writes",
        )
    else:
        verdicts[cond.PRIMARY_AVAILABLE] = ConditionVerdict(
            "True", "PrimaryWritable", f"Postgres on side {primary_side} accepts writes"
        )

    if replication.state == "Streaming":
        lag = replication.lag_bytes
        verdicts[cond.STANDBY_REPLICATING] = ConditionVerdict(
            "True",
            "Streaming",
            f"side {standby_side} streams from side {primary_side}"
            + (f", {lag} bytes behind" if lag is not None else ""),
        )
    elif not standby.reachable:
        verdicts[cond.STANDBY_REPLICATING] = ConditionVerdict(
            "False", "StandbyUnreachable", f"Postgres on side {standby_side}: {standby.error}"
        )
    elif not standby.in_recovery:
        verdicts[cond.STANDBY_REPLICATING] = ConditionVerdict(
            "False",
            "StandbyNotInRecovery",
            f"Postgres on side {standby_side} is not in recovery: it is not a standby",
        )
    else:
        verdicts[cond.STANDBY_REPLICATING] = ConditionVerdict(
            "False",
            "NotStreaming",
            f"side {standby_side} is in recovery but not streaming "
            f"({replication.state}); it replays from the WAL archive only",
        )

    sync = observation.config_sync
    if sync is None:
        verdicts[cond.CONFIG_SYNCED] = ConditionVerdict(
            "Unknown", "NotObserved", "the config sync source could not be read"
        )
    else:
        verdicts[cond.CONFIG_SYNCED] = ConditionVerdict(
            "True" if sync["synced"] else "False", sync["reason"], sync["message"]
        )

    streamed_ago = _seconds_since(replication.last_streaming_time, now)
    recently = streamed_ago is not None and streamed_ago <= RECENT_STREAMING_SECONDS
    if promotion_running:
        failover_verdict = ConditionVerdict(
            "False", "PromotionInProgress", "a promotion is already running"
        )
    elif not standby.reachable:
        failover_verdict = ConditionVerdict(
            "False", "StandbyUnreachable", f"Postgres on side {standby_side} cannot be reached"
        )
    elif not standby.in_recovery:
        failover_verdict = ConditionVerdict(
            "False", "StandbyNotInRecovery", f"side {standby_side} is not a standby"
        )
    elif not recently:
        failover_verdict = ConditionVerdict(
            "False",
            "StandbyNotReplicating",
            f"side {standby_side} has not streamed from the primary in the last "
            f"{int(RECENT_STREAMING_SECONDS)} s",
        )
    elif replication.lag_bytes is not None and replication.lag_bytes > failover.max_lag_bytes:
        failover_verdict = ConditionVerdict(
            "False",
            "LagTooHigh",
            f"standby lag {replication.lag_bytes} bytes exceeds maxLagBytes "
            f"{failover.max_lag_bytes}; gocdha.io/promote-force allows it",
        )
    else:
        lag_text = str(replication.lag_bytes) if replication.lag_bytes is not None else "unknown"
        failover_verdict = ConditionVerdict(
            "True",
            "StandbyReady",
            f"side {standby_side} can be promoted (lag {lag_text} bytes, "
            f"maxLagBytes {failover.max_lag_bytes})",
        )
    verdicts[cond.FAILOVER_POSSIBLE] = failover_verdict

    verdicts[cond.PROMOTING] = (
        ConditionVerdict("True", "Promoting", "a promotion is running")
        if promotion_running
        else ConditionVerdict("False", "Idle", "no promotion is running")
    )

    problems: list[tuple[str, str]] = []
    if verdicts[cond.STANDBY_REPLICATING].status != "True":
        problems.append(("StandbyNotReplicating", verdicts[cond.STANDBY_REPLICATING].message))
    if replication.archive_failures and primary.archiver and primary.archiver.failing:
        problems.append(
            ("ArchiveFailing", f"WAL archiving fails (last failed: {replication.last_failed_wal})")
        )
    if verdicts[cond.CONFIG_SYNCED].status == "False":
        problems.append(("ConfigNotSynced", verdicts[cond.CONFIG_SYNCED].message))
    gocd_standby = observation.gocd[standby_side]
    if gocd_standby.replicas and gocd_standby.healthy is False:
        problems.append(("StandbyServerUnhealthy", gocd_standby.message or ""))
    verdicts[cond.DEGRADED] = (
        ConditionVerdict("True", problems[0][0], "; ".join(m for _, m in problems))
        if problems
        else ConditionVerdict("False", "Protected", "the standby is replicating and in sync")
    )

    if verdicts[cond.PRIMARY_AVAILABLE].status != "True":
        ready = ConditionVerdict(
            "False", "PrimaryUnavailable", verdicts[cond.PRIMARY_AVAILABLE].message
        )
    elif gocd_primary.healthy is not True:
        ready = ConditionVerdict(
            "False",
            "GoCDServerUnavailable",
            f"GoCD server on side {primary_side}: {gocd_primary.message}",
        )
    elif verdicts[cond.STANDBY_REPLICATING].status != "True":
        ready = ConditionVerdict(
            "False", "StandbyNotReplicating", verdicts[cond.STANDBY_REPLICATING].message
        )
    else:
        ready = ConditionVerdict(
            "True", "Protected", f"side {primary_side} serves; side {standby_side} replicates"
        )
    verdicts[cond.READY] = ready

    version = cluster.spec.gocd.version
    if cluster.spec.gocd.effective_standby_mode == "Warm" and version is not None:
        warning = bc_api_exposure_warning((version.major, version.minor, version.patch))
        if warning is not None:
            verdicts[BC_API_EXPOSED] = ConditionVerdict("True", "UnauthenticatedSyncAPI", warning)
    return verdicts


def _side_status(side: Side, topology: Topology, observation: ClusterObservation) -> SideStatus:
    pg = observation.postgres[side]
    gocd = observation.gocd[side]
    lsn = pg.current_lsn if pg.current_lsn is not None else pg.replayed_lsn
    mode = "stopped" if gocd.replicas == 0 else topology.role(side)
    return SideStatus(
        role=topology.role(side),
        postgres=PostgresInstanceStatus(
            reachable=pg.reachable,
            in_recovery=pg.in_recovery,
            timeline=pg.timeline,
            lsn=format_lsn(lsn) if lsn is not None else None,
            message=pg.error,
        ),
        gocd=GoCDServerStatus(
            replicas=gocd.replicas, healthy=gocd.healthy, mode=mode, message=gocd.message
        ),
    )


def compute_status(
    cluster: GoCDHACluster,
    observation: ClusterObservation,
    topology: Topology,
    *,
    now: datetime,
) -> tuple[GoCDHAClusterStatus, list[cond.Transition]]:
    """The status this observation implies, and the condition transitions (for Events)."""
    previous = cluster.status
    stamp = cond.rfc3339(now)
    replication = _replication(observation, topology, previous.replication, stamp)
    promotion_running = previous.promotion.result == "InProgress"
    verdicts = evaluate_conditions(
        cluster,
        observation=observation,
        topology=topology,
        replication=replication,
        promotion_running=promotion_running,
        now=now,
    )
    conditions = list(previous.conditions)
    transitions: list[cond.Transition] = []
    for type_, verdict in verdicts.items():
        conditions, transition = cond.set_condition(
            conditions,
            type=type_,
            status=verdict.status,
            reason=verdict.reason,
            message=verdict.message,
            observed_generation=cluster.metadata.generation,
            now=now,
        )
        if transition is not None:
            transitions.append(transition)
    sync = observation.config_sync
    config_sync = ConfigSyncStatus.model_validate(sync) if sync is not None else None
    version = cluster.spec.gocd.version
    status = previous.model_copy(
        update={
            "primary": topology.primary,
            "standby": topology.standby,
            "standby_mode": cluster.spec.gocd.effective_standby_mode,
            "gocd_version": str(version) if version is not None else None,
            "sides": SidesStatus(
                a=_side_status("a", topology, observation),
                b=_side_status("b", topology, observation),
            ),
            "replication": replication,
            "config_sync": config_sync if config_sync is not None else previous.config_sync,
            "conditions": conditions,
        }
    )
    return status, transitions


#: Conditions whose flip to this status is bad news: their Events are Warnings.
WARNING_WHEN: Final[dict[str, str]] = {
    cond.READY: "False",
    cond.PRIMARY_AVAILABLE: "False",
    cond.STANDBY_REPLICATING: "False",
    cond.CONFIG_SYNCED: "False",
    cond.FAILOVER_POSSIBLE: "False",
    cond.DEGRADED: "True",
    BC_API_EXPOSED: "True",
}


def event_for(transition: cond.Transition) -> tuple[str, str, str]:
    """(type, reason, message) of the Event announcing a condition transition."""
    new = transition.new
    kind = "Warning" if WARNING_WHEN.get(new.type) == new.status else "Normal"
    before = transition.old_status or "unset"
    message = f"{new.type} {before} -> {new.status}: {new.message}"
    return kind, new.reason, message[:1000]
