"""``StatusWriter.update`` with a body read earlier: used only while it cannot be stale."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.controller.config import ClusterRef, OperatorConfig
from gocd_ha_operator.controller.status import RECONCILE_STATUS_KEYS, StatusWriter
from tests.support.memkube import StatusKube


def writer() -> tuple[StatusWriter, StatusKube]:
    kube = StatusKube({"metadata": {"name": "ci"}, "status": {"primary": "a"}})
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


def reconciled(patch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in patch.items() if key in RECONCILE_STATUS_KEYS}


def set_standby_mode_from_spec(
    _: dict[str, Any], status: GoCDHAClusterStatus
) -> GoCDHAClusterStatus:
    """What an observation concludes for a field the reconcile decides: never written from it."""
    return status.model_copy(update={"standby": "b", "standby_mode": "Warm", "gocd_version": "9"})


def test_the_reconciled_fields_ride_on_the_next_patch_and_only_as_handed_over() -> None:
    """Issue #16: one status write after a reconcile. The reconcile hands ``observedGeneration``,
    ``standbyMode``, ``gocdVersion`` over; the next patch carries them, once; an observation's
    values of them are never written."""

    async def run() -> None:
        status, kube = writer()
        kube.body["status"] = {"primary": "a", "standbyMode": "Cold", "gocdVersion": "1"}
        await status.update(set_standby_mode_from_spec)
        assert [reconciled(p) for p in kube.patches] == [{}], "an observation's are not written"
        status.state.reconciled_status = {"observedGeneration": 2, "standbyMode": "Cold"}
        kube.body["status"]["standby"] = "a"  # something for the observation to write
        await status.update(set_standby_mode_from_spec)
        # gocdVersion left out: removed. Handed over once.
        assert reconciled(kube.patches[1]) == {"observedGeneration": 2, "gocdVersion": None}
        assert status.state.reconciled_status is None
        status.state.reconciled_status = {"observedGeneration": 2, "standbyMode": "Cold"}
        await status.update(set_standby_mode_from_spec)
        assert len(kube.patches) == 2, "nothing differs: nothing written"
        assert status.state.reconciled_status is None

    asyncio.run(run())


def test_reconciled_fields_stay_handed_over_while_their_patch_fails() -> None:
    async def run() -> None:
        status, kube = writer()
        handed = {"observedGeneration": 3}
        status.state.reconciled_status = handed

        def refuse(*_: Any) -> dict[str, Any]:
            raise RuntimeError("API unavailable")

        kube.patch_status = refuse  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await status.update(set_standby("b"))
        assert status.state.reconciled_status is handed

    asyncio.run(run())
