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
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.builders.backup import build_backup_job
from gocd_ha_operator.builders.postgres import build_postgres_statefulset
from gocd_ha_operator.builders.secrets import escape_properties_value, render_db_properties
from gocd_ha_operator.cli.render import render_cluster
from gocd_ha_operator.controller.tls import ca_file, ensure_certificates, read_ca_certificate
from gocd_ha_operator.guard.tls import refresh
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.apply import KubeClient, NotOwnedError
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.local.standin_gocd import libpq_params, parse_properties
from gocd_ha_operator.postgres import config as pgconfig
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
