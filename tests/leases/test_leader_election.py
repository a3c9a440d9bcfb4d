"""Two ``gocd-ha-operator run`` processes, one Lease: only the holder runs handlers; killing it lets
the other take over within the Lease duration; a leader cut from the API exits before its Lease
can be taken. Real processes, logged in through an ordinary kubeconfig."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.controller.config import ClusterRef, ClusterState, OperatorConfig
from gocd_ha_operator.controller.leader import (
    EXIT_LOST_LEADERSHIP,
    LeaderElector,
    LeadershipLostError,
)
from gocd_ha_operator.controller.runner import PromotionRunner
from gocd_ha_operator.controller.status import StatusWriter
from gocd_ha_operator.kube.lease import get_lease
from gocd_ha_operator.rules.promotion import Step
from tests.leases.conftest import NAMESPACE, ApiThread, TcpProxy, write_kubeconfig
from tests.support.operators import start_operator
from tests.support.pg import wait_until

ROOT = Path(__file__).resolve().parents[2]
LEASE = 4.0
RENEW = 3.0
RETRY = 1.0
HANDLED = "reconcile' succeeded"
#: Seconds a loaded machine may add to a timing bound (scheduling, a slow API round trip).
LOAD_TOLERANCE = 3.0
CLUSTER: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": "ci", "namespace": NAMESPACE},
    "spec": {
        "gocd": {"image": "gocd/gocd-server:v26.1.0"},
        "sharedStorage": {"size": "10Gi", "storageClassName": "nfs"},
    },
}


class Operator:
    def __init__(self, name: str, server: str, tmp: Path) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        closed = {
            f"{NAMESPACE}/ci-{svc}:{port}": "127.0.0.1:9"
            for svc, port in (("pg-a", 5432), ("pg-b", 5432), ("gocd-a", 8153), ("gocd-b", 8153))
        }
        env = {
            **os.environ,
            "KUBECONFIG": str(write_kubeconfig(tmp / f"{name}.kubeconfig", server)),
            "POD_NAME": name,
            "GOCDHA_ENDPOINTS": json.dumps(closed),
        }
        self.process = start_operator(
            self.log, env, namespace=NAMESPACE, lease=LEASE, renew=RENEW, retry=RETRY
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def operators(tmp_path: Path) -> Iterator[list[Operator]]:
    started: list[Operator] = []
    yield started
    for operator in started:
        operator.stop()


def holder(api: ApiThread) -> str | None:
    lease = get_lease(api.client(), NAMESPACE, "gocd-ha-operator")
    return lease.holder if lease is not None else None


def test_only_the_holder_acts_and_the_other_takes_over_after_a_kill(
    api: ApiThread, operators: list[Operator], tmp_path: Path
) -> None:
    first = Operator("op-1", api.url, tmp_path)
    operators.append(first)
    wait_until(lambda: holder(api) == "op-1", timeout=30, what="op-1 leading")
    second = Operator("op-2", api.url, tmp_path)
    operators.append(second)
    wait_until(lambda: "waiting for the operator Lease" in second.text(), timeout=30, what="op-2")

    api.client().create(copy.deepcopy(CLUSTER))
    wait_until(lambda: HANDLED in first.text(), timeout=30, what="op-1 reconciling")
    time.sleep(2 * LEASE)
    assert holder(api) == "op-1"
    assert HANDLED not in second.text(), second.text()[-2000:]
    assert "holding the operator Lease" not in second.text()

    killed = time.monotonic()
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    last = get_lease(api.client(), NAMESPACE, "gocd-ha-operator")
    assert last is not None and last.holder == "op-1" and last.renew_time is not None
    wait_until(lambda: holder(api) == "op-2", timeout=LEASE + 3 * RETRY + 10, what="takeover")
    took = time.monotonic() - killed
    print(f"\nop-2 took the Lease {took:.2f}s after op-1 was killed (lease {LEASE:g}s)")
    # Safety, by causality (one machine, one clock): op-2 acquired it no earlier than a whole Lease
    # duration after op-1's last renewal, however slow or fast the machine is.
    taken = get_lease(api.client(), NAMESPACE, "gocd-ha-operator")
    assert taken is not None and taken.acquire_time is not None
    assert (taken.acquire_time - last.renew_time).total_seconds() >= LEASE
    # Liveness: within the duration and two retry periods, plus LOAD_TOLERANCE for a loaded
    # machine (the suite runs on several workers of a shared 2-core box).
    assert took <= LEASE + 2 * RETRY + LOAD_TOLERANCE
    wait_until(lambda: HANDLED in second.text(), timeout=30, what="op-2 resuming the cluster")


def test_a_leader_cut_from_the_api_exits_before_its_lease_can_be_taken(
    api: ApiThread, proxy: TcpProxy, operators: list[Operator], tmp_path: Path
) -> None:
    leader = Operator("op-cut", proxy.url, tmp_path)
    operators.append(leader)
    wait_until(lambda: holder(api) == "op-cut", timeout=30, what="op-cut leading")
    lease = get_lease(api.client(), NAMESPACE, "gocd-ha-operator")
    assert lease is not None
    cut = time.monotonic()
    proxy.cut()
    leader.process.wait(timeout=RENEW + 5)
    gone = time.monotonic() - cut
    print(f"\nthe leader exited {gone:.2f}s after its API was cut (renew deadline {RENEW:g}s)")
    assert leader.process.returncode == EXIT_LOST_LEADERSHIP, leader.text()[-2000:]
    assert gone < LEASE
    assert "lost the operator Lease" in leader.text()


def test_leader_election_needs_a_namespace_and_ordered_timings() -> None:
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "POD_NAMESPACE"}
        return subprocess.run(
            [sys.executable, "-m", "gocd_ha_operator.cli.main", "run", "-A", *extra],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            env=env,
        )

    missing = run()
    assert missing.returncode == 2 and "--leader-election-namespace" in missing.stderr
    disordered = run("--leader-election-namespace=x", "--leader-election-renew-deadline=20")
    assert disordered.returncode == 2
    assert "--leader-election-renew-deadline" in disordered.stderr


def leading_elector(api: ApiThread, lost: list[bool]) -> LeaderElector:
    """An elector (identity ``op-paused``) that has just acquired the operator's Lease; losing
    it appends to ``lost``."""
    elector = LeaderElector(
        api.client(),
        namespace=NAMESPACE,
        name="gocd-ha-operator",
        identity="op-paused",
        lease_duration=LEASE,
        renew_deadline=RENEW,
        retry_period=RETRY,
        on_lost=lambda: lost.append(True),
    )
    assert elector.try_acquire_or_renew()
    return elector


def test_a_leader_past_its_renew_deadline_writes_nothing_even_before_its_watchdog_runs(
    api: ApiThread,
) -> None:
    """As after a SIGSTOP longer than the renew deadline: on SIGCONT every thread resumes at once
    and the watchdog that exits the process races the threads that write. The operator's own
    client checks the deadline before every write: past it, the write is not sent and the
    replica gives up its leadership (``on_lost``: exit) at once."""
    lost: list[bool] = []
    elector = leading_elector(api, lost)
    kube = elector.guard(api.client())  # what `run` hands to the handlers
    kube.create(_config_map("written-while-leading"))
    assert kube.get("v1", "ConfigMap", NAMESPACE, "written-while-leading") is not None

    time.sleep(RENEW + 0.2)  # frozen past the deadline; no renewal, the watchdog never ran
    with pytest.raises(LeadershipLostError, match="renew deadline"):
        kube.create(_config_map("written-after-the-deadline"))
    assert lost == [True]
    assert api.client().get("v1", "ConfigMap", NAMESPACE, "written-after-the-deadline") is None
    # Reads are not actions: a replica may still look (it exits anyway).
    assert kube.get("v1", "ConfigMap", NAMESPACE, "written-while-leading") is not None


def _config_map(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {},
    }


async def test_a_replica_past_its_renew_deadline_starts_no_promotion_step(api: ApiThread) -> None:
    """A step may act on Postgres (``pg_promote``), not only on the API: the runner checks the
    deadline before it starts one."""
    lost: list[bool] = []
    elector = leading_elector(api, lost)
    config = OperatorConfig(operator_image="x", kube_factory=lambda: elector.guard(api.client()))
    runner = PromotionRunner(
        config, ClusterRef(NAMESPACE, "ci"), ClusterState(), cast(StatusWriter, None)
    )
    acted: list[str] = []

    async def promote(body: dict[str, Any], cluster: GoCDHACluster) -> None:
        acted.append("pg_promote")

    async def record_next(cluster: GoCDHACluster, step: Step) -> dict[str, Any]:
        acted.append(f"recorded after {step}")
        return {}

    runner.promote = promote  # type: ignore[method-assign]
    runner.record_next = record_next  # type: ignore[method-assign]
    cluster = cast(GoCDHACluster, None)
    await runner.perform(Step.PROMOTING, {}, cluster)  # leading: the step acts
    assert acted == ["pg_promote", "recorded after Promoting"]

    await asyncio.sleep(RENEW + 0.2)  # frozen past the deadline; the watchdog never ran
    with pytest.raises(LeadershipLostError):
        await runner.perform(Step.PROMOTING, {}, cluster)
    assert acted == ["pg_promote", "recorded after Promoting"]
    assert lost == [True]
