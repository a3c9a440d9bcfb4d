"""Issue #11, defect 3: the failover gate and the reported RPO must see WAL the standby never
received.

A standby only knows what it received. Cut off from the primary, it replays everything it has and
reports received - replayed = 0, however much the primary wrote since. The operator used that as
the lag when the primary had no ``pg_stat_replication`` row for it (the standby does not stream,
or the primary is dead): status said ``lagBytes: 0``, ``FailoverPossible=True``, an automatic
failover promoted a standby that had missed megabytes and recorded ``rpoBytes: 0``.

Here, on real Postgres through the local stack: the standby stops receiving, the primary writes
~8 MiB (not archived yet), then dies. What a user checks: status shows the lag, the automatic
failover does not happen (``maxLagBytes`` is 1 MiB), and a forced failover reports an RPO estimate
of what was lost — not 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE_FORCE
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.controller.observe import compute_status, observe_cluster
from gocd_ha_operator.local.stack import LocalStack, local_stack
from gocd_ha_operator.local.workload import streaming_from
from gocd_ha_operator.rules.promotion import topology_of
from tests.faults.truth_support import NAME, body, condition, sql
from tests.support.pg import pg_cluster, unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

MAX_LAG = 1024 * 1024
INTERVAL = 0.5


@pytest.fixture
async def stack() -> AsyncIterator[LocalStack]:
    async with local_stack([NAME], namespace="faults", observe_interval=INTERVAL) as running:
        yield running


def lag_at_least(minimum: int):  # type: ignore[no-untyped-def]
    def check(status: dict[str, Any]) -> dict[str, Any] | None:
        lag = status.get("replication", {}).get("lagBytes")
        return status if lag is not None and lag >= minimum else None

    return check


async def test_a_standby_that_missed_wal_is_not_failed_over_to_and_rpo_is_not_zero(
    stack: LocalStack,
) -> None:
    await stack.apply(
        body(mode="Automatic", primaryUnavailableSeconds=10, maxLagBytes=MAX_LAG, cooldownSeconds=0)
    )
    await stack.wait_for(lambda s: streaming_from("a", s), NAME, timeout=120, what="b streaming")
    await sql(stack, "a", "CREATE TABLE filler (payload text)")

    # The standby stops receiving (a network partition between the two instances): its
    # walreceiver now points nowhere; it stays in recovery, replaying only the WAL archive.
    await sql(stack, "b", "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'")
    await sql(stack, "b", "SELECT pg_reload_conf()")
    await stack.wait_for(
        lambda s: s.get("replication", {}).get("state") not in (None, "Streaming"),
        NAME,
        timeout=30,
        what="the standby to stop streaming",
    )
    # A fresh segment, so that none of what follows reaches the archive before the primary dies.
    await sql(stack, "a", "SELECT pg_switch_wal()")
    before = await sql(stack, "a", "SELECT pg_current_wal_lsn()")
    await sql(
        stack,
        "a",
        "INSERT INTO filler SELECT repeat(md5(i::text), 32) FROM generate_series(1, 8000) i",
    )
    written = int(await sql(stack, "a", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", before))
    assert written > 8 * MAX_LAG // 2, written

    # Status must show what the standby lacks, measured from the primary's side.
    status = await stack.wait_for(
        lag_at_least(written), NAME, timeout=15, what=f"lagBytes >= {written} in status"
    )
    assert condition(status, "FailoverPossible")["status"] == "False"

    await stack.kubelet.kill(f"{NAME}-pg-a")  # the primary dies with WAL the standby never got
    await stack.wait_for(
        lambda s: condition(s, "PrimaryAvailable").get("status") == "False",
        NAME,
        timeout=30,
        what="PrimaryAvailable=False",
    )
    await asyncio.sleep(10 + 5 * INTERVAL)  # primaryUnavailableSeconds, and then some
    status = await stack.status(NAME)
    assert status.get("promotion", {}).get("trigger") != "Automatic", status.get("promotion")
    assert status["primary"] == "a"
    possible = condition(status, "FailoverPossible")
    assert (possible["status"], possible["reason"]) == ("False", "LagTooHigh"), possible
    assert status["replication"]["lagBytes"] >= written
    assert status["replication"]["lastPrimaryLagBytes"] >= written
    assert status["replication"]["lastPrimaryLagMeasuredAt"]

    # A person forces the failover: it happens, and its RPO says how much may be lost.
    await stack.annotate(NAME, ANNOTATION_PROMOTE_FORCE, "accept-loss")
    promotion = await stack.wait_for(
        lambda s: (
            s.get("promotion", {}).get("token") == "accept-loss"
            and s["promotion"].get("result") not in (None, "InProgress")
            and s["promotion"]
        ),
        NAME,
        timeout=90,
        what="the forced failover",
    )
    assert promotion["result"] == "Succeeded", promotion
    assert promotion["type"] == "Failover"
    assert promotion["rpoBytes"] >= written, promotion
    # ...and the loss is real: the new primary does not have the rows the standby never got.
    assert await sql(stack, "b", "SELECT count(*) FROM filler") == 0


def _model(status: dict[str, Any]) -> GoCDHACluster:
    return parse_cluster(
        {
            "apiVersion": "gocdha.io/v1alpha1",
            "kind": "GoCDHACluster",
            "metadata": {"name": NAME, "namespace": "faults", "generation": 1},
            "spec": {
                "sharedStorage": {"size": "1Gi", "storageClassName": "nfs"},
                "failover": {"maxLagBytes": MAX_LAG, "primaryUnavailableSeconds": 60},
            },
            "status": status,
        }
    )


async def test_without_a_recent_primary_side_measurement_the_lag_is_unknown() -> None:
    """The operator's own observation on real Postgres, with its clock moved on: once the dead
    primary's last measurement is too old to stand for the lag, status says the lag is unknown
    and no failover is possible (on main: the standby's own 0, ``StandbyReady``)."""
    with pg_cluster(tls_namespace="faults") as pg:
        pg.start_pair("a")
        credentials = ClusterCredentials(
            superuser_password=pg.passwords.superuser,
            replication_password=pg.passwords.replication,
            gocd_password=pg.passwords.gocd,
            operator_password=pg.passwords.operator,
            bc_token="gocdha = token\n",
        )
        overrides = {
            f"faults/{NAME}-pg-a:5432": pg.a.endpoint,
            f"faults/{NAME}-pg-b:5432": pg.b.endpoint,
        }

        async def observe(cluster: GoCDHACluster, now: datetime) -> GoCDHACluster:
            topology = topology_of(cluster)
            observation = await observe_cluster(
                cluster,
                credentials,
                topology,
                now=now,
                operator_image="x",
                overrides=overrides,
                ca_pem=pg.ca_file.read_bytes(),
            )
            status, _ = compute_status(cluster, observation, topology, now=now)
            return cluster.model_copy(update={"status": status})

        start = datetime.now(UTC)
        measured = await observe(_model({}), start)
        assert measured.status.replication.state == "Streaming"
        pg.a.kill()  # the primary is gone; the standby streamed a moment ago
        soon = await observe(measured, start + timedelta(seconds=30))
        possible = next(c for c in soon.status.conditions if c.type == "FailoverPossible")
        assert possible.reason == "StandbyReady", possible
        late = await observe(soon, start + timedelta(seconds=200))
        possible = next(c for c in late.status.conditions if c.type == "FailoverPossible")
        assert (possible.status, possible.reason) == ("False", "LagUnknown"), possible
        assert late.status.replication.lag_bytes is None
