"""TLS by default end to end (docs/architecture.md §17): the operator makes the CA and server
certificate, the Postgres pods serve it, and every TCP client seen on the primary — the standby's
walsender, the operator's observation, the stand-in GoCD (connecting as its db.properties says)
and a writer that verifies as GoCD does — is encrypted; and what the instance serves is the
certificate of the operator's ``<name>-server-tls`` Secret. And a rotation end to end: a
cert-manager-style Secret replaced under a writer reaches both instances through the operator's
copy, the kubelet's refresh of the mounted Secret and the guard's reload, with no failed commit
and no restart; a broken replacement reaches neither. The operator's own renewal likewise, under a
writer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509

from gocd_ha_operator.kube import certificates
from gocd_ha_operator.local.stack import LocalStack, local_stack
from gocd_ha_operator.local.workload import RowWriter
from tests.support import usercerts
from tests.support.localstack import (
    BODY,
    NAME,
    apply_replicating,
    postmaster_starts,
    rows_on_side,
    synced_on,
)
from tests.support.pg import served_certificate, unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NAMESPACE = "build"


SSL_SQL = (
    "SELECT a.application_name, a.backend_type, s.ssl FROM pg_stat_activity a "
    "JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL"  # TCP only
)


async def test_every_tcp_client_of_the_primary_uses_tls() -> None:
    async with local_stack([NAME], namespace=NAMESPACE, observe_interval=0.5) as stack:
        await apply_replicating(stack, BODY)
        seen: dict[str, bool] = {}
        deadline = time.monotonic() + 60
        wanted = {"gocdha_b", "gocd-ha-operator", "gocd-standin", "gocd-writer"}
        info = await stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
        assert info is not None and info["sslmode"] == "verify-full"
        async with await psycopg.AsyncConnection.connect(
            **info, application_name="gocd-writer", autocommit=True
        ):
            while not wanted <= set(seen) and time.monotonic() < deadline:
                for application, _kind, ssl in await rows_on_side(stack, "a", SSL_SQL):
                    seen[str(application)] = seen.get(str(application), True) and bool(ssl)
                await asyncio.sleep(0.05)
        assert wanted <= set(seen), f"not seen on the primary: {wanted - set(seen)}; {seen}"
        assert all(seen.values()), seen  # every TCP backend seen was encrypted
        log = stack.kubelet.pod_log(f"{NAME}-gocd-a")
        assert "connected to its database ci-pg-a.build.svc (TLS: TLSv1." in log

        # The instance serves the operator's certificate, verified with the operator's CA.
        secret = await stack.request(
            "GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{NAME}-server-tls"
        )
        old = base64.b64decode(secret["data"]["tls.crt"])
        endpoint = stack.kubelet.endpoint_map[f"{NAMESPACE}/{NAME}-pg-a:5432"]
        ca_path = stack.kubelet.work_dir / f"{NAME}-ca.crt"
        served = served_certificate(endpoint.port, f"{NAME}-pg-a.{NAMESPACE}.svc", ca_path)
        assert x509.load_der_x509_certificate(served).serial_number == (
            certificates.serial_number(old)
        )


# --- rotation end to end: cert-manager replaces the Secret under a writer ---------------------

USER_SECRET = "ci-postgres-cert"
#: Failed commits or connections the writer may see while the certificate is replaced: none. Its
#: session was opened before and a reload keeps sessions; a new TLS handshake gets the new one.
MAX_WRITER_FAILURES = 0


def rotation_stack() -> contextlib.AbstractAsyncContextManager[LocalStack]:
    """The local stack of the rotation tests: the kubelet refreshes mounted Secrets every second
    and the operator checks its certificates every second (both much slower by default)."""
    return local_stack(
        [NAME],
        namespace=NAMESPACE,
        observe_interval=0.5,
        volume_refresh_interval=1.0,
        certificate_check_interval=dt.timedelta(seconds=1),
    )


async def acknowledged(writer: RowWriter, rows: int) -> None:
    """Wait until ``writer`` has had ``rows`` commits acknowledged (bounded by the test timeout)."""
    while len(writer.commits) < rows:
        await asyncio.sleep(0.05)


def served_serial(stack: LocalStack, side: str, ca_path: Path) -> int | None:
    """The serial of the certificate ``side``'s Postgres serves (verified as a client would),
    or ``None`` while it cannot be verified."""
    endpoint = stack.kubelet.endpoint_map[f"{NAMESPACE}/{NAME}-pg-{side}:5432"]
    try:
        der = served_certificate(endpoint.port, f"{NAME}-pg-{side}.{NAMESPACE}.svc", ca_path)
    except (OSError, AssertionError):
        return None
    return int(x509.load_der_x509_certificate(der).serial_number)


def certificate_ready(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == "CertificateReady"), None)


async def test_a_cert_manager_rotation_reaches_both_instances_under_a_writer(
    tmp_path: Path,
) -> None:
    now = dt.datetime.now(dt.UTC)
    issuer = certificates.generate_ca("cert-manager CA", now=now)
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(issuer.cert_pem)
    names = certificates.postgres_dns_names(NAME, NAMESPACE)
    first = usercerts.issue(issuer, names, now=now)
    body = copy.deepcopy(BODY)
    body["spec"]["tls"] = {"serverCertificateSecret": {"name": USER_SECRET}}
    secrets_path = f"/api/v1/namespaces/{NAMESPACE}/secrets"
    async with rotation_stack() as stack:
        await stack.request(
            "POST", secrets_path, usercerts.cert_manager_secret(USER_SECRET, NAMESPACE, first)
        )
        await apply_replicating(stack, body)
        await stack.wait_for(
            lambda s: (c := certificate_ready(s)) and c["status"] == "True",
            NAME,
            timeout=30,
            what="CertificateReady",
        )
        first_serial = certificates.serial_number(first.cert_pem)
        assert {served_serial(stack, side, ca_path) for side in "ab"} == {first_serial}
        # Cold mode: the operator still reads the sync agent over verified HTTPS (its certificate
        # from the operator's own CA, Postgres' from the user's).
        await stack.wait_for(
            synced_on(stack, "a"), NAME, timeout=120, what="ConfigSynced over HTTPS on a"
        )
        started = await postmaster_starts(stack)
        writer = RowWriter(stack, NAME)
        await writer.prepare()
        writer.start()
        try:
            await acknowledged(writer, 50)
            # cert-manager renews: a new key and certificate written into the same Secret.
            second = usercerts.issue(issuer, names, now=dt.datetime.now(dt.UTC))
            second_serial = certificates.serial_number(second.cert_pem)
            replaced_at = time.monotonic()
            await stack.request(
                "PATCH", f"{secrets_path}/{USER_SECRET}", {"data": second.secret_data()}
            )
            reached: dict[str, float] = {}
            deadline = time.monotonic() + 60
            while len(reached) < 2 and time.monotonic() < deadline:
                for side in "ab":
                    if side not in reached and served_serial(stack, side, ca_path) == (
                        second_serial
                    ):
                        reached[side] = time.monotonic() - replaced_at
                await asyncio.sleep(0.1)
            assert sorted(reached) == ["a", "b"], f"the new certificate reached only {reached}"
            before = len(writer.commits)

            # A broken renewal (the role Services' names missing) reaches nothing.
            broken = usercerts.issue(issuer, names[:4], now=dt.datetime.now(dt.UTC))
            await stack.request(
                "PATCH", f"{secrets_path}/{USER_SECRET}", {"data": broken.secret_data()}
            )
            condition = await stack.wait_for(
                lambda s: (c := certificate_ready(s)) and c["status"] == "False" and c,
                NAME,
                timeout=30,
                what="CertificateReady=False",
            )
            await asyncio.sleep(3)  # several kubelet refreshes and guard passes
            assert {served_serial(stack, side, ca_path) for side in "ab"} == {second_serial}
            await acknowledged(writer, before + 50)
        finally:
            await writer.stop()
        print(
            f"\nnew certificate served {reached['a']:.2f}s (a) and {reached['b']:.2f}s (b) after "
            f"the Secret changed; {len(writer.commits)} rows acknowledged, "
            f"{writer.failures} writer failures"
        )
        assert writer.failures <= MAX_WRITER_FAILURES
        assert writer.acknowledged <= await writer.rows_on(f"{NAME}-pg-primary")
        assert await postmaster_starts(stack) == started  # reloaded, not restarted
        # The standby's replication connection is still encrypted, and new sessions get the
        # new certificate (pg_stat_ssl of a fresh connection, as the server reports it).
        wal = await rows_on_side(
            stack,
            "a",
            "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
        )
        assert wal == [(True,)]
        assert "ci-pg-primary.build.svc" in condition["message"]
        assert "the instances keep the last valid certificate" in condition["message"]


async def test_the_operator_renews_its_certificate_under_a_writer_and_postgres_reloads_it(
    tmp_path: Path,
) -> None:
    """The operator's own renewal, end to end. To make a renewal due without waiting 60 days, the
    test puts a short-lived certificate signed by the cluster CA into ``ci-server-tls`` (90 s,
    of which 70 have passed, as if issued earlier): the operator's next check finds two thirds
    of its lifetime gone and issues a 90-day one, which the kubelet's refresh and the guards
    bring to both instances."""
    async with rotation_stack() as stack:
        await apply_replicating(stack, BODY)
        secrets_path = f"/api/v1/namespaces/{NAMESPACE}/secrets"
        ca_secret = await stack.request("GET", f"{secrets_path}/{NAME}-ca")
        ca = certificates.CertificateAuthority.from_secret_data(ca_secret["data"])
        assert ca is not None
        ca_path = tmp_path / "ca.crt"
        ca_path.write_bytes(ca.cert_pem)
        original = await stack.request("GET", f"{secrets_path}/{NAME}-server-tls")
        original_serial = certificates.serial_number(base64.b64decode(original["data"]["tls.crt"]))
        assert {served_serial(stack, side, ca_path) for side in "ab"} == {original_serial}
        started = await postmaster_starts(stack)
        writer = RowWriter(stack, NAME)
        await writer.prepare()
        writer.start()
        try:
            await acknowledged(writer, 50)
            short = certificates.issue_server_certificate(
                ca,
                certificates.postgres_dns_names(NAME, NAMESPACE),
                now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=70),
                validity=dt.timedelta(seconds=90),
            )
            short_serial = certificates.serial_number(short.cert_pem)
            planted_at = time.monotonic()
            await stack.request(
                "PATCH", f"{secrets_path}/{NAME}-server-tls", {"data": short.secret_data()}
            )

            async def renewed() -> int | None:
                secret = await stack.request("GET", f"{secrets_path}/{NAME}-server-tls")
                serial = certificates.serial_number(base64.b64decode(secret["data"]["tls.crt"]))
                return serial if serial not in (original_serial, short_serial) else None

            deadline = time.monotonic() + 60
            renewal: int | None = None
            reached: dict[str, float] = {}
            while len(reached) < 2 and time.monotonic() < deadline:
                renewal = renewal or await renewed()
                for side in "ab":
                    pending = renewal and side not in reached
                    if pending and served_serial(stack, side, ca_path) == renewal:
                        reached[side] = time.monotonic() - planted_at
                await asyncio.sleep(0.1)
            assert renewal is not None, "the operator did not renew the certificate"
            assert sorted(reached) == ["a", "b"], f"the renewal reached only {reached}"
            before = len(writer.commits)
            await acknowledged(writer, before + 50)
        finally:
            await writer.stop()
        secret = await stack.request("GET", f"{secrets_path}/{NAME}-server-tls")
        issued = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
        lifetime = issued.not_valid_after_utc - issued.not_valid_before_utc
        assert lifetime >= certificates.SERVER_CERT_VALIDITY  # the operator's, not the test's
        print(
            f"\nrenewed certificate served {reached['a']:.2f}s (a) and {reached['b']:.2f}s (b) "
            f"after the short-lived one was planted; {len(writer.commits)} rows acknowledged, "
            f"{writer.failures} writer failures"
        )
        assert writer.failures <= MAX_WRITER_FAILURES
        assert writer.acknowledged <= await writer.rows_on(f"{NAME}-pg-primary")
        assert await postmaster_starts(stack) == started  # reloaded, not restarted
