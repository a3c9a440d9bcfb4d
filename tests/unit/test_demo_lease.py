"""The demo's Lease line after the switchover shows the new primary's guard's renewal on its new
timeline: the operator's hand-over names the new holder but keeps the old primary's timeline, and
the demo once printed that ("held by ci-pg-b on timeline 1"). It waits, bounded, and says so
when the renewal does not come."""

from __future__ import annotations

import time
from typing import Any

from gocd_ha_operator.api.constants import ANNOTATION_LEASE_TIMELINE
from gocd_ha_operator.local.demo import (
    LEASE_PATH,
    lease_line,
    lease_of_new_primary,
    renewed_on_new_timeline,
)


def lease(holder: str, timeline: int | None, renewed: str) -> dict[str, Any]:
    annotations = {} if timeline is None else {ANNOTATION_LEASE_TIMELINE: str(timeline)}
    return {
        "metadata": {"annotations": annotations},
        "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 15},
    }


class ScriptedApi:
    """Answers the demo's GETs of the primary Lease with one scripted object after another (the
    last one again once the script is used up)."""

    def __init__(self, *leases: dict[str, Any]) -> None:
        self.leases = list(leases)
        self.reads = 0

    async def request(self, method: str, path: str) -> dict[str, Any]:
        assert (method, path) == ("GET", LEASE_PATH)
        self.reads += 1
        return self.leases.pop(0) if len(self.leases) > 1 else self.leases[0]


HANDED_OVER = lease("ci-pg-b", 1, "2026-12-02T13:00:00.000000Z")  # the operator's hand-over
RENEWED = lease("ci-pg-b", 2, "2026-12-02T13:00:02.000000Z")  # b's guard, b now a primary


def test_only_the_new_holder_on_a_later_timeline_counts() -> None:
    assert renewed_on_new_timeline(RENEWED, "ci-pg-b", 1)
    assert not renewed_on_new_timeline(HANDED_OVER, "ci-pg-b", 1)
    assert not renewed_on_new_timeline(RENEWED, "ci-pg-a", 1)
    assert not renewed_on_new_timeline(lease("ci-pg-b", None, "x"), "ci-pg-b", 1)
    assert not renewed_on_new_timeline(RENEWED, "ci-pg-b", 2)
    # Without a known old timeline, any timeline written by the new holder's guard.
    assert renewed_on_new_timeline(HANDED_OVER, "ci-pg-b", None)


async def test_the_demo_waits_for_the_renewal_on_the_new_timeline() -> None:
    api = ScriptedApi(HANDED_OVER, HANDED_OVER, RENEWED)
    seen, renewed = await lease_of_new_primary(api, "ci-pg-b", 1, timeout=10, poll=0.01)
    assert renewed and api.reads == 3
    assert "held by ci-pg-b on timeline 2, renewed at 2026-12-02T13:00:02" in lease_line(seen)


async def test_a_renewal_that_does_not_come_is_reported_not_invented() -> None:
    api = ScriptedApi(HANDED_OVER)
    started = time.monotonic()
    seen, renewed = await lease_of_new_primary(api, "ci-pg-b", 1, timeout=0.3, poll=0.05)
    assert not renewed and seen == HANDED_OVER
    assert time.monotonic() - started < 5  # bounded
    assert "on timeline 1" in lease_line(seen)
