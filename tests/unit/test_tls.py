"""TLS by default (docs/architecture.md §17): the certificate rules, the Secrets the operator keeps,
what the pod templates mount, the Postgres configuration, the guard's copy and the stand-in GoCD's
reading of db.properties."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.builders.backup import build_backup_job
from gocd_ha_operator.builders.postgres import build_postgres_statefulset
from gocd_ha_operator.builders.secrets import escape_properties_value, render_db_properties
from gocd_ha_operator.cli.render import render_cluster
from gocd_ha_operator.controller.tls import (
    CertificateReason,
    ca_file,
    check_certificates,
    ensure_certificates,
    read_ca_certificate,
)
from gocd_ha_operator.guard.tls import refresh
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.apply import KubeClient, NotOwnedError
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.local.standin_gocd import libpq_params, parse_properties
from gocd_ha_operator.postgres import config as pgconfig
from tests.support import usercerts
from tests.support.memkube import MemoryKube

NOW = dt.datetime(2026, 12, 2, 4, 0, tzinfo=dt.UTC)
Inputs = Callable[..., BuildInputs]
OWNER = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": "ci", "namespace": "build", "uid": "u-1"},
}


@pytest.fixture(scope="module")
def ca() -> certificates.CertificateAuthority:
    return certificates.generate_ca("test CA", now=NOW)


# --- rules: names, renewal at two thirds -------------------------------------------------------


def test_the_server_certificate_names_every_service_a_client_uses() -> None:
    names = certificates.postgres_dns_names("ci", "build")
    for service in ("ci-pg-a", "ci-pg-b", "ci-pg-primary", "ci-pg-standby"):
        for name in (
            service,
            f"{service}.build",
            f"{service}.build.svc",
            f"{service}.build.svc.cluster.local",
        ):
            assert name in names
    assert len(names) == len(set(names)) == 16
    assert names[0] == "ci-pg-a.build.svc"  # the common name


def test_renewal_is_due_at_two_thirds_of_the_lifetime(
    ca: certificates.CertificateAuthority,
) -> None:
    issued = certificates.issue_server_certificate(ca, ["x.ns.svc"], now=NOW)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    due = cert.not_valid_before_utc + lifetime * 2 / 3
    assert certificates.renew_at(issued.cert_pem) == due
    assert not certificates.renewal_due(issued.cert_pem, now=due - dt.timedelta(seconds=1))
    assert certificates.renewal_due(issued.cert_pem, now=due)
    # With the default lifetime (90 days): kept for 60 days, renewed 30 days before expiry.
    assert lifetime == certificates.SERVER_CERT_VALIDITY + dt.timedelta(minutes=5)
    assert not certificates.renewal_due(issued.cert_pem, now=NOW + dt.timedelta(days=59))
    assert certificates.renewal_due(issued.cert_pem, now=NOW + dt.timedelta(days=60))
    assert certificates.renewal_due(b"not a certificate", now=NOW)


def test_an_issued_certificate_is_a_server_certificate_signed_by_the_ca(
    ca: certificates.CertificateAuthority,
) -> None:
    names = certificates.postgres_dns_names("ci", "build")
    issued = certificates.issue_server_certificate(ca, names, now=NOW)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    ca_cert, _key = ca.load()
    cert.verify_directly_issued_by(ca_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == names
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert issued.ca_pem == ca.cert_pem
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc
    assert certificates.server_certificate_problem(issued, ca, names, now=NOW) is None


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("due", "two thirds of its lifetime have passed"),
        ("other-ca", "its ca.crt is not the cluster CA's"),
        ("signed-elsewhere", "the CA did not sign it"),
        ("missing-name", "it does not name every Postgres Service"),
        ("future", "it is not valid yet"),
    ],
)
def test_a_server_certificate_to_replace_says_why(
    ca: certificates.CertificateAuthority, case: str, reason: str
) -> None:
    names = certificates.postgres_dns_names("ci", "build")
    issued = certificates.issue_server_certificate(ca, names, now=NOW)
    other = certificates.generate_ca("other", now=NOW)
    now = NOW
    if case == "due":
        now = NOW + dt.timedelta(days=61)
    elif case == "other-ca":
        issued = certificates.issue_server_certificate(other, names, now=NOW)
    elif case == "signed-elsewhere":
        foreign = certificates.issue_server_certificate(other, names, now=NOW)
        issued = certificates.ServingCertificate(ca.cert_pem, foreign.cert_pem, foreign.key_pem)
    elif case == "missing-name":
        issued = certificates.issue_server_certificate(ca, names[:-1], now=NOW)
    elif case == "future":
        now = NOW - dt.timedelta(hours=1)
    problem = certificates.server_certificate_problem(issued, ca, names, now=now)
    assert problem == reason
    assert problem is not None and "PRIVATE" not in problem


def test_the_ca_key_never_shows_and_a_broken_secret_is_not_a_ca(
    ca: certificates.CertificateAuthority,
) -> None:
    assert "***" in repr(ca) and "PRIVATE" not in repr(ca)
    assert certificates.CertificateAuthority.from_secret_data(ca.secret_data()) == ca
    assert certificates.CertificateAuthority.from_secret_data({"ca.crt": "eA=="}) is None
    broken = ca.secret_data() | {"ca.key": base64.b64encode(b"garbage").decode()}
    assert certificates.CertificateAuthority.from_secret_data(broken) is None


# --- the operator's Secrets ---------------------------------------------------------------------


def _cluster(body: Callable[..., dict[str, Any]]) -> Any:
    return parse_cluster(body())


def test_the_operator_creates_the_ca_and_server_secrets_once_and_renews_at_two_thirds(
    body: Callable[..., dict[str, Any]],
) -> None:
    kube = MemoryKube()
    cluster = _cluster(body)
    client = cast(KubeClient, kube)
    ca_pem = ensure_certificates(client, OWNER, cluster, now=NOW)
    # Cold mode (the example): the sync agent's certificate too (tests/unit/test_sync_agent_tls.py).
    assert [w[2] for w in kube.writes] == ["ci-ca", "ci-server-tls", "ci-sync-agent-tls"]
    server = kube.objects[("Secret", "build", "ci-server-tls")]
    assert server["type"] == "kubernetes.io/tls"
    assert sorted(server["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert server["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert read_ca_certificate(client, cluster) == ca_pem
    first = base64.b64decode(server["data"]["tls.crt"])
    # Unchanged: no write, at any time before two thirds of the lifetime.
    ensure_certificates(client, OWNER, cluster, now=NOW + dt.timedelta(days=59))
    assert len(kube.writes) == 3
    # Due: a new server certificate from the same CA; the CA Secret is not written.
    assert ensure_certificates(client, OWNER, cluster, now=NOW + dt.timedelta(days=60)) == ca_pem
    assert kube.writes[3:] == [
        ("patch", "Secret", "ci-server-tls"),
        ("patch", "Secret", "ci-sync-agent-tls"),
    ]
    renewed = kube.objects[("Secret", "build", "ci-server-tls")]["data"]
    # What the supervisor's Event says about it.
    later = NOW + dt.timedelta(days=120)
    update = check_certificates(client, OWNER, cluster, now=later, create=False).updated
    assert update is not None and "two thirds of its lifetime have passed" in update
    assert check_certificates(client, OWNER, cluster, now=later, create=False).updated is None
    second = base64.b64decode(renewed["tls.crt"])
    assert certificates.serial_number(second) != certificates.serial_number(first)
    assert base64.b64decode(renewed["ca.crt"]) == ca_pem


def test_the_periodic_check_renews_but_never_creates(
    body: Callable[..., dict[str, Any]],
) -> None:
    kube = MemoryKube()
    client, cluster = cast(KubeClient, kube), _cluster(body)
    assert ensure_certificates(client, OWNER, cluster, now=NOW, create=False) is None
    assert kube.writes == []  # an invalid or not yet reconciled resource gets nothing
    ca_pem = ensure_certificates(client, OWNER, cluster, now=NOW)
    later = NOW + dt.timedelta(days=61)
    assert ensure_certificates(client, OWNER, cluster, now=later, create=False) == ca_pem
    assert ("patch", "Secret", "ci-server-tls") in kube.writes[-2:]


def test_the_periodic_check_reads_each_secret_once(body: Callable[..., dict[str, Any]]) -> None:
    """Issue #16: the supervisor's check (every ``certificate_check_interval`` and after an
    operator restart) reads each TLS Secret once; it read the server certificate's twice."""
    kube = MemoryKube()
    client, cluster = cast(KubeClient, kube), _cluster(body)
    ensure_certificates(client, OWNER, cluster, now=NOW)
    kube.reads.clear()
    check_certificates(client, OWNER, cluster, now=NOW + dt.timedelta(days=1), create=False)
    assert sorted(kube.reads) == [
        ("Secret", "ci-ca"),
        ("Secret", "ci-server-tls"),
        ("Secret", "ci-sync-agent-tls"),
    ]


def test_a_secret_controlled_by_another_object_is_not_taken_over(
    body: Callable[..., dict[str, Any]],
) -> None:
    kube = MemoryKube()
    kube.objects[("Secret", "build", "ci-ca")] = {
        "kind": "Secret",
        "metadata": {
            "name": "ci-ca",
            "namespace": "build",
            "ownerReferences": [{"uid": "someone-else", "controller": True}],
        },
        "data": {},
    }
    with pytest.raises(NotOwnedError, match="ci-ca"):
        ensure_certificates(cast(KubeClient, kube), OWNER, _cluster(body), now=NOW)
    assert kube.writes == []


def test_the_ca_file_for_libpq_is_written_once(tmp_path: Path) -> None:
    path = ca_file(b"-----BEGIN CERTIFICATE-----\n", tmp_path)
    assert path.read_bytes() == b"-----BEGIN CERTIFICATE-----\n"
    mtime = path.stat().st_mtime_ns
    assert ca_file(b"-----BEGIN CERTIFICATE-----\n", tmp_path) == path
    assert path.stat().st_mtime_ns == mtime


# --- builders and the Postgres configuration ----------------------------------------------------


def test_postgres_pods_mount_the_server_secret_in_postgres_and_the_guard(inputs: Inputs) -> None:
    built = inputs()
    for side in ("a", "b"):
        pod = build_postgres_statefulset(built, side)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["server-tls"]["secret"] == {
            "secretName": "ci-server-tls",
            "defaultMode": 0o440,
        }
        postgres, guard = pod["containers"]
        assert {"name": "GOCDHA_TLS_SECRET_DIR", "value": "/opt/gocdha/tls"} in postgres["env"]
        for container in (postgres, guard):
            assert {
                "name": "server-tls",
                "mountPath": "/opt/gocdha/tls",
                "readOnly": True,
            } in container["volumeMounts"]
        assert guard["command"][-2:] == ["--tls-secret-dir", "/opt/gocdha/tls"]


def test_the_ca_key_is_mounted_nowhere_and_gocd_gets_only_the_ca_certificate(
    inputs: Inputs,
) -> None:
    built = inputs({"backup": {"volume": {"existingClaim": "backups"}}})
    children = [*build_children(built), build_backup_job(built, "b1", "b", "Manual")]
    text = repr(children)
    assert "'ci-ca'" not in text
    for child in children:
        template = child.get("spec", {}).get("template", {}).get("spec", {})
        for volume in template.get("volumes", []):
            secret = volume.get("secret", {})
            if secret.get("secretName") == "ci-server-tls" and child["kind"] != "StatefulSet":
                assert secret["items"] == [{"key": "ca.crt", "path": "ca.crt"}], child["kind"]


def test_db_properties_verifies_the_server_fully(inputs: Inputs) -> None:
    text = render_db_properties(inputs(), "b")
    url = parse_properties(text)["db.url"]
    assert url == (
        "jdbc:postgresql://ci-pg-b.build.svc:5432/gocd"
        "?ssl=true&sslmode=verify-full&sslrootcert=/opt/gocdha/ca/ca.crt"
    )


def test_backup_jobs_verify_the_instance_with_the_ca(inputs: Inputs) -> None:
    job = build_backup_job(
        inputs({"backup": {"volume": {"existingClaim": "backups"}}}), "b1", "b", "Manual"
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GOCDHA_TLS_CA_FILE"] == "/opt/gocdha/ca/ca.crt"
    assert {"name": "postgres-ca", "mountPath": "/opt/gocdha/ca", "readOnly": True} in container[
        "volumeMounts"
    ]


def test_postgres_serves_tls_only_and_pg_hba_admits_tcp_over_tls_only() -> None:
    conf = pgconfig.render_postgresql_conf(parameters={}, synchronous=False)
    assert "ssl = 'on'" in conf or "ssl = on" in conf
    assert "ssl_min_protocol_version = 'TLSv1.2'" in conf
    hba = [
        line.split()
        for line in pgconfig.render_pg_hba(database="gocd").splitlines()
        if line and not line.startswith("#")
    ]
    assert {row[0] for row in hba} == {"local", "hostssl"}
    assert all(row[-1] == "scram-sha-256" for row in hba)


def test_ssl_parameters_cannot_be_set_by_the_user() -> None:
    with pytest.raises(ValueError, match="ssl_cert_file"):
        pgconfig.render_postgresql_conf(parameters={"ssl_cert_file": "/x"}, synchronous=False)


# --- the guard's copy -----------------------------------------------------------------------------


def _write_secret(directory: Path, issued: certificates.ServingCertificate) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "tls.crt").write_bytes(issued.cert_pem)
    (directory / "tls.key").write_bytes(issued.key_pem)
    (directory / "ca.crt").write_bytes(issued.ca_pem)


def test_the_guard_copies_a_changed_certificate_in_place(
    ca: certificates.CertificateAuthority, tmp_path: Path
) -> None:
    secret, target = tmp_path / "secret", tmp_path / "tls"
    first = certificates.issue_server_certificate(ca, ["x.ns.svc"], now=NOW)
    _write_secret(secret, first)
    assert refresh(secret, target) is None  # the entrypoint has not installed anything yet
    target.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (target / name).write_bytes((secret / name).read_bytes())
        (target / name).chmod(0o600)
    assert refresh(secret, target) is None  # unchanged
    inode = (target / "tls.key").stat().st_ino
    second = certificates.issue_server_certificate(ca, ["x.ns.svc"], now=NOW)
    _write_secret(secret, second)
    assert refresh(secret, target) == certificates.serial_number(second.cert_pem)
    assert (target / "tls.key").read_bytes() == second.key_pem
    assert (target / "tls.key").stat().st_ino == inode  # in place: owner and mode kept
    assert (target / "tls.key").stat().st_mode & 0o777 == 0o600
    # A certificate with someone else's key is not copied: the old pair keeps serving.
    third = certificates.issue_server_certificate(ca, ["x.ns.svc"], now=NOW)
    (secret / "tls.crt").write_bytes(third.cert_pem)
    assert refresh(secret, target) is None
    assert (target / "tls.crt").read_bytes() == second.cert_pem


# --- the stand-in GoCD reads db.properties like GoCD ---------------------------------------------


def test_the_standin_connects_as_db_properties_says(inputs: Inputs, tmp_path: Path) -> None:
    built = inputs()
    properties = parse_properties(render_db_properties(built, "a"))
    assert properties["db.password"] == built.credentials.gocd_password
    params = libpq_params(
        properties,
        {"build/ci-pg-a:5432": Endpoint("127.0.0.1", 41000)},
        {"/opt/gocdha/ca": tmp_path / "ca"},
    )
    assert params | {"password": "-"} == {
        "host": "ci-pg-a.build.svc",
        "hostaddr": "127.0.0.1",
        "port": 41000,
        "dbname": "gocd",
        "user": "gocd",
        "password": "-",
        "sslmode": "verify-full",
        "sslrootcert": str(tmp_path / "ca" / "ca.crt"),
        "application_name": "gocd-standin",
        "connect_timeout": 3,
    }
    with pytest.raises(ValueError, match=r"db\.url"):
        libpq_params({"db.url": "jdbc:mysql://x/y"}, {}, {})


def test_properties_escapes_round_trip() -> None:
    for value in (" lead", "a=b:c#d!e\\f", "naïve\u2603", "tab\tend"):
        text = f"k={escape_properties_value(value)}\n"
        assert parse_properties(text) == {"k": value}


def test_render_prints_every_secret_the_pods_mount(body: Callable[..., dict[str, Any]]) -> None:
    children = render_cluster(_cluster(body), primary=None, operator_image="img:test")
    secrets = {c["metadata"]["name"] for c in children if c["kind"] == "Secret"}
    assert {"ci-ca", "ci-server-tls"} <= secrets
    mounted = set()
    for child in children:
        template = child.get("spec", {}).get("template", {}).get("spec", {})
        for volume in template.get("volumes", []):
            if "secret" in volume:
                mounted.add(volume["secret"]["secretName"])
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    mounted.add(source["secret"]["name"])
    assert "ci-server-tls" in mounted
    assert mounted <= secrets, mounted - secrets


# --- a user-provided certificate (spec.tls.serverCertificateSecret) ------------------------------

USER_SECRET = "ci-postgres-cert"
CLIENT_NAMES = certificates.client_dns_names("ci", "build")


def _provided(body: Callable[..., dict[str, Any]], mode: str = "Warm") -> Any:
    """A cluster with a user-provided certificate; Warm (no sync agent, so no cluster CA is
    needed at all) unless ``mode`` is Cold."""
    spec: dict[str, Any] = {"tls": {"serverCertificateSecret": {"name": USER_SECRET}}}
    if mode == "Warm":
        spec["gocd"] = {"image": "gocd/gocd-server:v21.2.0", "standbyMode": "Warm"}
    return parse_cluster(body(spec))


def test_the_model_takes_a_server_certificate_secret(body: Callable[..., dict[str, Any]]) -> None:
    cluster = _provided(body)
    assert cluster.spec.tls.server_certificate_secret.name == USER_SECRET
    assert _cluster(body).spec.tls is None


def test_a_user_certificate_must_name_the_svc_name_of_every_postgres_service() -> None:
    assert CLIENT_NAMES == [
        "ci-pg-a.build.svc",
        "ci-pg-b.build.svc",
        "ci-pg-primary.build.svc",
        "ci-pg-standby.build.svc",
    ]


def test_a_valid_user_certificate_is_accepted_also_by_wildcard_and_with_a_chain(
    ca: certificates.CertificateAuthority,
) -> None:
    for served in (
        usercerts.issue(ca, certificates.postgres_dns_names("ci", "build"), now=NOW),
        usercerts.issue(ca, ["*.build.svc"], now=NOW),
        usercerts.with_intermediate(ca, CLIENT_NAMES, now=NOW),
    ):
        kept, problem = certificates.provided_certificate(
            served.secret_data(), CLIENT_NAMES, now=NOW
        )
        assert problem is None
        assert kept == served
    # A wildcard stands for exactly one label.
    _, problem = certificates.provided_certificate(
        usercerts.issue(ca, ["*.svc"], now=NOW).secret_data(), CLIENT_NAMES, now=NOW
    )
    assert problem is not None and "ci-pg-a.build.svc" in problem


def _broken(ca: certificates.CertificateAuthority) -> list[tuple[str, dict[str, str], str]]:
    good = usercerts.issue(ca, CLIENT_NAMES, now=NOW)
    data = good.secret_data()
    other_ca = certificates.generate_ca("someone else's CA", now=NOW)
    other = usercerts.issue(other_ca, CLIENT_NAMES, now=NOW)
    few = usercerts.issue(ca, ["ci-pg-a.build.svc", "ci-pg-b.build.svc"], now=NOW)
    expired = usercerts.issue(
        ca, CLIENT_NAMES, now=NOW - dt.timedelta(days=2), validity=dt.timedelta(days=1)
    )
    future = usercerts.issue(ca, CLIENT_NAMES, now=NOW + dt.timedelta(days=2))
    encrypted = serialization.load_pem_private_key(good.key_pem, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    return [
        ("no ca.crt", {k: v for k, v in data.items() if k != "ca.crt"}, "it has no ca.crt"),
        ("no tls.key", {k: v for k, v in data.items() if k != "tls.key"}, "it has no tls.key"),
        ("empty tls.crt", {**data, "tls.crt": ""}, "it has no tls.crt"),
        ("not base64", {**data, "tls.crt": "%%%"}, "its tls.crt is not base64"),
        ("not PEM", {**data, "tls.crt": usercerts.b64(b"hello")}, "tls.crt is not a PEM"),
        ("ca not PEM", {**data, "ca.crt": usercerts.b64(b"hello")}, "ca.crt is not a PEM"),
        ("key not PEM", {**data, "tls.key": usercerts.b64(b"x")}, "tls.key is not a PEM"),
        ("encrypted key", {**data, "tls.key": usercerts.b64(encrypted)}, "tls.key is encrypted"),
        (
            "key of another certificate",
            {**data, "tls.key": usercerts.b64(other.key_pem)},
            "its tls.key does not belong to its tls.crt",
        ),
        ("expired", expired.secret_data(), "its tls.crt expired at"),
        ("not yet valid", future.secret_data(), "is not valid before"),
        (
            "names missing",
            few.secret_data(),
            "does not name ci-pg-primary.build.svc, ci-pg-standby.build.svc",
        ),
        (
            "another CA signed it",
            {**other.secret_data(), "ca.crt": usercerts.b64(ca.cert_pem)},
            "its ca.crt does not verify its tls.crt",
        ),
    ]


def test_a_user_certificate_that_cannot_be_served_says_what_is_wrong(
    ca: certificates.CertificateAuthority,
) -> None:
    for case, data, fragment in _broken(ca):
        kept, problem = certificates.provided_certificate(data, CLIENT_NAMES, now=NOW)
        assert kept is None, case
        assert problem is not None and fragment in problem, (case, problem)
        assert "PRIVATE KEY" not in problem and "BEGIN" not in problem, case


def _put(kube: MemoryKube, served: certificates.ServingCertificate) -> None:
    kube.objects[("Secret", "build", USER_SECRET)] = usercerts.cert_manager_secret(
        USER_SECRET, "build", served
    )


def test_a_user_certificate_is_copied_to_the_secret_the_pods_mount_and_no_ca_is_made(
    body: Callable[..., dict[str, Any]], ca: certificates.CertificateAuthority
) -> None:
    kube = MemoryKube()
    client, cluster = cast(KubeClient, kube), _provided(body)
    served = usercerts.issue(ca, CLIENT_NAMES, now=NOW)
    _put(kube, served)
    check = check_certificates(client, OWNER, cluster, now=NOW)
    assert kube.writes == [("create", "Secret", "ci-server-tls")]
    copy = kube.objects[("Secret", "build", "ci-server-tls")]
    assert copy["data"] == served.secret_data()
    assert copy["type"] == "kubernetes.io/tls"
    assert copy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert ("Secret", "build", "ci-ca") not in kube.objects
    assert check.ca_pem == ca.cert_pem
    assert check.verdict is not None
    assert (check.verdict.status, check.verdict.reason) == ("True", CertificateReason.PROVIDED)
    assert USER_SECRET in check.verdict.message
    assert check.updated is not None and "copied the certificate of Secret" in check.updated
    # Unchanged: no write; the periodic check (create=False) reads and keeps it.
    again = check_certificates(client, OWNER, cluster, now=NOW, create=False)
    assert again.updated is None
    assert (again.ca_pem, again.verdict) == (check.ca_pem, check.verdict)
    assert len(kube.writes) == 1
    # Not renewed by the operator, even past two thirds of its lifetime: cert-manager's job.
    check_certificates(client, OWNER, cluster, now=NOW + dt.timedelta(days=80), create=False)
    assert len(kube.writes) == 1
    # cert-manager renews (a new key and certificate in the same Secret): copied.
    renewed = usercerts.issue(ca, CLIENT_NAMES, now=NOW + dt.timedelta(days=60))
    _put(kube, renewed)
    check_certificates(client, OWNER, cluster, now=NOW + dt.timedelta(days=61), create=False)
    assert kube.writes[1:] == [("patch", "Secret", "ci-server-tls")]
    assert kube.objects[("Secret", "build", "ci-server-tls")]["data"] == renewed.secret_data()


def test_in_cold_mode_the_cluster_ca_still_signs_the_sync_agent_and_the_operator_trusts_both(
    body: Callable[..., dict[str, Any]], ca: certificates.CertificateAuthority
) -> None:
    kube = MemoryKube()
    client, cluster = cast(KubeClient, kube), _provided(body, mode="Cold")
    served = usercerts.issue(ca, CLIENT_NAMES, now=NOW)
    _put(kube, served)
    check = check_certificates(client, OWNER, cluster, now=NOW)
    written = [w[2] for w in kube.writes]
    assert written == ["ci-server-tls", "ci-ca", "ci-sync-agent-tls"]
    assert kube.objects[("Secret", "build", "ci-server-tls")]["data"] == served.secret_data()
    own = base64.b64decode(kube.objects[("Secret", "build", "ci-ca")]["data"]["ca.crt"])
    agent = kube.objects[("Secret", "build", "ci-sync-agent-tls")]["data"]
    assert base64.b64decode(agent["ca.crt"]) == own
    # The operator verifies Postgres with the user's CA and the sync agent with its own.
    assert check.ca_pem is not None
    assert x509.load_pem_x509_certificates(check.ca_pem) == [
        x509.load_pem_x509_certificate(ca.cert_pem),
        x509.load_pem_x509_certificate(own),
    ]
    again = check_certificates(client, OWNER, cluster, now=NOW, create=False)
    assert again.ca_pem == check.ca_pem and len(kube.writes) == 3


def test_a_broken_user_certificate_never_reaches_the_pods_and_the_verdict_says_why(
    body: Callable[..., dict[str, Any]], ca: certificates.CertificateAuthority
) -> None:
    kube = MemoryKube()
    client, cluster = cast(KubeClient, kube), _provided(body)
    good = usercerts.issue(ca, CLIENT_NAMES, now=NOW)
    _put(kube, good)
    check_certificates(client, OWNER, cluster, now=NOW)
    for case, data, fragment in _broken(ca):
        kube.objects[("Secret", "build", USER_SECRET)]["data"] = data
        check = check_certificates(client, OWNER, cluster, now=NOW, create=False)
        assert kube.objects[("Secret", "build", "ci-server-tls")]["data"] == good.secret_data()
        assert check.ca_pem == ca.cert_pem, case  # the operator still verifies with the kept CA
        verdict = check.verdict
        assert verdict is not None and verdict.status == "False", case
        assert verdict.reason == CertificateReason.INVALID, case
        assert verdict.message.startswith("spec.tls.serverCertificateSecret.name: "), case
        assert fragment in verdict.message, (case, verdict.message)
        assert "the instances keep the last valid certificate" in verdict.message, case
    assert len(kube.writes) == 1  # only the first copy
    # The kept certificate's end is stated; once past it, the verdict says clients now fail.
    until = certificates.not_valid_after(good.cert_pem)
    assert until is not None and verdict is not None
    assert f"(valid until {until.isoformat()})" in verdict.message
    later = check_certificates(client, OWNER, cluster, now=until + dt.timedelta(hours=1))
    assert later.verdict is not None
    assert "which expired at" in later.verdict.message
    assert "new connections fail verification" in later.verdict.message
    # The Secret deleted: SecretNotFound, the copy stays.
    del kube.objects[("Secret", "build", USER_SECRET)]
    check = check_certificates(client, OWNER, cluster, now=NOW, create=False)
    assert check.verdict is not None
    assert check.verdict.reason == CertificateReason.SECRET_NOT_FOUND
    assert "Secret build/ci-postgres-cert does not exist" in check.verdict.message
    assert len(kube.writes) == 1


def test_a_broken_user_certificate_on_a_new_cluster_creates_nothing(
    body: Callable[..., dict[str, Any]], ca: certificates.CertificateAuthority
) -> None:
    kube = MemoryKube()
    client, cluster = cast(KubeClient, kube), _provided(body)
    check = check_certificates(client, OWNER, cluster, now=NOW)
    assert check.ca_pem is None and kube.writes == []
    assert check.verdict is not None
    assert "the Postgres pods wait for ci-server-tls" in check.verdict.message
    # Fixed later: the periodic check (no spec change, so no reconcile) copies it.
    _put(kube, usercerts.issue(ca, CLIENT_NAMES, now=NOW))
    check = check_certificates(client, OWNER, cluster, now=NOW, create=False)
    assert check.ca_pem == ca.cert_pem
    assert kube.writes == [("create", "Secret", "ci-server-tls")]


def test_the_user_certificate_cannot_be_one_of_the_operators_own_secrets(
    body: Callable[..., dict[str, Any]],
) -> None:
    for own in ("ci-server-tls", "ci-ca", "ci-postgres-superuser"):
        warm = {"image": "gocd/gocd-server:v21.2.0", "standbyMode": "Warm"}
        cluster = parse_cluster(
            body({"gocd": warm, "tls": {"serverCertificateSecret": {"name": own}}})
        )
        kube = MemoryKube()
        check = check_certificates(cast(KubeClient, kube), OWNER, cluster, now=NOW)
        assert check.verdict is not None and check.verdict.status == "False"
        assert f"{own!r} is a Secret the operator writes itself" in check.verdict.message
        assert kube.writes == []


def test_switching_between_issued_and_provided_certificates_rolls_no_pod(
    inputs: Inputs,
) -> None:
    issued = build_children(inputs())
    provided = build_children(inputs({"tls": {"serverCertificateSecret": {"name": USER_SECRET}}}))
    assert provided == issued  # the pods mount ci-server-tls either way; only its data changes


def test_back_to_issued_certificates_the_operator_reissues_from_its_own_ca(
    body: Callable[..., dict[str, Any]], ca: certificates.CertificateAuthority
) -> None:
    kube = MemoryKube()
    client = cast(KubeClient, kube)
    _put(kube, usercerts.issue(ca, CLIENT_NAMES, now=NOW))
    check_certificates(client, OWNER, _provided(body), now=NOW)
    check = check_certificates(client, OWNER, _cluster(body), now=NOW)
    assert check.verdict is None
    own = kube.objects[("Secret", "build", "ci-ca")]
    assert check.ca_pem == base64.b64decode(own["data"]["ca.crt"]) != ca.cert_pem
    server = kube.objects[("Secret", "build", "ci-server-tls")]["data"]
    assert base64.b64decode(server["ca.crt"]) == check.ca_pem


def test_render_prints_no_tls_secret_for_a_user_certificate(
    body: Callable[..., dict[str, Any]],
) -> None:
    children = render_cluster(_provided(body), primary=None, operator_image="img:test")
    names = {c["metadata"]["name"] for c in children if c["kind"] == "Secret"}
    assert not names & {"ci-ca", "ci-server-tls"}


def test_the_cert_manager_example_names_what_the_operator_requires() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    cluster = parse_cluster(yaml.safe_load((root / "cert-manager-cluster.yaml").read_text()))
    documents = list(
        yaml.safe_load_all((root / "cert-manager" / "postgres-certificate.yaml").read_text())
    )
    tls = cluster.spec.tls
    assert tls is not None and tls.server_certificate_secret is not None
    wanted = tls.server_certificate_secret.name
    certificate = next(
        d for d in documents if d["kind"] == "Certificate" and d["spec"]["secretName"] == wanted
    )
    assert all(d["metadata"]["namespace"] == cluster.namespace for d in documents)
    dns_names = certificate["spec"]["dnsNames"]
    assert set(certificates.client_dns_names(cluster.name, cluster.namespace)) <= set(dns_names)
    assert set(dns_names) == set(certificates.postgres_dns_names(cluster.name, cluster.namespace))
    issuer = next(
        d
        for d in documents
        if d["metadata"]["name"] == certificate["spec"]["issuerRef"]["name"]
        and d["kind"] == "Issuer"
    )
    assert "ca" in issuer["spec"]  # an issuer that writes ca.crt


def test_hostile_user_certificate_content_is_a_verdict_never_an_exception(
    ca: certificates.CertificateAuthority,
) -> None:
    good = usercerts.issue(ca, CLIENT_NAMES, now=NOW).secret_data()
    pem_body = base64.b64decode(good["tls.crt"])
    lines = pem_body.splitlines()
    truncated = b"\n".join([*lines[:3], lines[-1]])
    garbage = b"-----BEGIN CERTIFICATE-----\nAAAA////\n-----END CERTIFICATE-----\n"
    not_utf8 = b"-----BEGIN CERTIFICATE-----\n\xff\xfe\x00\n-----END CERTIFICATE-----\n"
    dsa_key = dsa.generate_private_key(1024).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cases = {
        "truncated tls.crt": {**good, "tls.crt": usercerts.b64(truncated)},
        "garbage tls.crt": {**good, "tls.crt": usercerts.b64(garbage)},
        "binary tls.crt": {**good, "tls.crt": usercerts.b64(not_utf8)},
        "garbage ca.crt": {**good, "ca.crt": usercerts.b64(garbage)},
        "a key of another algorithm": {**good, "tls.key": usercerts.b64(dsa_key)},
        "a certificate as the key": {**good, "tls.key": good["tls.crt"]},
        "huge": {**good, "tls.crt": usercerts.b64(b"A" * 2_000_000)},
    }
    for case, data in cases.items():
        kept, problem = certificates.provided_certificate(data, CLIENT_NAMES, now=NOW)
        assert kept is None, case
        assert problem, case


def test_an_unexpected_parser_error_is_a_verdict(
    ca: certificates.CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(pem: bytes) -> list[x509.Certificate]:
        raise x509.DuplicateExtension(
            "duplicate SAN", x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME
        )

    monkeypatch.setattr(certificates, "_pem_certificates", broken)
    data = usercerts.issue(ca, CLIENT_NAMES, now=NOW).secret_data()
    kept, problem = certificates.provided_certificate(data, CLIENT_NAMES, now=NOW)
    assert kept is None
    assert problem == "it cannot be checked (DuplicateExtension while reading it)"
