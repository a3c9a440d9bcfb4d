"""The promotion runner's requests on its cheapest path: a promotion resumed at ``Done`` (an
operator restarted there, issue #16) is one read of the resource and one status patch."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kopf._core.engines import posting

from gocd_ha_operator.controller.config import ClusterRef, OperatorConfig
from gocd_ha_operator.controller.runner import PromotionRunner
from gocd_ha_operator.controller.supervisor import Supervisor
from tests.support.clusters import MINIMAL_SPEC, Replace, cluster_body
from tests.support.memkube import StatusKube

PROMOTION: dict[str, Any] = {
    "token": "t-1",
    "type": "Switchover",
    "trigger": "Annotation",
    "result": "InProgress",
    "step": "Done",
    "fromSide": "a",
    "toSide": "b",
    "rpoBytes": 0,
    "startedAt": "2026-01-01T00:00:00Z",
}


def in_done() -> StatusKube:
    """A cluster whose switchover to b stopped at ``Done``."""
    body = cluster_body(name="ci", namespace="build", spec=Replace(MINIMAL_SPEC))
    body["metadata"]["generation"] = 1
    body["status"] = {"primary": "b", "standby": "a", "promotion": dict(PROMOTION)}
    return StatusKube(body)


def no_events() -> None:
    """kopf posts Events from its operator's queue; there is none here."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    posting.settings_var.set(settings)


def config_for(kube: StatusKube) -> OperatorConfig:
    return OperatorConfig(operator_image="x", kube_factory=lambda: kube)  # type: ignore[arg-type,return-value]


def test_a_promotion_resumed_at_done_reads_the_resource_once() -> None:
    async def run() -> None:
        no_events()
        kube = in_done()
        config = config_for(kube)
        ref = ClusterRef("build", "ci")
        supervisor = Supervisor(config, ref)
        await PromotionRunner(config, ref, supervisor.state, supervisor.writer).run()
        assert kube.body["status"]["promotion"]["result"] == "Succeeded"
        assert len(kube.patches) == 1, kube.patches
        assert kube.reads == 1, "the status patch of Done reads the resource again"

    asyncio.run(run())


def test_a_runner_the_supervisor_starts_for_a_recorded_promotion_reads_nothing_itself() -> None:
    """The supervisor's iteration hands the body it read to the runner it starts."""

    async def run() -> None:
        no_events()
        kube = in_done()
        config = config_for(kube)
        supervisor = Supervisor(config, ClusterRef("build", "ci"))
        writes = supervisor.writer.writes
        body = await supervisor.writer.fetch()
        assert body is not None
        supervisor.ensure_runner((body, writes))
        runner = supervisor.state.runner
        assert runner is not None
        await runner
        assert kube.body["status"]["promotion"]["result"] == "Succeeded"
        assert kube.reads == 1, "the runner read the resource again"

    asyncio.run(run())
