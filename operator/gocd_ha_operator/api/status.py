"""The ``GoCDHACluster`` status as pydantic models, and the merge patch that writes it.

The status is written by the operator only; the models ignore fields an older or newer operator
wrote so an upgrade or a rollback never fails to read its own status. The CRD's status schema is
generated from :class:`GoCDHAClusterStatus`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field

from gocd_ha_operator.api.base import ApiModel, RejoinMode, StandbyMode
from gocd_ha_operator.api.constants import Side

ConditionStatus = Literal["True", "False", "Unknown"]
PromotionType = Literal["Switchover", "Failover"]


class StatusModel(ApiModel):
    """Status is written by the operator; fields an older or newer operator wrote are ignored."""

    model_config = ConfigDict(extra="ignore")


class Condition(StatusModel):
    """A ``metav1.Condition``."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed for."
    )
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", description="CamelCase."
    )
    message: str = Field(default="", description="Human-readable detail.")


class PostgresInstanceStatus(StatusModel):
    reachable: bool | None = Field(default=None, description="The operator could connect.")
    in_recovery: bool | None = Field(default=None, description="Running as a standby.")
    timeline: int | None = Field(default=None, description="Current timeline ID.")
    lsn: str | None = Field(default=None, description="Current (primary) or replayed LSN.")
    message: str | None = Field(default=None, description="Why it is not reachable.")


class GoCDServerStatus(StatusModel):
    replicas: int | None = Field(default=None, description="Desired replicas of the Deployment.")
    healthy: bool | None = Field(default=None, description="/go/api/v1/health answered OK.")
    mode: str | None = Field(default=None, description="primary, standby or stopped.")
    message: str | None = Field(default=None, description="Detail of the last health check.")


class SideStatus(StatusModel):
    role: Literal["primary", "standby"] | None = Field(default=None, description="Role now.")
    postgres: PostgresInstanceStatus = Field(default_factory=PostgresInstanceStatus)
    gocd: GoCDServerStatus = Field(default_factory=GoCDServerStatus)


class SidesStatus(StatusModel):
    a: SideStatus | None = Field(default=None, description="Side a.")
    b: SideStatus | None = Field(default=None, description="Side b.")


class ReplicationStatus(StatusModel):
    state: str | None = Field(
        default=None, description="Streaming, Catchup, Archive, Disconnected or Unknown."
    )
    lag_bytes: int | None = Field(default=None, description="WAL bytes not yet replayed.")
    lag_seconds: float | None = Field(default=None, description="Replay delay in seconds.")
    slot_active: bool | None = Field(default=None, description="The standby's slot is in use.")
    slot_wal_status: str | None = Field(default=None, description="reserved, extended, …, lost.")
    last_archived_wal: str | None = Field(default=None, description="Last WAL file archived.")
    last_archived_time: str | None = Field(default=None, description="When it was archived.")
    archive_failures: int | None = Field(default=None, description="Failed archive attempts.")
    last_failed_wal: str | None = Field(default=None, description="Last WAL that failed.")
    last_streaming_time: str | None = Field(
        default=None, description="Last time the standby was seen streaming."
    )
    last_primary_lag_bytes: int | None = Field(
        default=None,
        description="Last lag measured from the primary's side: its current LSN minus the "
        "standby's replay position. The failover gate and a failover's rpoBytes use it.",
    )
    last_primary_lag_measured_at: str | None = Field(
        default=None,
        description="When lastPrimaryLagBytes was measured (refreshed at least every 30 s "
        "while it is unchanged).",
    )


class SyncedFile(StatusModel):
    name: str
    primary_checksum: str | None = None
    standby_checksum: str | None = None
    in_sync: bool = False


class ConfigSyncStatus(StatusModel):
    mode: StandbyMode | None = Field(default=None, description="Warm or Cold.")
    source: str | None = Field(default=None, description="Where the operator read this.")
    setup_status: str | None = Field(default=None, description="success or incomplete.")
    last_sync_time: str | None = Field(default=None, description="Last successful sync.")
    primary_update_time: str | None = Field(default=None, description="Last change on primary.")
    files: list[SyncedFile] = Field(default_factory=list, description="Per-file checksums.")
    errors: list[str] = Field(default_factory=list, description="Recent sync errors.")
    synced: bool | None = Field(default=None, description="Files equal and last sync recent.")
    reason: str | None = Field(default=None, description="CamelCase summary.")
    message: str | None = Field(default=None, description="Human-readable summary.")


class PromotionStatus(StatusModel):
    token: str | None = Field(default=None, description="The gocdha.io/promote value handled.")
    force: bool = Field(default=False, description="gocdha.io/promote-force was given.")
    trigger: Literal["Annotation", "Automatic", "Rollout"] | None = Field(
        default=None,
        description="Annotation, Automatic (failover) or Rollout (the switchover of a rolling "
        "restart).",
    )
    type: PromotionType | None = Field(default=None, description="Switchover or Failover.")
    step: str | None = Field(default=None, description="Current or last step.")
    from_side: Side | None = Field(default=None, description="Old primary.")
    to_side: Side | None = Field(default=None, description="New primary.")
    started_at: str | None = None
    finished_at: str | None = None
    result: Literal["InProgress", "Succeeded", "Failed", "Refused"] | None = None
    reason: str | None = Field(
        default=None,
        description="Why it was refused or failed, as a CamelCase word (e.g. PromotionInProgress).",
    )
    message: str | None = None
    from_timeline: int | None = Field(
        default=None,
        description="Timeline of the old primary when it started: the promoted side must be on a "
        "later one before the promotion counts as done.",
    )
    lsn: str | None = Field(default=None, description="Old primary's last LSN (switchover).")
    rpo_bytes: int | None = Field(
        default=None,
        description="WAL bytes lost: 0 after a switchover; for a failover, the last lag "
        "measured from the primary's side (an estimate: the lost primary cannot be asked; "
        "absent when unknown).",
    )
    promote_seconds: float | None = Field(
        default=None, description="How long pg_promote took on the new primary."
    )
    rejoin: RejoinMode | None = Field(
        default=None,
        description="spec.failover.rejoin when this promotion started: what happens to the old "
        "primary's side is decided once, so a later spec edit cannot stop a replicating standby.",
    )
    start_in_maintenance_mode: bool | None = Field(
        default=None,
        description="spec.gocd.startPromotedInMaintenanceMode when this promotion started.",
    )


class LeaseStatus(StatusModel):
    """The primary Lease ``<name>-primary`` as the operator last read and judged it."""

    holder: str | None = Field(default=None, description="holderIdentity, e.g. <name>-pg-a.")
    holder_side: Side | None = Field(default=None, description="The side the holder names.")
    renew_time: str | None = Field(
        default=None,
        description="A renewal by the holder (its clock): the latest one while the primary is "
        "unavailable or a promotion runs; otherwise refreshed only once the recorded expiresAt "
        "has passed, so an idle cluster's status does not change with every renewal.",
    )
    timeline: int | None = Field(
        default=None, description="The holder's Postgres timeline, as its guard last wrote it."
    )
    expires_at: str | None = Field(
        default=None,
        description="Valid at least until then: the later of renewTime and when the operator "
        "first saw that renewal, plus leaseDurationSeconds and a margin (later renewals only move "
        "the real expiry further).",
    )
    valid: bool | None = Field(default=None, description="Held and not expired now.")
    message: str | None = Field(default=None, description="Why it could not be read.")


class HandledTokens(StatusModel):
    """The last value of each promotion annotation the operator acted on: a value is handled
    exactly once, also across operator restarts."""

    promote: str | None = Field(default=None, description="Last gocdha.io/promote value.")
    promote_force: str | None = Field(
        default=None, description="Last gocdha.io/promote-force value."
    )


class BackupRecord(StatusModel):
    """One backup attempt, as its Job reported it."""

    name: str | None = Field(default=None, description="Backup name (its directory).")
    trigger: str | None = Field(default=None, description="Schedule or Annotation.")
    started_at: str | None = None
    finished_at: str | None = None
    size_bytes: int | None = Field(default=None, description="Size on the backup volume.")
    duration_seconds: float | None = None
    first_wal: str | None = Field(default=None, description="First WAL segment it needs.")
    last_wal: str | None = Field(default=None, description="Last WAL segment it includes.")
    message: str | None = Field(default=None, description="Why it failed.")


class BackupStatus(StatusModel):
    """Backups of this cluster. Written by the backup controller only."""

    last_successful: BackupRecord | None = None
    last_failed: BackupRecord | None = None
    running: str | None = Field(default=None, description="The Job of the backup running now.")
    running_trigger: str | None = None
    last_scheduled: str | None = Field(default=None, description="Last schedule slot taken.")
    next_scheduled: str | None = Field(default=None, description="Next schedule slot.")
    earliest_recoverable: str | None = Field(
        default=None, description="End of the oldest kept backup: the earliest targetTime."
    )
    handled_token: str | None = Field(default=None, description="Last gocdha.io/backup value.")
    bootstrap_recovered: bool | None = Field(
        default=None,
        description="The first primary finished recovering from spec.bootstrap.recovery.",
    )


class InstanceConfigurationStatus(StatusModel):
    """One side's Postgres configuration: what its StatefulSet runs and what it has loaded."""

    image: str | None = Field(
        default=None, description="The Postgres image this side's StatefulSet runs."
    )
    restart_revision: str | None = Field(
        default=None,
        description="The configuration revision this side was last restarted for by a rolling "
        "restart (its pod template's gocdha.io/restart-revision).",
    )
    loaded_revision: str | None = Field(
        default=None,
        description="The configuration revision the instance has loaded (gocdha.config_revision).",
    )
    pending_restart: list[str] = Field(
        default_factory=list,
        description="Parameters changed in the configuration that need a restart of this instance "
        "(pg_settings.pending_restart).",
    )
    server_version: str | None = Field(default=None, description="The running server's version.")


class RolloutStatus(StatusModel):
    """The controlled rolling restart in progress or last run (docs/architecture.md §16)."""

    step: str | None = Field(
        default=None,
        description="RestartingPrimary (only when a hot-standby-sensitive setting is lowered: "
        "the primary restarts in place first), RestartingStandby, Switchover, "
        "RestartingOldPrimary or Done.",
    )
    result: Literal["InProgress", "Succeeded", "Blocked"] | None = None
    revision: str | None = Field(default=None, description="The configuration revision rolled.")
    image: str | None = Field(default=None, description="The Postgres image rolled.")
    reason: str | None = Field(
        default=None, description="What needs the restart: Image, Parameters or both."
    )
    token: str | None = Field(
        default=None,
        description="Names this roll: its switchover's promotion token and the restart revision "
        "of the pods it restarts.",
    )
    restarted_from: dict[str, str] = Field(
        default_factory=dict,
        description="Per side this roll restarted: the postmaster start time seen when it was "
        "restarted; a different one proves the restart.",
    )
    replay_target_lsn: int | None = Field(
        default=None,
        description="After the primary's in-place restart (RestartingPrimary): its WAL position "
        "then. The standby is restarted only once it has replayed that far, so that it has "
        "replayed the lowered settings the primary's start wrote into the WAL.",
    )
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None


class ConfigurationStatus(StatusModel):
    """Whether spec.postgres has reached the running instances. Written by the supervisor."""

    revision: str | None = Field(
        default=None, description="The configuration revision spec.postgres renders."
    )
    image: str | None = Field(default=None, description="spec.postgres.image.")
    pending_restart: list[str] = Field(
        default_factory=list,
        description="What waits for a restart on either side: parameter names, and 'image'.",
    )
    a: InstanceConfigurationStatus | None = Field(default=None, description="Side a.")
    b: InstanceConfigurationStatus | None = Field(default=None, description="Side b.")
    rollout: RolloutStatus = Field(default_factory=RolloutStatus)


class GoCDHAClusterStatus(StatusModel):
    observed_generation: int | None = Field(default=None, description="Last generation handled.")
    primary: Side | None = Field(default=None, description="The side that is primary now.")
    standby: Side | None = Field(default=None, description="The side that is standby now.")
    standby_mode: StandbyMode | None = Field(default=None, description="Standby mode in force.")
    gocd_version: str | None = Field(default=None, description="GoCD version from the image.")
    sides: SidesStatus = Field(default_factory=SidesStatus)
    replication: ReplicationStatus = Field(default_factory=ReplicationStatus)
    config_sync: ConfigSyncStatus = Field(default_factory=ConfigSyncStatus)
    promotion: PromotionStatus = Field(default_factory=PromotionStatus)
    handled_tokens: HandledTokens = Field(default_factory=HandledTokens)
    backup: BackupStatus = Field(default_factory=BackupStatus)
    lease: LeaseStatus = Field(
        default_factory=LeaseStatus, description="The primary Lease (what fences a primary)."
    )
    configuration: ConfigurationStatus = Field(
        default_factory=ConfigurationStatus,
        description="Configuration changes reaching the instances: reloads and rolling restarts.",
    )
    history: list[PromotionStatus] = Field(
        default_factory=list, max_length=20, description="Recent promotions, newest first."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` (empty when nothing changed).

    Only what changed is sent, so an unchanged status costs no write (and no watch event), and a
    key that disappeared is sent as ``null``, which is how a merge patch removes it.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, Mapping) and isinstance(old[key], Mapping):
            nested = status_patch(old[key], value)
            if nested:
                patch[key] = nested
        elif old[key] != value:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
