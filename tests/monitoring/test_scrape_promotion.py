"""A real Prometheus scrapes the operator on the local stack (real Postgres) while
``kubectl gocdha promote --wait`` runs a switchover; Prometheus's HTTP API then shows the lag the
status shows, the role change and one successful promotion.

One test for both (the scrape and the plugin's ``--wait``) because each local-stack run starts
two Postgres servers and a promotion: on a shared two-core machine that is the expensive part.

With ``GOCDHA_CAPTURE_DIR`` set, the plugin's ``status`` of the healthy pair and of the degraded
pair (standby killed) are written there: docs/kubectl-plugin.md quotes them.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import pytest

from gocd_ha_operator.local.stack import LocalStack, local_stack
from gocd_ha_operator.local.workload import streaming_from
from tests.support.pg import unavailable_reason
from tests.support.plugin import Result, invoke, write_kubeconfig
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus
from tests.support.promotion import promotion_cluster

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NAME: Final = "ci"
NAMESPACE: Final = "build"
MAX_LAG_BYTES: Final = 33_554_432


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gocdha-prom-") as name:
        yield Path(name)


@pytest.fixture
async def stack() -> AsyncIterator[LocalStack]:
    address = ("127.0.0.1", free_port())
    async with local_stack(
        [NAME], namespace=NAMESPACE, observe_interval=0.5, metrics_address=address
    ) as running:
        yield running


async def plugin(kubeconfig: Path, *argv: str) -> Result:
    return await asyncio.to_thread(invoke, ["--kubeconfig", str(kubeconfig), *argv])


def capture(name: str, result: Result) -> None:
    directory = os.environ.get("GOCDHA_CAPTURE_DIR")
    if directory:
        Path(directory, name).write_text(result.out + "\n")


async def test_prometheus_sees_lag_role_change_and_promotion(
    stack: LocalStack, workdir: Path
) -> None:
    assert stack.metrics_url is not None
    target = stack.metrics_url.removeprefix("http://").removesuffix("/metrics")
    prometheus = Prometheus(target, workdir)
    try:
        await prometheus.ready()
        await stack.apply(promotion_cluster(maxLagBytes=MAX_LAG_BYTES))
        await stack.wait_for(
            lambda s: streaming_from("a", s), NAME, timeout=120, what="a primary, b streaming"
        )
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", stack.url)
        c = f'namespace="{NAMESPACE}", cluster="{NAME}"'
        await prometheus.eventually(f'gocdha_side_role{{{c}, side="a", role="primary"}}', 1)
        await prometheus.eventually(f"gocdha_failover_max_lag_bytes{{{c}}}", MAX_LAG_BYTES)
        await prometheus.eventually('up{job="gocd-ha-operator"}', 1)
        healthy = await plugin(kubeconfig, "-n", NAMESPACE, "status", NAME)
        assert healthy.code == 0 and "possible (StandbyReady)" in healthy.out, healthy
        capture("status-healthy.txt", healthy)

        promoted = await plugin(
            kubeconfig, "-n", NAMESPACE, "promote", NAME, "--wait", "--timeout", "120"
        )
        assert promoted.code == 0, promoted
        capture("promote-wait.txt", promoted)
        for step in ("Fencing", "CatchingUp", "StoppingOldPrimary", "Promoting", "Done"):
            assert f"step {step}" in promoted.out, promoted.out
        assert "side b is primary; RPO 0 bytes" in promoted.out
        assert "new primary writable after" in promoted.out

        await prometheus.eventually(
            f'gocdha_promotions_total{{{c}, type="Switchover", result="Succeeded"}}', 1
        )
        await prometheus.eventually(
            f'gocdha_promotions_total{{{c}, type="Switchover", result="Failed"}}', 0
        )
        await prometheus.eventually(
            f'gocdha_promotion_duration_seconds_count{{{c}, type="Switchover"}}', 1
        )
        await prometheus.eventually(
            f'gocdha_promotion_request_to_writable_seconds_count{{{c}, type="Switchover"}}', 1
        )
        await prometheus.eventually(
            f'gocdha_promotion_step_duration_seconds_count{{{c}, step="Promoting"}}', 1
        )
        # The role change: side b is primary now, and was standby within the last minutes.
        await prometheus.eventually(f'gocdha_side_role{{{c}, side="b", role="primary"}}', 1)
        await prometheus.eventually(
            f'max_over_time(gocdha_side_role{{{c}, side="b", role="standby"}}[10m])', 1
        )
        await prometheus.eventually(f'gocdha_postgres_timeline{{{c}, side="b"}}', 2)
        # Lag: the scraped value is the value in status (one observation feeds both).
        await stack.wait_for(lambda s: streaming_from("b", s), NAME, timeout=120, what="rejoin")
        await prometheus.eventually(f'gocdha_replication_streaming{{{c}, side="a"}}', 1)
        matched = False
        for _ in range(40):
            status = await stack.status(NAME)
            lag = status["replication"].get("lagBytes")
            scraped = await prometheus.value(f'gocdha_replication_lag_bytes{{{c}, side="a"}}')
            if lag is not None and scraped == lag:
                matched = True
                break
            await asyncio.sleep(0.5)
        assert matched, f"status lagBytes {lag} never equalled the scraped {scraped}"
        # Prometheus evaluated the shipped rules against the live series without errors.
        rules = await prometheus.query('ALERTS{alertname="PromotionFailed"}')
        assert rules == []

        await stack.kubelet.kill(f"{NAME}-pg-a")  # the new standby's node dies
        await stack.wait_for(
            lambda s: any(
                c["type"] == "FailoverPossible" and c["status"] == "False"
                for c in s.get("conditions", [])
            ),
            NAME,
            timeout=60,
            what="FailoverPossible=False",
        )
        degraded = await plugin(kubeconfig, "-n", NAMESPACE, "status", NAME)
        assert "NOT possible (StandbyUnreachable)" in degraded.out, degraded.out
        capture("status-degraded.txt", degraded)
        whynot = await plugin(kubeconfig, "-n", NAMESPACE, "why-not", NAME)
        assert "the standby (side a) cannot be reached" in whynot.out, whynot.out
        capture("why-not-degraded.txt", whynot)
        await prometheus.eventually(f"gocdha_failover_possible{{{c}}}", 0)
        await prometheus.eventually(
            f'gocdha_failover_possible_info{{{c}, reason="StandbyUnreachable"}}', 1
        )
    finally:
        prometheus.stop()
