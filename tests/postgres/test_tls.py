"""TLS by default (issue #13, docs/architecture.md §17) on real Postgres started by the entrypoint.

What a user would check: every TCP connection (replication, the operator's client, GoCD's
connection, the instance guard's probe) is encrypted (``pg_stat_ssl``); a connection without TLS
is refused; a client that verifies fully refuses a server under the wrong name or from another CA;
and a server certificate replaced under a writer is served after a reload, without a restart and
without a failed commit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509

from gocd_ha_operator.guard.instance import GuardSettings, InstanceGuard
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.postgres.client import ClientTLS, PostgresClient, PostgresUnreachable
from tests.support.pg import (
    LOOPBACK,
    PgCluster,
    PgInstance,
    served_certificate,
    streaming,
    wait_until,
)

pytestmark = pytest.mark.postgres


def guard_without_api(cluster: PgCluster, instance: PgInstance, **settings: Any) -> InstanceGuard:
    """An instance guard of ``instance`` with no API client, for what does not use the API (the
    probe, reloading the certificate); ``settings`` are added to its ``GuardSettings``."""
    return InstanceGuard(
        GuardSettings(
            cluster="ci",
            namespace="pgtest",
            side=instance.side,
            lease_duration=30,
            renew_deadline=20,
            retry_period=4,
            socket_dir=instance.socket_dir,
            port=instance.port,
            password_file=cluster.password_file("operator"),
            grant_file=instance.socket_dir / "no-grant",
            **settings,
        ),
        kube=None,  # type: ignore[arg-type]  # not used by the probe or the certificate reload
    )


def ssl_rows(instance: PgInstance) -> list[tuple[str, str, bool, str | None]]:
    """(backend type, user, ssl, TLS version) of every client backend and walsender."""
    with instance.connect() as conn:
        rows = conn.execute(
            "SELECT a.backend_type, coalesce(a.usename, ''), s.ssl, s.version "
            "FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.backend_type IN ('client backend', 'walsender') AND a.pid <> pg_backend_pid()"
        ).fetchall()
    return [(str(r[0]), str(r[1]), bool(r[2]), r[3]) for r in rows]


def serial_served(instance: PgInstance) -> int:
    der = served_certificate(instance.port, instance.server_name, instance.cluster.ca_file)
    return int(x509.load_der_x509_certificate(der).serial_number)


async def test_replication_and_every_client_negotiate_tls(cluster: PgCluster) -> None:
    primary, standby = cluster.start_pair()
    # The walsender that feeds the standby: the standby's primary_conninfo is verify-full.
    walsenders = [row for row in ssl_rows(primary) if row[0] == "walsender"]
    assert walsenders, "no walsender on the primary"
    assert all(ssl and version in ("TLSv1.2", "TLSv1.3") for _t, _u, ssl, version in walsenders)
    assert walsenders[0][1] == "gocdha_replication"
    # The operator's client: its own backend, seen from inside the session it opened.
    own = await primary.client()._scalar(
        "SELECT ssl::text || ' ' || version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        (),
        "tls check",
    )
    assert own in ("true TLSv1.3", "true TLSv1.2"), own
    observation = await standby.client().observe()
    assert observation.reachable and observation.in_recovery
    # GoCD's connection (the gocd user, as db.properties connects) and the standby's too.
    for instance in (primary, standby):
        with instance.gocd_connect() as conn:
            row = conn.execute(
                "SELECT s.ssl, current_user FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
            ).fetchone()
            assert row == (True, "gocd")
    # Every TCP backend on the primary right now is encrypted.
    with primary.gocd_connect():
        rows = ssl_rows(primary)
    assert rows and all(ssl for _t, _u, ssl, _v in rows), rows
    # The instance guard's probe over TCP verifies too (and answers: it is a primary).
    guard = guard_without_api(
        cluster, primary, postgres_host=primary.server_name, postgres_hostaddr=LOOPBACK
    )
    assert guard.probe().name == "PRIMARY"


def test_a_connection_without_tls_is_refused(cluster: PgCluster) -> None:
    primary, _standby = cluster.start_pair()
    for user, password, dbname in (
        ("gocd", cluster.passwords.gocd, cluster.database),
        ("gocdha_operator", cluster.passwords.operator, "postgres"),
        ("gocdha_replication", cluster.passwords.replication, "replication"),
    ):
        replication: dict[str, Any] = (
            {"replication": "true"} if user == "gocdha_replication" else {}
        )
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(
                host=LOOPBACK,
                port=primary.port,
                user=user,
                password=password,
                dbname=dbname if user != "gocdha_replication" else "postgres",
                sslmode="disable",
                connect_timeout=5,
                **replication,
            )
        message = str(refused.value)
        assert "no pg_hba.conf entry" in message and "no encryption" in message, message
        assert password not in message


def test_full_verification_refuses_a_wrong_name_or_another_ca(
    cluster: PgCluster, tmp_path: Path
) -> None:
    primary, _standby = cluster.start_pair()
    params = primary.tls_params(server_name="ci-pg-a.elsewhere.svc")
    with pytest.raises(psycopg.OperationalError) as wrong_name:
        psycopg.connect(**params, user="gocd", password=cluster.passwords.gocd, dbname="gocd")
    assert "does not match host name" in str(wrong_name.value), wrong_name.value
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(certificates.generate_ca("another CA", now=_now()).cert_pem)
    params = primary.tls_params() | {"sslrootcert": str(other_ca)}
    with pytest.raises(psycopg.OperationalError) as wrong_ca:
        psycopg.connect(**params, user="gocd", password=cluster.passwords.gocd, dbname="gocd")
    assert "certificate verify failed" in str(wrong_ca.value), wrong_ca.value
    # Sanity: the same parameters with the right name and CA connect.
    with psycopg.connect(
        **primary.tls_params(), user="gocd", password=cluster.passwords.gocd, dbname="gocd"
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


async def test_the_operator_client_refuses_another_ca_without_leaking_the_password(
    cluster: PgCluster, tmp_path: Path
) -> None:
    primary, _standby = cluster.start_pair()
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(certificates.generate_ca("another CA", now=_now()).cert_pem)
    client = PostgresClient(
        primary.endpoint,
        password=cluster.passwords.operator,
        tls=ClientTLS(primary.server_name, str(other_ca)),
    )
    observation = await client.observe()
    assert not observation.reachable
    assert observation.error is not None and "certificate verify failed" in observation.error
    assert cluster.passwords.operator not in observation.error
    wrong_name = PostgresClient(
        primary.endpoint,
        password=cluster.passwords.operator,
        tls=ClientTLS("ci-pg-primary.elsewhere.svc", str(cluster.ca_file)),
    )
    refused = await wrong_name.observe()
    assert not refused.reachable
    assert refused.error is not None and "does not match host name" in refused.error
    with pytest.raises(PostgresUnreachable, match="certificate verify failed"):
        await client.checkpoint()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Writer:
    """Commits one row at a time as GoCD: a long-lived session, and every 5th row through a new
    connection (a new TLS handshake, so it meets whatever certificate is served then)."""

    instance: PgInstance
    acknowledged: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = self.instance.gocd_connect()
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    if n % 5 == 0:
                        with self.instance.gocd_connect() as fresh:
                            fresh.execute("INSERT INTO rotation VALUES (%s)", (n,))
                    else:
                        session.execute("INSERT INTO rotation VALUES (%s)", (n,))
                except psycopg.Error as exc:
                    self.failures.append(f"row {n}: {exc}")
                    continue
                self.acknowledged.append(n)
                time.sleep(0.01)
        finally:
            session.close()


def test_a_replaced_server_certificate_is_served_after_a_reload_under_a_writer(
    cluster: PgCluster,
) -> None:
    primary, standby = cluster.start_pair()
    with primary.gocd_connect() as conn:
        conn.execute("CREATE TABLE rotation (n int PRIMARY KEY)")
    before = serial_served(primary)
    postmaster = primary.postmaster_pid()
    guard = guard_without_api(cluster, primary, tls_secret_dir=cluster.tls_secret_dir)
    guard.reload_certificate()  # nothing changed: nothing copied, no reload
    assert serial_served(primary) == before
    writer = Writer(primary)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        wait_until(lambda: len(writer.acknowledged) >= 20, timeout=30, what="rows before")
        issued = cluster.write_server_certificate()  # the renewed Secret as the kubelet updates it
        new_serial = certificates.serial_number(issued.cert_pem)
        assert new_serial != before
        guard.reload_certificate()  # the guard's pass: copy in place, SIGHUP
        wait_until(lambda: serial_served(primary) == new_serial, timeout=10, what="new serial")
        acknowledged_at_reload = len(writer.acknowledged)
        wait_until(
            lambda: len(writer.acknowledged) >= acknowledged_at_reload + 20,
            timeout=30,
            what="rows after the reload",
        )
    finally:
        writer.stop.set()
        thread.join(30)
    assert writer.failures == [], writer.failures[:5]
    # No restart: the same postmaster serves, the key copy keeps the mode Postgres demands.
    assert primary.postmaster_pid() == postmaster
    key = primary.socket_dir / "tls" / "tls.key"
    assert key.stat().st_mode & 0o777 == 0o600
    # Every acknowledged row is there, on the primary and (replicated) on the standby.
    with primary.gocd_connect() as conn:
        rows = {r[0] for r in conn.execute("SELECT n FROM rotation").fetchall()}
    assert set(writer.acknowledged) <= rows
    # A new replication connection meets the new certificate: the standby reconnects over TLS.
    with primary.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    wait_until(lambda: streaming(primary, standby.side), timeout=60, what="standby streaming")
    walsenders = [row for row in ssl_rows(primary) if row[0] == "walsender"]
    assert walsenders and all(ssl for _t, _u, ssl, _v in walsenders)
    wait_until(
        lambda: _count(standby) >= len(writer.acknowledged), timeout=30, what="rows on standby"
    )


def _count(instance: PgInstance) -> int:
    with instance.connect("gocd") as conn:
        row = conn.execute("SELECT count(*) FROM rotation").fetchone()
    return int(row[0]) if row else 0
