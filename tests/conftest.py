"""Session-wide fixtures and collection rules for every tier: what makes the suite safe to run on
several workers (``pytest -n``, tests/README.md, "Parallel runs")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from gocd_ha_operator.local import apiproxy, kubelet, process
from tests.support.ports import free_port

TESTS: Final = Path(__file__).resolve().parent
#: Tiers whose real-Postgres tests run local stacks: the operator, the local kubelet, the API
#: emulator and instance guards with Lease timings of a few seconds, all fed by one Python process.
#: Two of them at once on a loaded 2-core machine starve each other's API until a guard cannot
#: renew and fences its healthy primary (a full run with 2 workers at load 12: 9 of them failed,
#: waiting for a primary that was being fenced). They share one xdist group: one worker runs them
#: one after another while the others run the rest of the suite.
LOCAL_STACK_TIERS: Final = frozenset(
    {"backup", "faults", "leases", "local", "monitoring", "promotion"}
)
LOCAL_STACK_GROUP: Final = "local-stack"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS).parts
        if parts[0] in LOCAL_STACK_TIERS and item.get_closest_marker("postgres") is not None:
            item.add_marker(pytest.mark.xdist_group(LOCAL_STACK_GROUP))


@pytest.fixture(scope="session", autouse=True)
def claimed_ports() -> Iterator[None]:
    """The local kubelet's pods and API proxies take their loopback ports from the port registry
    of ``tests/support/ports.py``, as the tests' own instances do: two workers never get the same
    port. (Processes a test starts, such as ``gocd-ha-operator drill``, pick their own.)"""
    with pytest.MonkeyPatch.context() as patch:
        for module in (process, kubelet, apiproxy):
            patch.setattr(module, "free_port", free_port)
        yield
