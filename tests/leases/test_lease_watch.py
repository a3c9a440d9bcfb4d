"""The operator's side of the primary Lease against the API server: status, LeaseHeld, hand-over."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import LEASE_EXPIRY_MARGIN_SECONDS
from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.api.status import Condition
from gocd_ha_operator.controller.lease_watch import (
    LeaseHandoverError,
    hand_over_primary_lease,
    observe_primary_lease,
    return_primary_lease,
)
from gocd_ha_operator.kube.lease import (
    LeaseConflictError,
    LeaseRecord,
    create_lease,
    get_lease,
    lease_object,
    write_lease,
)
from tests.leases.conftest import NAMESPACE, ApiThread
from tests.support.faults import FaultyKube

LEASE = 3


def cluster() -> GoCDHACluster:
    return parse_cluster(
        {
            "apiVersion": "gocdha.io/v1alpha1",
            "kind": "GoCDHACluster",
            "metadata": {"name": "ci", "namespace": NAMESPACE, "generation": 1},
            "spec": {
                "gocd": {"image": "gocd/gocd-server:v26.1.0"},
                "sharedStorage": {"size": "10Gi", "storageClassName": "nfs"},
                "failover": {
                    "primaryUnavailableSeconds": 10,
                    "leaseDurationSeconds": LEASE,
                    "renewDeadlineSeconds": 2,
                    "retryPeriodSeconds": 1,
                },
            },
            "status": {"primary": "a", "standby": "b"},
        }
    )


def with_conditions(source: GoCDHACluster, available: str, possible: str) -> GoCDHACluster:
    now = datetime.now(UTC)
    conditions: list[Condition] = []
    for type_, value in ((cond.PRIMARY_AVAILABLE, available), (cond.FAILOVER_POSSIBLE, possible)):
        conditions, _ = cond.set_condition(
            conditions,
            type=type_,
            status=value,  # type: ignore[arg-type]
            reason="Observed",
            message="",
            observed_generation=1,
            now=now,
        )
    status = source.status.model_copy(update={"conditions": conditions})
    return source.model_copy(update={"status": status})


async def hand_over_to_b(kube: Any, *, failover: bool) -> LeaseRecord:
    """The runner's hand-over of the primary Lease of ``cluster()`` to side b, now by the clock."""
    return await hand_over_primary_lease(
        kube, cluster(), "b", failover=failover, memo={}, clock=lambda: datetime.now(UTC)
    )


def make_lease(api: ApiThread, holder: str = "ci-pg-a") -> None:
    create_lease(
        api.client(),
        lease_object(
            "ci-primary", NAMESPACE, holder=holder, duration_seconds=LEASE, now=datetime.now(UTC)
        ),
    )


async def test_a_valid_lease_of_an_unavailable_primary_blocks_failover(api: ApiThread) -> None:
    make_lease(api)
    memo: dict[str, Any] = {}
    before = with_conditions(cluster(), "False", "True")
    observed = with_conditions(cluster(), "False", "True").status
    now = datetime.now(UTC)
    status, transitions = await observe_primary_lease(
        api.client(), before, observed, [], memo=memo, now=now
    )
    assert status.lease.holder == "ci-pg-a" and status.lease.holder_side == "a"
    assert status.lease.valid is True and status.lease.renew_time and status.lease.expires_at
    possible = cond.get_condition(status.conditions, cond.FAILOVER_POSSIBLE)
    assert possible is not None and (possible.status, possible.reason) == ("False", "LeaseHeld")
    assert "held by ci-pg-a" in possible.message
    assert [t.type for t in transitions] == [cond.FAILOVER_POSSIBLE]
    # The same record, seen again after its duration plus the margin: no longer blocking.
    later = now + timedelta(seconds=LEASE + LEASE_EXPIRY_MARGIN_SECONDS)
    status, _ = await observe_primary_lease(
        api.client(), before, observed, [], memo=memo, now=later
    )
    assert status.lease.valid is False
    possible = cond.get_condition(status.conditions, cond.FAILOVER_POSSIBLE)
    assert possible is not None and possible.status == "True"


async def test_a_healthy_primary_keeps_failover_possible(api: ApiThread) -> None:
    make_lease(api)
    before = with_conditions(cluster(), "True", "True")
    status, transitions = await observe_primary_lease(
        api.client(), before, before.status, [], memo={}, now=datetime.now(UTC)
    )
    assert status.lease.valid is True
    possible = cond.get_condition(status.conditions, cond.FAILOVER_POSSIBLE)
    assert possible is not None and possible.status == "True" and transitions == []


async def test_failover_takes_the_lease_only_after_it_expired(api: ApiThread) -> None:
    make_lease(api)
    started = time.monotonic()
    await hand_over_to_b(api.client(), failover=True)
    waited = time.monotonic() - started
    lease = get_lease(api.client(), NAMESPACE, "ci-primary")
    assert lease is not None and lease.holder == "ci-pg-b" and lease.transitions == 1
    print(f"\nfailover took the Lease after {waited:.2f}s (duration {LEASE}s + margin)")
    assert waited >= LEASE + LEASE_EXPIRY_MARGIN_SECONDS - 0.5


async def test_failover_aborts_when_the_old_primary_renews(api: ApiThread) -> None:
    make_lease(api)
    kube = api.client()
    stop = threading.Event()

    def renew() -> None:  # the old primary's guard, still alive behind a partition
        while not stop.wait(1):
            current = get_lease(kube, NAMESPACE, "ci-primary")
            assert current is not None
            write_lease(
                kube, current, holder="ci-pg-a", duration_seconds=LEASE, now=datetime.now(UTC)
            )

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        with pytest.raises(LeaseHandoverError, match="renewed"):
            await hand_over_to_b(kube, failover=True)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 5)
    lease = get_lease(kube, NAMESPACE, "ci-primary")
    assert lease is not None and lease.holder == "ci-pg-a"


async def test_switchover_hands_over_at_once_and_a_failed_promotion_gives_it_back(
    api: ApiThread,
) -> None:
    make_lease(api)
    kube = api.client()
    started = time.monotonic()
    await hand_over_to_b(kube, failover=False)
    # At once: a failover would wait for the Lease to expire (LEASE plus the margin) first.
    assert time.monotonic() - started < LEASE
    lease = get_lease(kube, NAMESPACE, "ci-primary")
    assert lease is not None and lease.holder == "ci-pg-b"
    # Resuming the step finds it done (idempotent).
    await hand_over_to_b(kube, failover=False)
    await return_primary_lease(kube, cluster(), "a", lambda: datetime.now(UTC))
    lease = get_lease(kube, NAMESPACE, "ci-primary")
    assert lease is not None and lease.holder == "ci-pg-a"


def test_a_stale_compare_and_swap_is_refused(api: ApiThread) -> None:
    make_lease(api)
    kube = api.client()
    read = get_lease(kube, NAMESPACE, "ci-primary")
    assert read is not None
    write_lease(kube, read, holder="ci-pg-a", duration_seconds=LEASE, now=datetime.now(UTC))
    with pytest.raises(LeaseConflictError):
        write_lease(kube, read, holder="ci-pg-b", duration_seconds=LEASE, now=datetime.now(UTC))


async def test_a_refused_lease_write_is_a_hand_over_error_naming_the_status(api: ApiThread) -> None:
    """What the runner reports as ``LeaseHeld``: the API's status, never a raw exception text."""
    make_lease(api)
    kube = FaultyKube(api.client())
    kube.fail_writes("Lease", 1)
    refused = r"refused the write .* \(HTTP 500 InternalError\)"
    with pytest.raises(LeaseHandoverError, match=refused):
        await hand_over_to_b(kube, failover=False)
    lease = get_lease(api.client(), NAMESPACE, "ci-primary")
    assert lease is not None and lease.holder == "ci-pg-a"
    # The next attempt (the runner repeats the step) moves it.
    await hand_over_to_b(kube, failover=False)
    lease = get_lease(api.client(), NAMESPACE, "ci-primary")
    assert lease is not None and lease.holder == "ci-pg-b"
