"""Fixtures for the local kubelet: kmock's API emulator holding what the builders render (the
helpers are in ``tests/support/kubelet.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.local import LocalKubelet
from gocd_ha_operator.local.emulator import running_emulator
from tests.support.kubelet import CLUSTER, NAMESPACE, Api


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_emulator() as (_emulator, url):
        yield Api(url=url, credentials=ClusterCredentials.generate())


@pytest.fixture
async def kubelet(
    api: Api, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LocalKubelet]:
    """A started kubelet for the ``ci`` cluster; closed (every process killed) after the test."""
    async with LocalKubelet(api.url, NAMESPACE, clusters=[CLUSTER], interval=0.1) as started:
        yield started
