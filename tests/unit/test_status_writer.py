"""``StatusWriter.update`` with a body read earlier: used only while it cannot be stale."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.controller.config import ClusterRef, OperatorConfig
from gocd_ha_operator.controller.status import StatusWriter


class FakeKube:
    """The resource in memory; counts reads and status patches."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {"metadata": {"name": "ci"}, "status": {"primary": "a"}}
        self.reads = 0
        self.patches: list[dict[str, Any]] = []

    def get(self, *_: Any) -> dict[str, Any]:
        self.reads += 1
        return copy.deepcopy(self.body)

    def patch_status(self, *args: Any) -> dict[str, Any]:
        patch = args[-1]
        self.patches.append(patch)
        self.body["status"] = {**self.body["status"], **patch}
        return copy.deepcopy(self.body)


def writer() -> tuple[StatusWriter, FakeKube]:
    kube = FakeKube()
    config = OperatorConfig(operator_image="x", kube_factory=lambda: kube)  # type: ignore[arg-type,return-value]
    ref = ClusterRef("build", "ci")
    return StatusWriter(config, ref, config.state(ref)), kube


def set_standby(side: str):  # type: ignore[no-untyped-def]
    def change(_: dict[str, Any], status: GoCDHAClusterStatus) -> GoCDHAClusterStatus:
        return status.model_copy(update={"standby": side})

    return change


def test_a_body_read_before_no_write_of_this_process_is_used() -> None:
    async def run() -> None:
        status, kube = writer()
        writes = status.writes
        body = await status.fetch()
        await status.update(set_standby("b"), read=(body, writes))
        assert kube.reads == 1, "the caller's read was used"
        assert len(kube.patches) == 1 and kube.patches[0]["standby"] == "b"

    asyncio.run(run())


def test_a_body_read_before_a_write_of_this_process_is_read_again() -> None:
    async def run() -> None:
        status, kube = writer()
        writes = status.writes
        stale = await status.fetch()
        await status.update(set_standby("b"))  # e.g. the runner, meanwhile
        reads = kube.reads
        await status.update(set_standby("a"), read=(stale, writes))
        assert kube.reads == reads + 1, "the stale body was not used"
        assert kube.patches[-1]["standby"] == "a"

    asyncio.run(run())


def test_a_body_read_while_a_patch_was_in_flight_is_read_again() -> None:
    async def run() -> None:
        status, kube = writer()
        status.state.status_writes += 1  # a patch sent, not answered yet
        in_flight = status.writes
        body = await status.fetch()
        await status.update(set_standby("b"), read=(body, in_flight))
        assert kube.reads == 2

    asyncio.run(run())
