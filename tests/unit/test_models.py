"""The resource model: defaults, the standby mode rules, and readable errors for bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.api.validation import SpecError

Body = Callable[..., dict[str, Any]]


def test_minimal_resource_gets_every_default(body: Body) -> None:
    cluster = parse_cluster(body())
    spec = cluster.spec
    assert spec.gocd.image == "gocd/gocd-server:v26.1.0"
    assert spec.gocd.effective_standby_mode == "Cold"
    assert spec.postgres.image == "postgres:17"
    assert spec.postgres.database == "gocd"
    assert spec.failover.mode == "Manual"
    assert spec.failover.primary_unavailable_seconds == 60
    assert spec.failover.max_lag_bytes == 16 * 1024 * 1024
    assert spec.failover.rejoin == "Automatic"
    assert spec.gocd.resources.limits == {"cpu": "2", "memory": "2Gi"}


def test_wire_format_is_camel_case(body: Body) -> None:
    api = parse_cluster(body()).spec.to_api()
    assert "sharedStorage" in api
    assert "storageClassName" in api["sharedStorage"]
    assert "primaryUnavailableSeconds" in api["failover"]
    assert "shared_storage" not in api


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        ("gocd/gocd-server:v18.8.0", "Warm"),
        ("gocd/gocd-server:v20.5.0", "Warm"),
        ("gocd/gocd-server:21.2.0", "Warm"),
        ("gocd/gocd-server:v21.3.0", "Cold"),
        ("gocd/gocd-server:v26.1.0-1234", "Cold"),
    ],
)
def test_standby_mode_defaults_from_the_gocd_version(body: Body, image: str, mode: str) -> None:
    spec: dict[str, Any] = {"gocd": {"image": image}}
    if image.endswith("v18.8.0") or image.endswith("v20.5.0"):
        spec["gocd"]["businessContinuity"] = {
            "addon": {"url": "https://example.org/bc.jar", "sha256": "a" * 64}
        }
    assert parse_cluster(body(spec)).spec.gocd.effective_standby_mode == mode


def test_explicit_cold_mode_is_allowed_for_old_gocd(body: Body) -> None:
    cluster = parse_cluster(
        body({"gocd": {"image": "gocd/gocd-server:v21.2.0", "standbyMode": "Cold"}})
    )
    assert cluster.spec.gocd.effective_standby_mode == "Cold"


def test_digest_image_with_explicit_mode_is_accepted(body: Body) -> None:
    image = "gocd/gocd-server@sha256:" + "e" * 64
    cluster = parse_cluster(body({"gocd": {"image": image, "standbyMode": "Cold"}}))
    assert cluster.spec.gocd.version is None
    assert cluster.spec.gocd.effective_standby_mode == "Cold"


def test_quantities_written_as_numbers_become_strings(body: Body) -> None:
    cluster = parse_cluster(body({"postgres": {"resources": {"limits": {"cpu": 2}}}}))
    assert cluster.spec.postgres.resources.limits == {"cpu": "2"}


def test_existing_claim_alone_is_valid(body: Body) -> None:
    cluster = parse_cluster(
        body(sharedStorage=None, spec={}) | {"spec": {"sharedStorage": {"existingClaim": "rwx"}}}
    )
    assert cluster.spec.shared_storage.existing_claim == "rwx"


# Each case: a patch to the spec (or the whole body), the field path the error must name, and a
# fragment of what it must say is allowed or wrong.
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown top field", {"spec": {"gocdd": {}}}, "spec.gocdd", "unknown field (allowed: gocd"),
    ("unknown gocd field", {"spec": {"gocd": {"imag": "x"}}}, "spec.gocd.imag", "allowed: image"),
    (
        "password as plain field",
        {"spec": {"postgres": {"password": "x"}}},
        "spec.postgres.password",
        "unknown field",
    ),
    ("missing sharedStorage", {"spec": {"sharedStorage": None}}, "spec.sharedStorage", ""),
    (
        "shared without class",
        {"spec": {"sharedStorage": {"size": "1Gi", "storageClassName": None}}},
        "spec.sharedStorage.storageClassName",
        "ReadWriteMany",
    ),
    (
        "shared without size",
        {"spec": {"sharedStorage": {"size": None, "storageClassName": "nfs"}}},
        "spec.sharedStorage.size",
        "required unless existingClaim",
    ),
    (
        "shared claim and size",
        {"spec": {"sharedStorage": {"existingClaim": "x"}}},
        "spec.sharedStorage.existingClaim",
        "cannot be combined with size",
    ),
    (
        "shared bad size",
        {"spec": {"sharedStorage": {"size": "ten gigs"}}},
        "spec.sharedStorage.size",
        "does not match",
    ),
    (
        "warm with current gocd",
        {"spec": {"gocd": {"image": "gocd/gocd-server:v26.1.0", "standbyMode": "Warm"}}},
        "spec.gocd.standbyMode",
        "removed in 23.1.0",
    ),
    (
        "warm with 21.3",
        {"spec": {"gocd": {"image": "gocd/gocd-server:v21.3.0", "standbyMode": "Warm"}}},
        "spec.gocd.standbyMode",
        "disabled in GoCD 21.3.0",
    ),
    (
        "warm before tokens",
        {"spec": {"gocd": {"image": "gocd/gocd-server:v18.7.0", "standbyMode": "Warm"}}},
        "spec.gocd.standbyMode",
        "18.8.0",
    ),
    (
        "digest without mode",
        {"spec": {"gocd": {"image": "gocd/gocd-server@sha256:" + "f" * 64}}},
        "spec.gocd.standbyMode",
        "no version tag",
    ),
    (
        "latest without mode",
        {"spec": {"gocd": {"image": "gocd/gocd-server:latest"}}},
        "spec.gocd.standbyMode",
        "no version tag",
    ),
    (
        "bad mode",
        {"spec": {"gocd": {"standbyMode": "Hot"}}},
        "spec.gocd.standbyMode",
        "'Warm' or 'Cold'",
    ),
    (
        "image with space",
        {"spec": {"gocd": {"image": "gocd server"}}},
        "spec.gocd.image",
        "does not match",
    ),
    (
        "addon in cold mode",
        {
            "spec": {
                "gocd": {
                    "businessContinuity": {"addon": {"url": "https://x/a.jar", "sha256": "a" * 64}}
                }
            }
        },
        "spec.gocd.businessContinuity.addon",
        "only used in Warm",
    ),
    (
        "addon with 21.2",
        {
            "spec": {
                "gocd": {
                    "image": "gocd/gocd-server:v21.2.0",
                    "businessContinuity": {"addon": {"url": "https://x/a.jar", "sha256": "a" * 64}},
                }
            }
        },
        "spec.gocd.businessContinuity.addon",
        "built in",
    ),
    (
        "warm 20.5 without addon",
        {"spec": {"gocd": {"image": "gocd/gocd-server:v20.5.0"}}},
        "spec.gocd.businessContinuity.addon",
        "required for Warm",
    ),
    (
        "addon bad checksum",
        {
            "spec": {
                "gocd": {
                    "image": "gocd/gocd-server:v20.5.0",
                    "businessContinuity": {"addon": {"url": "https://x/a.jar", "sha256": "XYZ"}},
                }
            }
        },
        "spec.gocd.businessContinuity.addon.sha256",
        "does not match",
    ),
    (
        "addon ftp url",
        {
            "spec": {
                "gocd": {
                    "image": "gocd/gocd-server:v20.5.0",
                    "businessContinuity": {"addon": {"url": "ftp://x/a.jar", "sha256": "a" * 64}},
                }
            }
        },
        "spec.gocd.businessContinuity.addon.url",
        "does not match",
    ),
    (
        "token ref without key",
        {"spec": {"gocd": {"businessContinuity": {"tokenSecretRef": {"name": "tok"}}}}},
        "spec.gocd.businessContinuity.tokenSecretRef.key",
        "required",
    ),
    (
        "token ref bad name",
        {
            "spec": {
                "gocd": {"businessContinuity": {"tokenSecretRef": {"name": "Bad_Name", "key": "k"}}}
            }
        },
        "spec.gocd.businessContinuity.tokenSecretRef.name",
        "does not match",
    ),
    (
        "jvm option not an option",
        {"spec": {"gocd": {"jvmOptions": ["Xmx2g"]}}},
        "spec.gocd.jvmOptions",
        "must start with -",
    ),
    (
        "jvm option owned",
        {"spec": {"gocd": {"jvmOptions": ["-Dgo.server.mode=standby"]}}},
        "spec.gocd.jvmOptions",
        "manages for promotion",
    ),
    (
        "maintenance on old gocd",
        {
            "spec": {
                "gocd": {
                    "image": "gocd/gocd-server:v20.8.0",
                    "startPromotedInMaintenanceMode": True,
                    "businessContinuity": {},
                }
            }
        },
        "spec.gocd.startPromotedInMaintenanceMode",
        "20.9.0",
    ),
    (
        "service type",
        {"spec": {"gocd": {"service": {"type": "ExternalName"}}}},
        "spec.gocd.service.type",
        "ClusterIP",
    ),
    (
        "gocd storage size",
        {"spec": {"gocd": {"storage": {"size": "-5Gi"}}}},
        "spec.gocd.storage.size",
        "does not match",
    ),
    (
        "gocd resources unknown",
        {"spec": {"gocd": {"resources": {"limits": {"gpu": "1"}}}}},
        "spec.gocd.resources.limits",
        "allowed: cpu",
    ),
    (
        "artifacts without class",
        {"spec": {"gocd": {"artifacts": {"size": "1Gi"}}}},
        "spec.gocd.artifacts.storageClassName",
        "required",
    ),
    (
        "postgres 12",
        {"spec": {"postgres": {"image": "postgres:12"}}},
        "spec.postgres.image",
        "supported: 13-17",
    ),
    (
        "postgres 18",
        {"spec": {"postgres": {"image": "postgres:18-alpine"}}},
        "spec.postgres.image",
        "not supported",
    ),
    (
        "database reserved",
        {"spec": {"postgres": {"database": "postgres"}}},
        "spec.postgres.database",
        "reserved",
    ),
    (
        "database bad name",
        {"spec": {"postgres": {"database": "GoCD-db"}}},
        "spec.postgres.database",
        "does not match",
    ),
    (
        "owned parameter",
        {"spec": {"postgres": {"parameters": {"archive_command": "cp %p /x"}}}},
        "spec.postgres.parameters",
        "managed by the operator",
    ),
    (
        "bad parameter name",
        {"spec": {"postgres": {"parameters": {"max connections": "5"}}}},
        "spec.postgres.parameters",
        "not a postgresql.conf parameter",
    ),
    (
        "parameter with newline",
        {"spec": {"postgres": {"parameters": {"work_mem": "4MB\narchive_mode = off"}}}},
        "spec.postgres.parameters",
        "line break",
    ),
    (
        "parameter not string",
        {"spec": {"postgres": {"parameters": {"work_mem": 64}}}},
        "spec.postgres.parameters.work_mem",
        "valid string",
    ),
    (
        "synchronous not bool",
        {"spec": {"postgres": {"synchronous": "sometimes"}}},
        "spec.postgres.synchronous",
        "boolean",
    ),
    (
        "failover mode",
        {"spec": {"failover": {"mode": "Auto"}}},
        "spec.failover.mode",
        "'Manual' or 'Automatic'",
    ),
    (
        "failover too fast",
        {"spec": {"failover": {"primaryUnavailableSeconds": 1}}},
        "spec.failover.primaryUnavailableSeconds",
        "greater than or equal to 10",
    ),
    (
        "negative lag",
        {"spec": {"failover": {"maxLagBytes": -1}}},
        "spec.failover.maxLagBytes",
        "greater than or equal to 0",
    ),
    (
        "rejoin value",
        {"spec": {"failover": {"rejoin": "Never"}}},
        "spec.failover.rejoin",
        "'Automatic' or 'Manual'",
    ),
    ("name too long", {"metadata": {"name": "c" * 41}}, "metadata.name", "at most 40"),
    ("name not dns", {"metadata": {"name": "CI_Server"}}, "metadata.name", "does not match"),
    ("wrong apiVersion", {"apiVersion": "gocdha.io/v1"}, "apiVersion", "gocdha.io/v1alpha1"),
    ("wrong kind", {"kind": "GoCDCluster"}, "kind", "GoCDHACluster"),
]


def _apply(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _apply(result[key], value)
        else:
            result[key] = value
    return result


@pytest.mark.parametrize(
    ("case", "patch", "path", "fragment"), INVALID, ids=[c[0] for c in INVALID]
)
def test_invalid_resource_names_the_field(
    body: Body, case: str, patch: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_cluster(_apply(body(), patch))
    paths = [p.path for p in excinfo.value.problems]
    assert path in paths, f"{case}: {excinfo.value}"
    message = next(p.message for p in excinfo.value.problems if p.path == path)
    assert fragment in message, f"{case}: {message}"


def test_there_are_at_least_thirty_distinct_invalid_cases() -> None:
    assert len({case for case, *_ in INVALID}) >= 30


def test_every_problem_is_reported_at_once(body: Body) -> None:
    bad = _apply(
        body(), {"spec": {"gocd": {"imag": "x"}, "failover": {"mode": "x", "maxLagBytes": -5}}}
    )
    with pytest.raises(SpecError) as excinfo:
        parse_cluster(bad)
    assert {p.path for p in excinfo.value.problems} >= {
        "spec.gocd.imag",
        "spec.failover.mode",
        "spec.failover.maxLagBytes",
    }
    assert str(excinfo.value).count("\n") == len(excinfo.value.problems) - 1


def test_errors_never_echo_a_secret_looking_value_from_an_unknown_field(body: Body) -> None:
    bad = _apply(body(), {"spec": {"postgres": {"password": "hunter2-very-secret"}}})
    with pytest.raises(SpecError) as excinfo:
        parse_cluster(bad)
    assert "hunter2-very-secret" not in str(excinfo.value)


def test_status_written_by_another_version_is_tolerated(body: Body) -> None:
    cluster = parse_cluster(body(status={"primary": "b", "someFutureField": 1}))
    assert cluster.status.primary == "b"
