"""Cross-field validation of a ``GoCDHACluster`` spec: one small named function per rule.

pydantic checks each field on its own (types, ranges, patterns, unknown fields). The rules here
need several fields at once or the version in an image tag, which a field validator cannot see:
the standby mode against the GoCD version, the add-on jar against the mode and the version, the
shared volumes' alternatives. Each rule is a function ``spec -> problems`` registered in
:data:`CROSS_FIELD_RULES`, so a rule can be read, tested and found by name, and a new rule is one
function plus one line in the tuple.

:class:`Problem` and :class:`SpecError` live here because every layer of validation (pydantic's
translated errors included) reports through them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gocd_ha_operator.api import postgres_parameters
from gocd_ha_operator.api.versions import (
    FIRST_BUILTIN_BC_VERSION,
    FIRST_START_IN_MAINTENANCE_VERSION,
    FIRST_TOKEN_BC_VERSION,
    LAST_WARM_VERSION,
    SUPPORTED_POSTGRES_MAJORS,
)

if TYPE_CHECKING:
    # Types only: the spec module runs these rules from ``parse_cluster``, so a runtime import
    # back into it would be a cycle.
    from gocd_ha_operator.api.spec import GoCDHAClusterSpec, GoCDSpec, SharedVolumeSpec


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a resource: the field path and what is allowed."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """The resource is invalid. ``problems`` has one entry per problem, each naming its field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


#: A cross-field rule: the problems it finds in a spec (empty when the spec satisfies it).
Rule = Callable[["GoCDHAClusterSpec"], list[Problem]]

MODE_PATH: Final = "spec.gocd.standbyMode"
ADDON_PATH: Final = "spec.gocd.businessContinuity.addon"


def _is_warm(gocd: GoCDSpec) -> bool:
    """Warm explicitly, or by default because the image's version has the feature (≤ 21.2).

    Unlike ``GoCDSpec.effective_standby_mode`` this never raises: a missing mode with an
    unversioned image is a problem of its own (:func:`standby_mode_needs_version_or_setting`).
    """
    version = gocd.version
    return gocd.standby_mode == "Warm" or (
        gocd.standby_mode is None and version is not None and version <= LAST_WARM_VERSION
    )


def standby_mode_needs_version_or_setting(spec: GoCDHAClusterSpec) -> list[Problem]:
    """The mode is derived from the image tag's version; without one it must be set."""
    gocd = spec.gocd
    if gocd.standby_mode is None and gocd.version is None:
        return [
            Problem(
                MODE_PATH,
                f"required because the image {gocd.image!r} has no version tag "
                "(set Warm for GoCD 18.8-21.2 or Cold for any GoCD)",
            )
        ]
    return []


def warm_not_after_21_2(spec: GoCDHAClusterSpec) -> list[Problem]:
    """GoCD disabled business continuity in 21.3.0 (removed in 23.1.0): no Warm above 21.2."""
    gocd = spec.gocd
    version = gocd.version
    if gocd.standby_mode == "Warm" and version is not None and version > LAST_WARM_VERSION:
        return [
            Problem(
                MODE_PATH,
                f"Warm is not possible with GoCD {version}: the business-continuity feature "
                "was disabled in GoCD 21.3.0 and removed in 23.1.0; use Cold",
            )
        ]
    return []


def warm_needs_token_authentication(spec: GoCDHAClusterSpec) -> list[Problem]:
    """Before 18.8 the standby authenticated differently; the operator only generates tokens."""
    gocd = spec.gocd
    version = gocd.version
    if gocd.standby_mode == "Warm" and version is not None and version < FIRST_TOKEN_BC_VERSION:
        return [
            Problem(
                MODE_PATH,
                f"Warm needs GoCD 18.8.0 or newer (token authentication); image is {version}",
            )
        ]
    return []


def addon_only_in_warm(spec: GoCDHAClusterSpec) -> list[Problem]:
    """The add-on jar is the Warm feature itself; a Cold standby would load it for nothing."""
    gocd = spec.gocd
    if gocd.business_continuity.addon is not None and not _is_warm(gocd):
        return [Problem(ADDON_PATH, "only used in Warm standby mode")]
    return []


def addon_not_with_builtin_feature(spec: GoCDHAClusterSpec) -> list[Problem]:
    """From 20.6 the feature is built in and GoCD loads no add-on: the jar would be ignored."""
    gocd = spec.gocd
    version = gocd.version
    if (
        gocd.business_continuity.addon is not None
        and version is not None
        and version >= FIRST_BUILTIN_BC_VERSION
    ):
        return [
            Problem(
                ADDON_PATH,
                f"GoCD {version} has the feature built in and loads no add-ons (≤ 20.5 only)",
            )
        ]
    return []


def addon_required_before_builtin_feature(spec: GoCDHAClusterSpec) -> list[Problem]:
    """Warm with GoCD 18.8-20.5 only works with the add-on jar, which the user must name."""
    gocd = spec.gocd
    version = gocd.version
    if (
        _is_warm(gocd)
        and gocd.business_continuity.addon is None
        and version is not None
        and FIRST_TOKEN_BC_VERSION <= version < FIRST_BUILTIN_BC_VERSION
    ):
        return [
            Problem(
                ADDON_PATH,
                f"required for Warm mode with GoCD {version} (≤ 20.5 needs the add-on jar)",
            )
        ]
    return []


def maintenance_mode_start_needs_20_9(spec: GoCDHAClusterSpec) -> list[Problem]:
    """The start-in-maintenance-mode system property first exists in GoCD 20.9.0."""
    gocd = spec.gocd
    version = gocd.version
    if (
        gocd.start_promoted_in_maintenance_mode
        and version is not None
        and version < FIRST_START_IN_MAINTENANCE_VERSION
    ):
        return [
            Problem(
                "spec.gocd.startPromotedInMaintenanceMode",
                f"needs GoCD 20.9.0 or newer; image is {version}",
            )
        ]
    return []


def postgres_major_supported(spec: GoCDHAClusterSpec) -> list[Problem]:
    """The scripts and the replication settings are tested with PostgreSQL 13-17 only."""
    major = spec.postgres.major_version
    if major is not None and major not in SUPPORTED_POSTGRES_MAJORS:
        return [
            Problem(
                "spec.postgres.image",
                f"PostgreSQL {major} is not supported (supported: 13-17)",
            )
        ]
    return []


def synchronous_commit_fits_synchronous(spec: GoCDHAClusterSpec) -> list[Problem]:
    """``synchronous_commit`` must not weaken (or claim) what ``synchronous`` promises."""
    problem = postgres_parameters.synchronous_problem(
        spec.postgres.parameters, synchronous=spec.postgres.synchronous
    )
    if problem is None:
        return []
    return [Problem("spec.postgres.parameters.synchronous_commit", problem)]


def shared_storage_is_claim_or_class(spec: GoCDHAClusterSpec) -> list[Problem]:
    """The shared volume (WAL archive, GoCD mirror) is an existing claim, or size + class."""
    return shared_volume_problems(spec.shared_storage, "spec.sharedStorage")


def artifacts_volume_is_claim_or_class(spec: GoCDHAClusterSpec) -> list[Problem]:
    """The optional artifacts volume follows the same alternatives as the shared volume."""
    artifacts = spec.gocd.artifacts
    if artifacts is None:
        return []
    return shared_volume_problems(artifacts, "spec.gocd.artifacts")


def shared_volume_problems(volume: SharedVolumeSpec, path: str) -> list[Problem]:
    """Either ``existingClaim`` alone, or both ``size`` and ``storageClassName``.

    ReadWriteMany needs a class that provides it (the cluster default rarely does), hence no
    default class; a claim created elsewhere must not be half-described here.
    """
    if volume.existing_claim is not None:
        extra = [
            name
            for name, value in (
                ("size", volume.size),
                ("storageClassName", volume.storage_class_name),
            )
            if value is not None
        ]
        if extra:
            return [
                Problem(
                    f"{path}.existingClaim",
                    f"cannot be combined with {' and '.join(extra)}: "
                    "either use an existing claim or have one created",
                )
            ]
        return []
    problems = []
    if volume.size is None:
        problems.append(Problem(f"{path}.size", "required unless existingClaim is set"))
    if volume.storage_class_name is None:
        problems.append(
            Problem(
                f"{path}.storageClassName",
                "required unless existingClaim is set: name a StorageClass that provides "
                "ReadWriteMany volumes",
            )
        )
    return problems


def lease_timings_are_ordered(spec: GoCDHAClusterSpec) -> list[Problem]:
    """retryPeriod * 2 <= renewDeadline < leaseDuration <= primaryUnavailableSeconds, checked on
    the timings in force (explicit or derived); each problem names the field the user set (or
    should set). Why: docs/operator.md, "What fences a primary"."""
    failover = spec.failover
    base = "spec.failover"
    timings = failover.lease_timings
    problems: list[Problem] = []
    if timings.lease_duration > failover.primary_unavailable_seconds:
        problems.append(
            Problem(
                f"{base}.leaseDurationSeconds",
                f"{timings.lease_duration} must be at most primaryUnavailableSeconds "
                f"({failover.primary_unavailable_seconds}): a failover waits for both",
            )
        )
    if timings.renew_deadline >= timings.lease_duration:
        field = (
            "renewDeadlineSeconds"
            if failover.renew_deadline_seconds is not None
            else "leaseDurationSeconds"
        )
        problems.append(
            Problem(
                f"{base}.{field}",
                f"renewDeadlineSeconds ({timings.renew_deadline}) must be below "
                f"leaseDurationSeconds ({timings.lease_duration}): a primary that cannot renew "
                "must stop before the operator may promote its standby",
            )
        )
    if timings.retry_period * 2 > timings.renew_deadline:
        field = (
            "retryPeriodSeconds"
            if failover.retry_period_seconds is not None
            else "renewDeadlineSeconds"
        )
        problems.append(
            Problem(
                f"{base}.{field}",
                f"retryPeriodSeconds ({timings.retry_period}) must be at most half of "
                f"renewDeadlineSeconds ({timings.renew_deadline}): the guard needs two attempts "
                "before it stops its Postgres",
            )
        )
    return problems


#: Every cross-field rule, in the order their problems are reported.
CROSS_FIELD_RULES: Final[tuple[Rule, ...]] = (
    standby_mode_needs_version_or_setting,
    warm_not_after_21_2,
    warm_needs_token_authentication,
    addon_only_in_warm,
    addon_not_with_builtin_feature,
    addon_required_before_builtin_feature,
    maintenance_mode_start_needs_20_9,
    postgres_major_supported,
    synchronous_commit_fits_synchronous,
    shared_storage_is_claim_or_class,
    artifacts_volume_is_claim_or_class,
    lease_timings_are_ordered,
)


def cross_field_problems(spec: GoCDHAClusterSpec) -> list[Problem]:
    """The problems of every rule in :data:`CROSS_FIELD_RULES`, in order."""
    return [problem for rule in CROSS_FIELD_RULES for problem in rule(spec)]
