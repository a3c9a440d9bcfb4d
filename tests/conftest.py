"""Session-wide fixtures for every tier: what makes the suite safe to run on several workers
(``pytest -n``, tests/README.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gocd_ha_operator.local import apiproxy, kubelet, process
from tests.support.ports import free_port


@pytest.fixture(scope="session", autouse=True)
def claimed_ports() -> Iterator[None]:
    """The local kubelet's pods and API proxies take their loopback ports from the port registry
    of ``tests/support/ports.py``, as the tests' own instances do: two workers never get the same
    port. (Processes a test starts, such as ``gocd-ha-operator drill``, pick their own.)"""
    with pytest.MonkeyPatch.context() as patch:
        for module in (process, kubelet, apiproxy):
            patch.setattr(module, "free_port", free_port)
        yield
