"""The ``GoCDHACluster`` spec as pydantic models, the whole object, and its parse entry point.

The API's single source of truth: the CRD in ``crds/`` is generated from these classes
(``gocd-ha-operator crd``), so field names, defaults, descriptions, enums and patterns are
written once, here. Python attributes are snake_case; the wire format is the Kubernetes camelCase
(:class:`~gocd_ha_operator.api.base.ApiModel`). The status models are in
:mod:`~gocd_ha_operator.api.status`.

:func:`parse_cluster` validates in two layers, both reported through
:class:`~gocd_ha_operator.api.validation.SpecError`:

1. pydantic: types, ranges, patterns, unknown fields;
2. :mod:`~gocd_ha_operator.api.validation`: rules that need several fields or the image version
   (the standby mode against the GoCD version, the shared volume's alternatives).

No credential is ever a plain field: passwords and tokens are generated into Secrets or referenced
through a ``SecretKeySelector``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic_core import InitErrorDetails, PydanticCustomError

from gocd_ha_operator.api import postgres_parameters, quantities
from gocd_ha_operator.api.base import ApiModel, RejoinMode, StandbyMode
from gocd_ha_operator.api.constants import API_VERSION, KIND
from gocd_ha_operator.api.cron import CronError, parse_schedule
from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.api.validation import Problem, SpecError, cross_field_problems
from gocd_ha_operator.api.versions import (
    LAST_WARM_VERSION,
    GoCDVersion,
    parse_gocd_version,
    parse_postgres_major,
)

FailoverMode = Literal["Manual", "Automatic"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]

#: names must be DNS-1035 labels (63), and StatefulSet pods add a revision hash to a label.
MAX_NAME_LENGTH: Final = 40
DNS1035_LABEL: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY: Final = (
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$"
)
RESOURCE_NAMES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})
#: JVM options the operator sets itself; a user value would fight the promotion protocol.
OWNED_JVM_OPTIONS: Final = (
    "-Dgo.server.mode",
    "-Dbc.primary.url",
    "-Dgocd.server.start.in.maintenance.mode",
)
RESERVED_DATABASES: Final = frozenset({"postgres", "template0", "template1"})


def _quantity_to_str(value: object) -> object:
    """YAML turns ``cpu: 1`` into an int; Kubernetes quantities are strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(pattern=QUANTITY),
    AfterValidator(quantities.resource_amount),
    WithJsonSchema(
        {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    ),
]
StorageSize = Annotated[
    str,
    Field(pattern=QUANTITY, description="A Kubernetes quantity, e.g. 20Gi."),
    AfterValidator(quantities.volume_size),
]


# --- Spec ----------------------------------------------------------------------------------------


class SecretKeySelector(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: str = Field(pattern=DNS1123_SUBDOMAIN, max_length=253, description="Secret name.")
    key: str = Field(
        pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="Key within the Secret."
    )


class SecretReference(ApiModel):
    """A Secret in the resource's namespace, by name."""

    name: str = Field(pattern=DNS1123_SUBDOMAIN, max_length=253, description="Secret name.")


class AddonSource(ApiModel):
    """Where to fetch the business-continuity add-on jar (GoCD ≤ 20.5 only)."""

    url: str = Field(pattern=r"^https?://\S+$", description="http(s) URL of the add-on jar.")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="Lower-case hex SHA-256 of the jar; a mismatch stops the server from starting.",
    )


class BusinessContinuitySpec(ApiModel):
    """GoCD's business-continuity feature (Warm standby mode)."""

    token_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "Secret key holding the business-continuity-token file (one 'user = password' line). "
            "Generated into <name>-bc-token when absent."
        ),
    )
    addon: AddonSource | None = Field(
        default=None,
        description="The add-on jar for GoCD ≤ 20.5; from 20.6 the feature is built into GoCD.",
    )


class ResourceRequirements(ApiModel):
    """CPU and memory for a container, as in a Pod spec."""

    requests: dict[str, Quantity] = Field(default_factory=dict, description="Minimum resources.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum resources.")

    @field_validator("requests", "limits")
    @classmethod
    def _known_resource_names(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - RESOURCE_NAMES)
        if unknown:
            allowed = ", ".join(sorted(RESOURCE_NAMES))
            raise ValueError(f"unknown resource {', '.join(unknown)} (allowed: {allowed})")
        return value


def _resources(requests: dict[str, str], limits: dict[str, str]) -> ResourceRequirements:
    return ResourceRequirements(requests=requests, limits=limits)


#: CEL: the storage class of an existing claim cannot change (it may be named where it was not).
STORAGE_CLASS_IMMUTABLE: Final[JsonDict] = {
    "rule": "!has(oldSelf.storageClassName) || "
    "(has(self.storageClassName) && self.storageClassName == oldSelf.storageClassName)",
    "message": "storageClassName is immutable",
}
#: CEL: the same for a shared volume, which may switch to an existing claim instead.
SHARED_STORAGE_CLASS_IMMUTABLE: Final[JsonDict] = {
    "rule": "has(self.existingClaim) || !has(oldSelf.storageClassName) || "
    "(has(self.storageClassName) && self.storageClassName == oldSelf.storageClassName)",
    "message": "storageClassName is immutable (set existingClaim to move to another volume)",
}


class VolumeSpec(ApiModel):
    """A ReadWriteOnce volume claim of one instance."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [STORAGE_CLASS_IMMUTABLE]}
    )

    size: StorageSize = Field(description="Requested size, e.g. 20Gi.")
    storage_class_name: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        description="StorageClass of the claim; the cluster default when absent.",
    )


class SharedVolumeSpec(ApiModel):
    """A ReadWriteMany volume: either an existing claim, or a size with a storage class."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.existingClaim) ? !has(self.size) && "
                    "!has(self.storageClassName) : has(self.size) && has(self.storageClassName)",
                    "message": "set either existingClaim, or both size and storageClassName",
                },
                SHARED_STORAGE_CLASS_IMMUTABLE,
            ]
        }
    )

    size: StorageSize | None = Field(default=None, description="Size of the claim to create.")
    storage_class_name: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        description="StorageClass that provides ReadWriteMany volumes (e.g. an NFS class).",
    )
    existing_claim: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        max_length=253,
        description="Use this existing ReadWriteMany claim instead of creating one.",
    )


class ServiceSpec(ApiModel):
    """The Service users and agents reach the primary GoCD server through."""

    type: ServiceType = Field(default="ClusterIP", description="Service type.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations for the Service (e.g. load balancer)."
    )


class GoCDSpec(ApiModel):
    """The two GoCD servers."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.businessContinuity) || "
                    "!has(self.businessContinuity.addon) || "
                    "!has(self.standbyMode) || self.standbyMode == 'Warm'",
                    "message": "businessContinuity.addon is only used with standbyMode Warm",
                }
            ]
        }
    )

    image: str = Field(
        default="gocd/gocd-server:v26.1.0",
        pattern=r"^\S+$",
        description=(
            "GoCD server image. The tag's version (v21.2.0, 21.2.0, v26.1.0-1234) picks the "
            "standby mode; a digest or a tag without a version needs standbyMode."
        ),
    )
    standby_mode: StandbyMode | None = Field(
        default=None,
        description=(
            "Warm: the standby server runs and syncs through GoCD's business-continuity feature "
            "(GoCD 18.8-21.2). Cold: the standby server is stopped and restores a mirror of the "
            "primary's files when promoted (any GoCD). Default: Warm up to 21.2, Cold above."
        ),
    )
    business_continuity: BusinessContinuitySpec = Field(
        default_factory=BusinessContinuitySpec,
        description="Warm mode settings: token and (GoCD ≤ 20.5) the add-on jar.",
    )
    jvm_options: list[str] = Field(
        default_factory=list,
        description="Extra JVM options for both servers, e.g. -Xmx2g.",
    )
    start_promoted_in_maintenance_mode: bool = Field(
        default=False,
        description="Start a promoted server in maintenance mode (GoCD ≥ 20.9).",
    )
    storage: VolumeSpec = Field(
        default_factory=lambda: VolumeSpec(size="10Gi"),
        description="The /godata volume of each server.",
    )
    resources: ResourceRequirements = Field(
        default_factory=lambda: _resources(
            {"cpu": "500m", "memory": "1Gi"}, {"cpu": "2", "memory": "2Gi"}
        ),
        description="Resources of each GoCD server container.",
    )
    service: ServiceSpec = Field(
        default_factory=ServiceSpec, description="The <name>-gocd Service."
    )
    artifacts: SharedVolumeSpec | None = Field(
        default=None,
        description=(
            "Optional ReadWriteMany volume mounted at /godata/artifacts on both servers; "
            "artifacts are not synced otherwise."
        ),
    )

    @field_validator("jvm_options")
    @classmethod
    def _jvm_options(cls, value: list[str]) -> list[str]:
        for index, option in enumerate(value):
            if not option.startswith("-"):
                raise ValueError(
                    f"item {index} ({option!r}) is not a JVM option (must start with -)"
                )
            for owned in OWNED_JVM_OPTIONS:
                if option == owned or option.startswith(owned + "="):
                    raise ValueError(
                        f"item {index} sets {owned}, which the operator manages for promotion"
                    )
        return value

    @property
    def version(self) -> GoCDVersion | None:
        return parse_gocd_version(self.image)

    @property
    def effective_standby_mode(self) -> StandbyMode:
        """The standby mode in force: explicit, or derived from the image version."""
        if self.standby_mode is not None:
            return self.standby_mode
        version = self.version
        if version is None:
            raise ValueError("standbyMode cannot be derived from the image tag")
        return "Warm" if version <= LAST_WARM_VERSION else "Cold"


class PostgresSpec(ApiModel):
    """The two Postgres instances."""

    image: str = Field(
        default="postgres:17",
        pattern=r"^\S+$",
        description="Official postgres image, PostgreSQL 13-17 (Debian or Alpine flavour).",
    )
    database: str = Field(
        default="gocd",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Name of GoCD's database. Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "database is immutable"}
            ]
        },
    )
    storage: VolumeSpec = Field(
        default_factory=lambda: VolumeSpec(size="20Gi"),
        description="The data volume of each instance. Immutable (StatefulSet volume template).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "postgres.storage is immutable: a StatefulSet's volume claim "
                    "template cannot change (resize the claims data-<name>-pg-a-0/-b-0 directly)",
                }
            ]
        },
    )
    resources: ResourceRequirements = Field(
        default_factory=lambda: _resources(
            {"cpu": "250m", "memory": "256Mi"}, {"cpu": "1", "memory": "1Gi"}
        ),
        description="Resources of each Postgres container.",
    )
    parameters: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra postgresql.conf settings. Settings the operator owns (replication, archiving, "
            "listen address, authentication) are refused."
        ),
    )
    synchronous: bool = Field(
        default=False,
        description=(
            "Synchronous replication: a commit waits for the standby, so a failover loses "
            "nothing, but writes stop while the standby is down."
        ),
    )

    @field_validator("database")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_DATABASES:
            raise ValueError(f"{value!r} is reserved by PostgreSQL; choose another name")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """One error per parameter, at ``spec.postgres.parameters.<name>``; checked against the
        image's major version when its tag says one (``image`` is validated before this)."""
        image = info.data.get("image")
        major = parse_postgres_major(image) if isinstance(image, str) else None
        problems = postgres_parameters.parameter_problems(value, major=major)
        if problems:
            raise ValidationError.from_exception_data(
                "parameters",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("parameter", "{message}", {"message": message}),
                        loc=(key,),
                        input=key,
                    )
                    for key, message in problems
                ],
            )
        return value

    @property
    def major_version(self) -> int | None:
        return parse_postgres_major(self.image)


class FailoverSpec(ApiModel):
    """When the standby is promoted without a person."""

    # The API server refuses explicit values out of order; defaults and mixes of explicit and
    # derived values are checked by the operator (``validation.lease_timings_are_ordered``).
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.renewDeadlineSeconds) || !has(self.leaseDurationSeconds) "
                    "|| self.renewDeadlineSeconds < self.leaseDurationSeconds",
                    "message": "renewDeadlineSeconds must be below leaseDurationSeconds",
                },
                {
                    "rule": "!has(self.retryPeriodSeconds) || !has(self.renewDeadlineSeconds) "
                    "|| self.retryPeriodSeconds * 2 <= self.renewDeadlineSeconds",
                    "message": "retryPeriodSeconds must be at most half of renewDeadlineSeconds",
                },
            ]
        }
    )

    mode: FailoverMode = Field(
        default="Manual",
        description="Manual: promote only on the gocdha.io/promote annotation. Automatic: also "
        "when the primary has been unavailable for primaryUnavailableSeconds.",
    )
    primary_unavailable_seconds: int = Field(
        default=60,
        ge=10,
        le=3600,
        description="How long the primary must be unavailable before an automatic failover.",
    )
    max_lag_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=0,
        le=quantities.INT64_MAX,
        description="No failover (automatic, or annotated without promote-force) when the "
        "standby's last observed lag exceeds this many bytes of WAL.",
    )
    rejoin: RejoinMode = Field(
        default="Automatic",
        description="Automatic: the old primary comes back as a standby of the new one "
        "(pg_rewind or a fresh copy). Manual: it stays stopped until a person acts.",
    )
    cooldown_seconds: int = Field(
        default=600,
        ge=0,
        le=86400,
        description="No automatic failover within this many seconds after a promotion.",
    )
    lease_duration_seconds: int | None = Field(
        default=None,
        ge=3,
        le=3600,
        description="How long the primary's Lease <name>-primary stays valid after its last "
        "renewal: no failover (automatic or annotated) before it has expired plus a margin. "
        "Default: primaryUnavailableSeconds / 2. Must exceed renewDeadlineSeconds and be at most "
        "primaryUnavailableSeconds.",
    )
    renew_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="The primary's instance guard stops its Postgres when it could not renew the "
        "Lease for this long. Default: two thirds of leaseDurationSeconds. Must be below "
        "leaseDurationSeconds and at least twice retryPeriodSeconds.",
    )
    retry_period_seconds: int | None = Field(
        default=None,
        ge=1,
        le=600,
        description="How often the instance guard renews the Lease. Default: a fifth of "
        "renewDeadlineSeconds, at least 1.",
    )

    @property
    def lease_timings(self) -> LeaseTimings:
        """The Lease timings in force: explicit values, or derived from
        ``primaryUnavailableSeconds`` (see :func:`lease_timings_of`)."""
        return lease_timings_of(self)


@dataclass(frozen=True)
class LeaseTimings:
    """The primary Lease's timings in seconds. Safety needs ``renew_deadline < lease_duration``:
    the guard stops its Postgres at its renew deadline, the operator promotes only after the
    Lease duration (plus a margin) counted from when it last saw the Lease change."""

    lease_duration: int
    renew_deadline: int
    retry_period: int


def lease_timings_of(failover: FailoverSpec) -> LeaseTimings:
    """Explicit values win; each missing one is derived from the next larger one, so a user who
    only sets ``primaryUnavailableSeconds`` always gets an ordering that holds."""
    lease = failover.lease_duration_seconds
    if lease is None:
        lease = max(2, failover.primary_unavailable_seconds // 2)
    deadline = failover.renew_deadline_seconds
    if deadline is None:
        deadline = max(1, lease * 2 // 3)
    retry = failover.retry_period_seconds
    if retry is None:
        retry = max(1, deadline // 5)
    return LeaseTimings(lease_duration=lease, renew_deadline=deadline, retry_period=retry)


#: RFC 3339 with a zone, e.g. 2026-12-02T01:30:00Z (what recovery_target_time is given).
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
#: A backup's name as backup.sh writes it (or ``latest``).
BACKUP_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class BackupRetentionSpec(ApiModel):
    """Which backups are kept; after each successful backup the others are removed (the newest
    is always kept), and then the archived WAL that no kept backup needs."""

    count: int | None = Field(
        default=None, ge=1, le=1000, description="Keep this many newest backups."
    )
    max_age_days: int | None = Field(
        default=None, ge=1, le=36500, description="Remove backups older than this many days."
    )


class BackupVolumeSpec(ApiModel):
    """Where backups are written: never the shared volume (losing it must not lose them)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.existingClaim) != has(self.size)",
                    "message": "set either existingClaim, or size (with an optional "
                    "storageClassName)",
                }
            ]
        }
    )

    existing_claim: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        max_length=253,
        description="An existing claim on other storage than the shared volume.",
    )
    size: StorageSize | None = Field(default=None, description="Size of the claim to create.")
    storage_class_name: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        description="StorageClass of the created claim; put it on other storage than the "
        "shared volume.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> BackupVolumeSpec:
        if (self.existing_claim is None) == (self.size is None):
            raise ValueError(
                "set either existingClaim, or size (with an optional storageClassName)"
            )
        if self.existing_claim is not None and self.storage_class_name is not None:
            raise ValueError("storageClassName applies only to a claim the operator creates (size)")
        return self


class BackupSpec(ApiModel):
    """Scheduled and on-demand backups: a Postgres base backup plus GoCD's files, verified."""

    schedule: str | None = Field(
        default=None,
        max_length=100,
        description="Five-field cron in UTC (e.g. '0 2 * * *') or @daily/@hourly/@weekly; "
        "absent: backups only on demand (annotation gocdha.io/backup=<token>).",
    )
    retention: BackupRetentionSpec = Field(
        default_factory=BackupRetentionSpec, description="Which backups are kept."
    )
    volume: BackupVolumeSpec = Field(description="The backup volume (not the shared volume).")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_schedule(value)
            except CronError as exc:
                raise ValueError(str(exc)) from None
        return value


class RecoverySpec(ApiModel):
    """Create this cluster's primary from a backup instead of an empty database."""

    backup_claim: str = Field(
        pattern=DNS1123_SUBDOMAIN, max_length=253, description="The claim that holds the backups."
    )
    archive_claim: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        max_length=253,
        description="The source cluster's shared volume claim, mounted read-only to replay its "
        "WAL archive; without it recovery ends at the end of the chosen backup.",
    )
    backup: str = Field(
        default="latest",
        json_schema_extra={"pattern": BACKUP_NAME_PATTERN},
        description="A backup's name, or 'latest' (the newest at or before targetTime).",
    )
    target_time: str | None = Field(
        default=None,
        json_schema_extra={"pattern": RFC3339_PATTERN},
        description="Recover to this moment (RFC 3339, e.g. 2026-12-02T01:30:00Z) instead of "
        "the end of the archive.",
    )

    @field_validator("backup")
    @classmethod
    def _backup(cls, value: str) -> str:
        if not re.fullmatch(BACKUP_NAME_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a backup name: 1-63 letters, digits, '.', '_' or '-', "
                "or 'latest'"
            )
        return value

    @field_validator("target_time")
    @classmethod
    def _target_time(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(RFC3339_PATTERN, value):
            raise ValueError(
                f"{value!r} is not an RFC 3339 time with a zone, e.g. 2026-12-02T01:30:00Z"
            )
        return value


class BootstrapSpec(ApiModel):
    """How the first primary gets its data; only read when its data volume is empty."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "bootstrap is immutable"}
            ]
        }
    )

    recovery: RecoverySpec | None = Field(default=None, description="Restore from a backup.")


class TLSSpec(ApiModel):
    """The Postgres server certificate (docs/architecture.md §17)."""

    server_certificate_secret: SecretReference | None = Field(
        default=None,
        description=(
            "A kubernetes.io/tls Secret with the Postgres server certificate (tls.crt, tls.key) "
            "and the CA that signed it (ca.crt), e.g. written by a cert-manager Certificate. "
            "tls.crt must name <service>.<namespace>.svc of the Services <name>-pg-a, "
            "<name>-pg-b, <name>-pg-primary and <name>-pg-standby. The operator then issues no "
            "server certificate: it checks this Secret and copies a valid one to the Secret the "
            "Postgres pods mount (a changed one is reloaded without a restart). Default: none "
            "(the operator's own CA issues and renews the certificate)."
        ),
    )


class GoCDHAClusterSpec(ApiModel):
    """A GoCD server with a replicated standby."""

    gocd: GoCDSpec = Field(default_factory=GoCDSpec, description="The GoCD servers.")
    postgres: PostgresSpec = Field(
        default_factory=PostgresSpec, description="The Postgres instances."
    )
    shared_storage: SharedVolumeSpec = Field(
        description=(
            "ReadWriteMany volume shared by both sides: wal/ holds the WAL archive, gocd/ the "
            "mirror of the primary GoCD server's files."
        ),
    )
    failover: FailoverSpec = Field(
        default_factory=FailoverSpec, description="Automatic failover and rejoin."
    )
    backup: BackupSpec | None = Field(
        default=None, description="Backups and their retention; off when absent."
    )
    bootstrap: BootstrapSpec | None = Field(
        default=None, description="Where the first primary's data comes from (a backup)."
    )
    tls: TLSSpec | None = Field(
        default=None,
        description="TLS of the Postgres connections; absent: the operator's own certificates.",
    )


# --- The whole object ----------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else is kept but not interpreted."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=DNS1035_LABEL, max_length=MAX_NAME_LENGTH)
    namespace: str = Field(default="default", pattern=DNS1035_LABEL, max_length=63)
    uid: str | None = None
    generation: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")


class GoCDHACluster(BaseModel):
    """A parsed ``GoCDHACluster`` object."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["gocdha.io/v1alpha1"] = "gocdha.io/v1alpha1"
    kind: Literal["GoCDHACluster"] = "GoCDHACluster"
    metadata: ObjectMeta
    spec: GoCDHAClusterSpec
    status: GoCDHAClusterStatus = Field(default_factory=GoCDHAClusterStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


# --- Parsing and readable errors ------------------------------------------------------------------


def _alias_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def _allowed_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str] | None:
    """camelCase field names allowed at ``loc`` (the parent of an unknown field), if known."""
    current: Any = model
    for item in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        if not isinstance(item, str) or item not in fields:
            return None
        current = _model_of(fields[item].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return None


def _model_of(annotation: Any) -> Any:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _problem_from_pydantic(error: Any) -> Problem:
    loc = tuple(error["loc"])
    path = _alias_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_fields(GoCDHACluster, loc[:-1])
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return Problem(path, f"unknown field{hint}")
    if kind == "missing":
        return Problem(path, "required field is missing")
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        return Problem(path, f"{error['input']!r} does not match {pattern}")
    message = error["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return Problem(path, message)


def parse_cluster(body: Mapping[str, Any]) -> GoCDHACluster:
    """Parse a ``GoCDHACluster`` object (as from the API or a file) or raise :class:`SpecError`."""
    if not isinstance(body, Mapping):
        raise SpecError([Problem("(document)", "must be a mapping (a Kubernetes object)")])
    head: list[Problem] = []
    if body.get("apiVersion") != API_VERSION:
        head.append(Problem("apiVersion", f"must be {API_VERSION}"))
    if body.get("kind") != KIND:
        head.append(Problem("kind", f"must be {KIND}"))
    if head:
        raise SpecError(head)
    try:
        cluster = GoCDHACluster.model_validate(dict(body))
    except ValidationError as exc:
        raise SpecError([_problem_from_pydantic(e) for e in exc.errors()]) from None
    problems = cross_field_problems(cluster.spec)
    if problems:
        raise SpecError(problems)
    return cluster
