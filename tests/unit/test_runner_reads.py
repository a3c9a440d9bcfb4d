"""The promotion runner's requests on its cheapest path: a promotion resumed at ``Done`` (an
operator restarted there, issue #16) is one read of the resource and one status patch."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf
import pytest
from kopf._core.engines import posting

from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.controller import runner as runner_module
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


def events_posted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reasons of the Events the runner posts, in order."""
    reasons: list[str] = []

    def record(_body: Any, _kind: str, reason: str, _message: str) -> None:
        reasons.append(reason)

    monkeypatch.setattr(runner_module, "post_event", record)
    return reasons


@pytest.mark.parametrize("stale_step", ["Done", "Rejoining", "StoppingOldPrimary"])
def test_a_runner_started_from_a_body_read_before_the_last_runner_finished_does_nothing(
    monkeypatch: pytest.MonkeyPatch, stale_step: str
) -> None:
    """The supervisor reads the resource, and while that read is in flight the running runner
    records ``Succeeded`` and ends; the supervisor then finds no runner alive and starts one from
    what it read (still ``InProgress``). That runner must see the promotion ended — not post
    ``PromotionSucceeded`` a second time (CI: two ``PromotionSucceeded`` Events for one
    switchover), nor act on a step long done (a stale ``StoppingOldPrimary`` would stop the side
    that has since rejoined as the standby)."""

    async def run() -> None:
        no_events()
        reasons = events_posted(monkeypatch)
        kube = in_done()
        kube.body["status"]["promotion"]["step"] = stale_step
        acted: list[str] = []

        async def hook(point: str) -> None:
            acted.append(point)

        config = dataclasses.replace(config_for(kube), promotion_hook=hook)
        supervisor = Supervisor(config, ClusterRef("build", "ci"))
        writes = supervisor.writer.writes
        stale = await supervisor.writer.fetch()
        assert stale is not None

        def finished(_: dict[str, Any], status: GoCDHAClusterStatus) -> GoCDHAClusterStatus:
            # What the running runner's last status write did meanwhile.
            ended = status.promotion.model_copy(update={"result": "Succeeded", "step": "Done"})
            return status.model_copy(update={"promotion": ended})

        await supervisor.writer.update(finished)
        patches = len(kube.patches)
        supervisor.ensure_runner((stale, writes))
        runner = supervisor.state.runner
        assert runner is not None
        await runner
        assert acted == [], f"the runner acted on a promotion that had ended: {acted}"
        assert reasons == [], f"Events posted for a promotion that had ended: {reasons}"
        assert len(kube.patches) == patches

    asyncio.run(run())
