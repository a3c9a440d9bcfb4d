"""Fixtures for the local kubelet: kmock's API emulator holding what the builders render."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.kube.apply import resource_path
from gocd_ha_operator.local import LocalKubelet
from gocd_ha_operator.local.emulator import running_emulator
from gocd_ha_operator.rules.topology import Topology

NAMESPACE = "build"
CLUSTER = "ci"
BODY: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": CLUSTER, "namespace": NAMESPACE, "uid": "uid-ci", "generation": 1},
    "spec": {
        "gocd": {"image": "gocd/gocd-server:v26.1.0"},
        "sharedStorage": {"size": "10Gi", "storageClassName": "nfs"},
    },
}


@dataclass
class Api:
    """The emulator's URL plus what ``kubectl`` would do with it."""

    url: str
    credentials: ClusterCredentials

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, json=body, headers=headers) as response,
        ):
            payload = await response.json(content_type=None)
            assert response.status < 300, (response.status, payload)
            return payload

    async def create(self, obj: dict[str, Any]) -> None:
        path = resource_path(obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"])
        await self.request("POST", path, obj)

    async def patch(self, api_version: str, kind: str, name: str, patch: dict[str, Any]) -> None:
        await self.request("PATCH", resource_path(api_version, kind, NAMESPACE, name), patch)

    async def scale(self, kind: str, name: str, replicas: int) -> None:
        await self.patch("apps/v1", kind, name, {"spec": {"replicas": replicas}})

    async def create_children(
        self, keep: Callable[[dict[str, Any]], bool] = lambda _o: True
    ) -> None:
        """Everything ``build_children`` renders for the example cluster (primary a, Cold)."""
        inputs = BuildInputs(
            parse_cluster(copy.deepcopy(BODY)),
            Topology(primary="a", fenced=frozenset()),
            self.credentials,
            "registry.example/gocd-ha-operator:test",
        )
        for child in build_children(inputs):
            if keep(child):
                await self.create(child)


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


async def eventually(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except Exception as exc:
            last = exc
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(0.1)
