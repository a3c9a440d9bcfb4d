"""The metrics wiring of the real handlers: status feeds the gauges, a reconcile is timed, a
deleted cluster's series go (the supervisor daemon stops with the resource)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from gocd_ha_operator.controller.handlers import OperatorConfig
from gocd_ha_operator.local.emulator import OperatorThread, emulator_settings
from tests.support.emulator import NAMESPACE, Harness

pytestmark = pytest.mark.emulator


async def test_series_follow_the_cluster_and_go_with_it(harness: Harness) -> None:
    config = OperatorConfig(
        operator_image=harness.config.operator_image,
        observe_interval=0.3,
        kube_factory=harness.config.kube_factory,
        endpoints=harness.config.endpoints,
        connection=harness.config.connection,
        tune_settings=emulator_settings,
        retry_delay=1.0,
    )
    operator = OperatorThread(config)
    await operator.start()
    try:
        await harness.create_cluster()

        def exposition() -> str:
            return generate_latest(config.metrics.registry).decode()

        # Nothing is reachable in this harness: the status (and so the metrics) say so.
        labels = f'cluster="ci",namespace="{NAMESPACE}",side="a"'
        await harness.eventually(
            lambda: f"gocdha_postgres_up{{{labels}}} 0.0" in exposition(), timeout=30
        )
        # The reconcile runs beside the observation loop: its duration appears when it ends.
        reconciled = (
            f'gocdha_reconcile_duration_seconds_count{{cluster="ci",namespace="{NAMESPACE}"}}'
        )
        await harness.eventually(lambda: reconciled in exposition(), timeout=30)
        # The first observation follows the first reconcile (it creates what is observed); the
        # gauge shows the reason status gives (nothing answers: StandbyUnreachable, or LeaseHeld
        # while the new primary Lease is valid).

        def failover_reason_exported() -> bool:
            status = harness.cluster().get("status") or {}
            reason = next(
                (
                    c["reason"]
                    for c in status.get("conditions", [])
                    if c["type"] == "FailoverPossible"
                ),
                "Initializing",
            )
            series = f'cluster="ci",namespace="build",reason="{reason}"'
            return reason in ("StandbyUnreachable", "LeaseHeld") and (
                f"gocdha_failover_possible_info{{{series}}} 1.0" in exposition()
            )

        await harness.eventually(failover_reason_exported, timeout=30)
        await harness.request(
            "DELETE", f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters/ci"
        )
        await harness.eventually(
            lambda: 'cluster="ci"' not in exposition(),
            timeout=30,
            message="the deleted cluster's series are removed",
        )
    finally:
        await operator.stop()
