"""The operator's observation against real Postgres on loopback: roles, lag, archiver, and the
conditions that flip when an instance stops. The instances are started by the project's own
entrypoint (tests/support/pg.py); the GoCD server is the stand-in of tests/support/standin_gocd.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.controller.observe import ClusterObservation, compute_status, observe_cluster
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.rules.topology import Topology
from tests.support.clusters import Replace, cluster_body
from tests.support.pg import PgCluster, pg_cluster, unavailable_reason, wait_until
from tests.support.standin_gocd import StandinGoCD

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NAMESPACE = "build"


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    with pg_cluster(tls_namespace=NAMESPACE) as cluster:
        cluster.start_pair("a")
        yield cluster


def cluster_model(status: dict[str, Any] | None = None) -> GoCDHACluster:
    return parse_cluster(
        cluster_body(
            name="ci",
            namespace=NAMESPACE,
            metadata={"generation": 3},
            spec=Replace(
                {
                    "sharedStorage": {"size": "1Gi", "storageClassName": "nfs"},
                    "failover": {"maxLagBytes": 1024 * 1024},
                }
            ),
            status=status or {},
        )
    )


def credentials(pg: PgCluster) -> ClusterCredentials:
    return ClusterCredentials(
        superuser_password=pg.passwords.superuser,
        replication_password=pg.passwords.replication,
        gocd_password=pg.passwords.gocd,
        operator_password=pg.passwords.operator,
        bc_token="gocdha = token-value\n",
    )


def endpoints(pg: PgCluster, gocd: StandinGoCD) -> dict[str, Endpoint]:
    host, port = gocd.base_url.removeprefix("http://").split(":")
    return {
        f"{NAMESPACE}/ci-pg-a:5432": pg.a.endpoint,
        f"{NAMESPACE}/ci-pg-b:5432": pg.b.endpoint,
        f"{NAMESPACE}/ci-gocd-a:8153": Endpoint(host, int(port)),
    }


async def observe(pg: PgCluster, gocd: StandinGoCD, cluster: GoCDHACluster) -> ClusterObservation:
    return await observe_cluster(
        cluster,
        credentials(pg),
        Topology(primary="a"),
        now=datetime.now(UTC),
        operator_image="unused",
        overrides=endpoints(pg, gocd),
        ca_pem=pg.ca_file.read_bytes(),
    )


def condition(status: Any, type_: str) -> Any:
    return next(c for c in status.conditions if c.type == type_)


async def test_status_shows_true_roles_lag_and_archiver(pg: PgCluster) -> None:
    pg.a.query("CREATE TABLE builds (id int)")
    pg.a.query("INSERT INTO builds SELECT generate_series(1, 1000)")
    segment = pg.a.query("SELECT pg_walfile_name(pg_switch_wal())")
    wait_until(
        lambda: pg.a.query("SELECT last_archived_wal FROM pg_stat_archiver") == segment,
        timeout=30,
        what=f"segment {segment} archived",
    )
    async with StandinGoCD(token=None) as gocd:
        cluster = cluster_model()
        observation = await observe(pg, gocd, cluster)
        status, transitions = compute_status(
            cluster, observation, Topology(primary="a"), now=datetime.now(UTC)
        )
    assert status.sides.a is not None and status.sides.b is not None
    assert status.sides.a.postgres.in_recovery is False
    assert status.sides.b.postgres.in_recovery is True
    assert status.sides.a.postgres.timeline == 1
    assert status.replication.state == "Streaming"
    assert status.replication.lag_bytes is not None and status.replication.lag_bytes < 1024 * 1024
    assert status.replication.slot_active is True
    assert status.replication.last_archived_wal == segment
    assert segment in pg.archived_files()
    assert status.replication.archive_failures == 0
    assert condition(status, "PrimaryAvailable").status == "True"
    assert condition(status, "StandbyReplicating").status == "True"
    assert condition(status, "FailoverPossible").status == "True"
    assert condition(status, "Ready").status == "True"
    assert all(c.observed_generation == 3 for c in status.conditions)
    assert {t.type for t in transitions} >= {"Ready", "PrimaryAvailable", "StandbyReplicating"}


async def test_lag_in_status_follows_a_paused_standby(pg: PgCluster) -> None:
    pg.a.query("CREATE TABLE filler (payload text)")
    wait_until(lambda: pg.b.query("SELECT to_regclass('filler')"), timeout=30, what="replayed")
    pg.b.query("SELECT pg_wal_replay_pause()")
    before = pg.a.query("SELECT pg_current_wal_lsn()")
    pg.a.query("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
    written = pg.a.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", before)
    async with StandinGoCD(token=None) as gocd:
        cluster = cluster_model()
        # The standby receives but does not replay: the lag is the WAL written since the pause.
        lag = await asyncio.to_thread(
            wait_until,
            lambda: (
                (
                    s := compute_status(
                        cluster,
                        asyncio.run(observe(pg, gocd, cluster)),
                        Topology("a"),
                        now=datetime.now(UTC),
                    )[0]
                ).replication.lag_bytes
                is not None
                and s.replication.lag_bytes >= written
                and s
            ),
            timeout=30,
            what="the lag to show the paused replay",
        )
    assert written <= lag.replication.lag_bytes <= written + 256 * 1024
    assert condition(lag, "FailoverPossible").status == "False"
    assert condition(lag, "FailoverPossible").reason == "LagTooHigh"
    pg.b.query("SELECT pg_wal_replay_resume()")


async def test_stopping_the_standby_flips_standby_replicating(pg: PgCluster) -> None:
    async with StandinGoCD(token=None) as gocd:
        cluster = cluster_model()
        healthy, _ = compute_status(
            cluster, await observe(pg, gocd, cluster), Topology("a"), now=datetime.now(UTC)
        )
        assert condition(healthy, "StandbyReplicating").status == "True"
        pg.b.stop()
        previous = cluster_model(healthy.to_api())
        status, transitions = compute_status(
            previous, await observe(pg, gocd, previous), Topology("a"), now=datetime.now(UTC)
        )
    replicating = condition(status, "StandbyReplicating")
    assert (replicating.status, replicating.reason) == ("False", "StandbyUnreachable")
    assert condition(status, "Degraded").status == "True"
    assert condition(status, "Ready").status == "False"
    assert condition(status, "PrimaryAvailable").status == "True"
    assert status.replication.state == "Disconnected"
    flipped = {t.type: (t.old_status, t.new.status) for t in transitions}
    assert flipped["StandbyReplicating"] == ("True", "False")
    assert "PrimaryAvailable" not in flipped


async def test_stopping_the_primary_flips_primary_available(pg: PgCluster) -> None:
    async with StandinGoCD(token=None) as gocd:
        cluster = cluster_model()
        healthy, _ = compute_status(
            cluster, await observe(pg, gocd, cluster), Topology("a"), now=datetime.now(UTC)
        )
        pg.a.kill()
        previous = cluster_model(healthy.to_api())
        started = asyncio.get_running_loop().time()
        observation = await observe(pg, gocd, previous)
        took = asyncio.get_running_loop().time() - started
        status, transitions = compute_status(
            previous, observation, Topology("a"), now=datetime.now(UTC)
        )
    available = condition(status, "PrimaryAvailable")
    assert (available.status, available.reason) == ("False", "PrimaryUnreachable")
    assert status.sides.a is not None and status.sides.a.postgres.reachable is False
    assert status.sides.b is not None and status.sides.b.postgres.in_recovery is True
    assert condition(status, "Ready").reason == "PrimaryUnavailable"
    assert {t.type for t in transitions} >= {"PrimaryAvailable", "Ready"}
    assert took < 10, "an unreachable instance must not stall the observation"
