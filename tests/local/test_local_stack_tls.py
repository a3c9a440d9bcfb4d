"""TLS by default end to end (docs/architecture.md §17): the operator makes the CA and server
certificate, the Postgres pods serve it, and every TCP client seen on the primary — the standby's
walsender, the operator's observation, the stand-in GoCD (connecting as its db.properties says)
and a writer that verifies as GoCD does — is encrypted; and what the instance serves is the
certificate of the operator's ``<name>-server-tls`` Secret. (Rotation under a writer is shown on
real Postgres in ``tests/postgres/test_tls.py``: the local kubelet refreshes a Secret volume only
when a container starts.)"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import psycopg
import pytest
from cryptography import x509

from gocd_ha_operator.kube import certificates
from gocd_ha_operator.local.stack import LocalStack, local_stack
from gocd_ha_operator.local.workload import streaming_from
from tests.support.pg import served_certificate, unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NAME = "ci"
NAMESPACE = "build"
BODY: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": NAME},
    "spec": {
        "gocd": {"image": "gocd/gocd-server:v26.1.0"},
        "postgres": {"image": "postgres:15"},
        "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
    },
}


async def superuser_rows(stack: LocalStack, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run as superuser over the primary's (side a's) unix socket."""
    socket_dir = stack.kubelet.work_dir / "pods" / f"{NAME}-pg-a-0" / "volumes" / "run"
    password = await stack.secret_value(f"{NAME}-postgres-superuser", "password")
    async with await psycopg.AsyncConnection.connect(
        host=str(socket_dir),
        port=stack.kubelet.port(f"{NAME}-pg-a"),
        user="postgres",
        password=password,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        cursor = await conn.execute(sql)
        return list(await cursor.fetchall())


SSL_SQL = (
    "SELECT a.application_name, a.backend_type, s.ssl FROM pg_stat_activity a "
    "JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL"  # TCP only
)


async def test_every_tcp_client_of_the_primary_uses_tls() -> None:
    async with local_stack([NAME], namespace=NAMESPACE, observe_interval=0.5) as stack:
        await stack.apply(BODY)
        await stack.wait_for(
            lambda s: streaming_from("a", s), NAME, timeout=180, what="b streaming from a"
        )
        seen: dict[str, bool] = {}
        deadline = time.monotonic() + 60
        wanted = {"gocdha_b", "gocd-ha-operator", "gocd-standin", "gocd-writer"}
        info = await stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
        assert info is not None and info["sslmode"] == "verify-full"
        async with await psycopg.AsyncConnection.connect(
            **info, application_name="gocd-writer", autocommit=True
        ):
            while not wanted <= set(seen) and time.monotonic() < deadline:
                for application, _kind, ssl in await superuser_rows(stack, SSL_SQL):
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
