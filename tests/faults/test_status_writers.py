"""Defect 6e: status had two writers. The reconcile (a kopf patch) and the supervisor both
merge-patched the whole ``conditions`` list without ``resourceVersion``: whoever wrote last won,
so a reconcile's ``Ready=False ChildConflict`` was overwritten by the next observation, and an
observation could be overwritten by a reconcile's stale copy. Now the supervisor is the only
writer of conditions (the reconcile hands it its outcome); this test interleaves both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.emulator import NAMESPACE, Harness

pytestmark = pytest.mark.emulator

Start = Callable[[], Any]


def conditions(of: Harness) -> dict[str, dict[str, Any]]:
    status = of.cluster().get("status") or {}
    return {c["type"]: c for c in status.get("conditions", [])}


async def test_reconcile_and_supervisor_interleaved_lose_no_condition_update(
    harness: Harness,
    run_operator: Start,
) -> None:
    await run_operator()
    await harness.create_cluster()
    # The supervisor observes every 0.3 s (nothing is reachable here): its conditions are there.
    await harness.eventually(
        lambda: (
            conditions(harness).get("PrimaryAvailable", {}).get("reason") == "PrimaryUnreachable"
        ),
        message="the supervisor's observation",
    )
    await harness.eventually(lambda: ("Service", "ci-gocd") in harness.children())
    # Another controller takes over a child; the next reconcile cannot apply it.
    await harness.request(
        "PATCH",
        f"/api/v1/namespaces/{NAMESPACE}/services/ci-gocd",
        {
            "metadata": {
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "someone-else",
                        "uid": "0000-other",
                        "controller": True,
                    }
                ]
            }
        },
    )
    await harness.patch_cluster({"spec": {"failover": {"maxLagBytes": 4096}}})
    await harness.eventually(
        lambda: conditions(harness).get("Ready", {}).get("reason") == "ChildConflict",
        message="Ready=False ChildConflict",
    )
    # Both keep writing (observations every 0.3 s, the reconcile retried); sample for 3 s.
    samples: list[tuple[str | None, str | None]] = []
    for _ in range(60):
        found = conditions(harness)
        samples.append(
            (found.get("Ready", {}).get("reason"), found.get("PrimaryAvailable", {}).get("reason"))
        )
        await asyncio.sleep(0.05)
    lost = [sample for sample in samples if sample != ("ChildConflict", "PrimaryUnreachable")]
    assert lost == [], f"condition updates overwritten: {lost[:5]}"
