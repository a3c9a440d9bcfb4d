"""The local kubelet runs what the builders render: real Postgres from the project's entrypoint.

The objects are exactly those of ``build_children`` for an example cluster, put into kmock's API
emulator as the operator would create them; no operator runs here, the tests play it by patching.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gocd_ha_operator.api.constants import GOCD_DB_USER, OPERATOR_DB_USER
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.kube.lease import API_VERSION as LEASE_API_VERSION
from gocd_ha_operator.kube.lease import KIND as LEASE_KIND
from gocd_ha_operator.kube.lease import format_microtime
from gocd_ha_operator.local import LocalKubelet
from gocd_ha_operator.local.process import group_members
from gocd_ha_operator.rules.lease import holder_identity, primary_lease_name
from tests.support.kubelet import CLUSTER, NAMESPACE, Api, eventually
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

PG_A, PG_B = f"{CLUSTER}-pg-a", f"{CLUSTER}-pg-b"


def endpoint(kubelet: LocalKubelet, service: str) -> Endpoint:
    return kubelet.endpoint_map[f"{NAMESPACE}/{service}:5432"]


async def connect(
    kubelet: LocalKubelet, api: Api, service: str, *, gocd: bool = False
) -> psycopg.AsyncConnection[Any]:
    """As the operator role (``postgres`` db) or GoCD's user (``gocd`` db), over TCP."""
    address = endpoint(kubelet, service)
    creds = api.credentials
    return await psycopg.AsyncConnection.connect(
        **api.tls_params(service, address.host, address.port),
        user=GOCD_DB_USER if gocd else OPERATOR_DB_USER,
        password=creds.gocd_password if gocd else creds.operator_password,
        dbname="gocd" if gocd else "postgres",
        connect_timeout=3,
        autocommit=True,
    )


async def query(kubelet: LocalKubelet, api: Api, service: str, sql: str, **kw: Any) -> Any:
    async with await connect(kubelet, api, service, **kw) as conn:
        cursor = await conn.execute(sql)
        row = await cursor.fetchone() if cursor.description else None
        return None if row is None else row[0]


async def in_recovery(kubelet: LocalKubelet, api: Api, service: str) -> bool | None:
    try:
        return bool(await query(kubelet, api, service, "SELECT pg_is_in_recovery()"))
    except psycopg.OperationalError:
        return None


async def streaming_to(kubelet: LocalKubelet, api: Api, primary: str, standby_side: str) -> bool:
    try:
        state = await query(
            kubelet,
            api,
            primary,
            "SELECT state FROM pg_stat_replication "
            f"WHERE application_name = 'gocdha_{standby_side}'",
        )
    except psycopg.OperationalError:
        return False
    return bool(state == "streaming")


async def refused(kubelet: LocalKubelet, api: Api, service: str) -> bool:
    try:
        await query(kubelet, api, service, "SELECT 1")
    except psycopg.OperationalError as exc:
        return "refused" in str(exc) or "Connection refused" in str(exc)
    return False


async def rows(kubelet: LocalKubelet, api: Api, service: str) -> list[str]:
    async with await connect(kubelet, api, service, gocd=True) as conn:
        cursor = await conn.execute("SELECT note FROM notes ORDER BY note")
        return [row[0] for row in await cursor.fetchall()]


async def start_cluster(api: Api, kubelet: LocalKubelet) -> None:
    """Every child of the example cluster; the shared claim starts empty, as a new volume does
    (the first instance creates ``wal/`` on it)."""
    await api.create_children()
    try:
        await eventually(
            lambda: streaming_to(kubelet, api, PG_A, "b"), timeout=60, what="b streams from a"
        )
    except AssertionError:
        print(kubelet.pod_log(PG_A), kubelet.pod_log(PG_B), sep="\n-----\n")
        raise
    assert await in_recovery(kubelet, api, PG_A) is False
    assert await in_recovery(kubelet, api, PG_B) is True


async def test_primary_and_streaming_standby_from_the_rendered_statefulsets(
    api: Api, kubelet: LocalKubelet
) -> None:
    await start_cluster(api, kubelet)
    async with await connect(kubelet, api, PG_A, gocd=True) as conn:
        await conn.execute("CREATE TABLE notes (note text)")
        await conn.execute("INSERT INTO notes VALUES ('written on a')")
    await eventually(
        lambda: _rows_equal(kubelet, api, PG_B, ["written on a"]), timeout=20, what="row on b"
    )
    # The role Services resolve by selector like the instance Services.
    assert endpoint(kubelet, f"{CLUSTER}-pg-primary") == endpoint(kubelet, PG_A)
    assert endpoint(kubelet, f"{CLUSTER}-pg-standby") == endpoint(kubelet, PG_B)

    # Scale the standby to 0: it stops; back to 1: it restarts from its kept data dir.
    port_b = kubelet.port(PG_B)
    await api.scale("StatefulSet", PG_B, 0)
    await eventually(lambda: not kubelet.running(PG_B), timeout=30, what="b stopped")
    assert await refused(kubelet, api, PG_B)
    assert "shutting down" in kubelet.pod_log(PG_B) or "shut down" in kubelet.pod_log(PG_B)
    async with await connect(kubelet, api, PG_A, gocd=True) as conn:
        await conn.execute("INSERT INTO notes VALUES ('while b was down')")
    await api.scale("StatefulSet", PG_B, 1)
    await eventually(
        lambda: _rows_equal(kubelet, api, PG_B, ["while b was down", "written on a"]),
        timeout=30,
        what="b back with its data and caught up",
    )
    assert kubelet.port(PG_B) == port_b
    assert await in_recovery(kubelet, api, PG_B) is True
    assert kubelet.pod_log(PG_B).count("base backup done") == 1  # the data dir was kept

    # A killed primary stays down while held, whatever replicas says; resume brings it back.
    await kubelet.kill(PG_A)
    assert not kubelet.running(PG_A)
    for _ in range(10):
        await kubelet.sync()
    assert not kubelet.running(PG_A)
    assert await refused(kubelet, api, PG_A)
    await kubelet.resume(PG_A)
    await eventually(
        lambda: streaming_to(kubelet, api, PG_A, "b"), timeout=60, what="a back, b streaming"
    )
    assert await in_recovery(kubelet, api, PG_A) is False


async def _rows_equal(kubelet: LocalKubelet, api: Api, service: str, expected: list[str]) -> bool:
    try:
        return await rows(kubelet, api, service) == expected
    except psycopg.Error:
        return False


async def test_role_is_read_from_the_configmap_at_start_and_close_cleans_up(api: Api) -> None:
    """A promotion done by hand, as the operator does it: fence a, promote b, flip the role keys,
    start a again. a's pod template never changes; it rejoins as a standby because its role is
    read from the ConfigMap when its container starts."""
    kubelet = LocalKubelet(api.url, NAMESPACE, clusters=[CLUSTER], interval=0.1)
    work_dir = kubelet.work_dir
    try:
        await kubelet.start()
        await start_cluster(api, kubelet)
        await api.scale("StatefulSet", PG_A, 0)
        await eventually(lambda: not kubelet.running(PG_A), timeout=30, what="a fenced")
        # As the runner: the primary Lease goes to b before b is promoted. Without it b's guard
        # rightly stops a primary whose Lease names a (seen under load, once its first renewal
        # of a Lease it does not hold was late: the test then waited for a rejoin that could not
        # come).
        now = format_microtime(datetime.now(UTC))
        await api.patch(
            LEASE_API_VERSION,
            LEASE_KIND,
            primary_lease_name(CLUSTER),
            {"spec": {"holderIdentity": holder_identity(CLUSTER, "b"), "renewTime": now}},
        )
        assert await query(kubelet, api, PG_B, "SELECT pg_promote(wait => true)") is True
        assert await in_recovery(kubelet, api, PG_B) is False
        async with await connect(kubelet, api, PG_B, gocd=True) as conn:
            await conn.execute("CREATE TABLE notes (note text)")
            await conn.execute("INSERT INTO notes VALUES ('written on b')")

        await api.patch(
            "v1",
            "ConfigMap",
            f"{CLUSTER}-postgres",
            {"data": {"role-a": "standby", "role-b": "primary"}},
        )
        await api.scale("StatefulSet", PG_A, 1)
        await eventually(
            lambda: streaming_to(kubelet, api, PG_B, "a"), timeout=60, what="a rejoined b"
        )
        assert await in_recovery(kubelet, api, PG_A) is True
        await eventually(
            lambda: _rows_equal(kubelet, api, PG_A, ["written on b"]), timeout=20, what="row on a"
        )
        assert "rewinding this former primary" in kubelet.pod_log(PG_A)
        groups = kubelet.process_groups()
        assert len(groups) >= 3
    finally:
        await kubelet.close()
    assert all(group_members(g) == [] for g in groups)
    assert not work_dir.exists()
    # No process of any user still refers to the kubelet's files (postmasters show their -D).
    leftovers = [
        p.name for p in Path("/proc").iterdir() if p.name.isdigit() and str(work_dir) in _cmdline(p)
    ]
    assert leftovers == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
