"""The real kopf handlers against kmock's in-process Kubernetes API emulator.

The emulator merges every write as a plain dict merge and keeps no resourceVersion, generation or
garbage collection, so tests set ``metadata.generation`` themselves and assert on stored objects
and on the request log.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import fetch_helm
import kmock
import kopf
import pytest

from gocd_ha_operator.controller.handlers import OperatorConfig
from gocd_ha_operator.kube.apply import client_for
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.local.emulator import (
    ALL_VERBS,
    CHILD_RESOURCES,
    OperatorThread,
    declare_resources,
    emulator_settings,
    running_emulator,
)
from tests.delivery._support import ROOT

NAMESPACE = "build"
CR = "gocdha.io/v1alpha1/gocdhaclusters"
__all__ = ["ALL_VERBS", "CHILD_RESOURCES", "declare_resources"]
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}

BODY: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {
        "name": "ci",
        "namespace": NAMESPACE,
        "uid": "uid-ci",
        "generation": 1,
        "resourceVersion": "1",
    },
    "spec": {
        "gocd": {"image": "gocd/gocd-server:v26.1.0"},
        "sharedStorage": {"size": "10Gi", "storageClassName": "nfs"},
    },
}


@dataclass
class Harness:
    """An emulator with the operator running against it, plus helpers to act like kubectl."""

    emulator: kmock.KubernetesEmulator
    url: str
    config: OperatorConfig

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, json=body, headers=headers) as response,
        ):
            payload = await response.json(content_type=None)
            assert response.status < 300, (response.status, payload)
            return payload

    async def create_cluster(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        body = copy.deepcopy(body or BODY)
        return await self.request(
            "POST", f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters", body
        )

    async def patch_cluster(self, patch: dict[str, Any], name: str = "ci") -> dict[str, Any]:
        return await self.request(
            "PATCH", f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters/{name}", patch
        )

    async def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        group_version, plural = resource.rsplit("/", 1)
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        return await self.request("POST", f"{prefix}/namespaces/{NAMESPACE}/{plural}", obj)

    def cluster(self, name: str = "ci") -> dict[str, Any]:
        return dict(self.emulator.objects[CR, NAMESPACE, name].raw)

    def objects(self, resource: str) -> dict[str, dict[str, Any]]:
        return {
            name: obj.raw
            for (res, _ns, name), obj in self.emulator.objects.items()
            if res == kmock.resource(resource) and not obj.deleted
        }

    def children(self) -> dict[tuple[str, str], dict[str, Any]]:
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for resource, kind in CHILD_RESOURCES.items():
            for name, raw in self.objects(resource).items():
                found[(kind, name)] = raw
        return found

    def writes(self) -> list[tuple[str, str]]:
        """Write requests so far (method, path), excluding Events."""
        return [
            (method, path)
            for method, path in self.emulator.request_log
            if method in WRITE_METHODS and "/events" not in path
        ]

    def child_writes(self) -> list[tuple[str, str]]:
        return [w for w in self.writes() if "/gocdhaclusters" not in w[1]]

    def events(self) -> list[dict[str, Any]]:
        return list(self.objects("v1/events").values())

    async def eventually(
        self, check: Callable[[], Any], timeout: float = 20.0, message: str = ""
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        last: Exception | None = None
        while asyncio.get_running_loop().time() < deadline:
            try:
                result = check()
                if result:
                    return result
            except (KeyError, AssertionError, ValueError) as exc:
                last = exc
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out: {message or check} (last: {last!r})")


def closed_endpoints() -> dict[str, Endpoint]:
    closed = Endpoint("127.0.0.1", 9)  # the discard port: nothing listens on it here
    services = [("ci-pg-a", 5432), ("ci-pg-b", 5432), ("ci-gocd-a", 8153), ("ci-gocd-b", 8153)]
    services += [("ci-gocd-a", 8155), ("ci-gocd-b", 8155)]
    return {f"{NAMESPACE}/{service}:{port}": closed for service, port in services}


@pytest.fixture
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with running_emulator() as (emulator, _url):
        yield emulator


@pytest.fixture
async def harness(emulator: kmock.KubernetesEmulator) -> AsyncIterator[Harness]:
    url = str(emulator.url).rstrip("/")
    config = OperatorConfig(
        operator_image="registry.example/gocd-ha-operator:test",
        observe_interval=0.3,
        kube_factory=lambda: client_for(url),
        # Every Service the operator connects to points at a closed loopback port: nothing is
        # reachable, and no test depends on DNS.
        endpoints=closed_endpoints(),
        connection=kopf.ConnectionInfo(server=url),
    )
    yield Harness(emulator=emulator, url=url, config=config)


@pytest.fixture
async def run_operator(harness: Harness) -> AsyncIterator[Callable[[], Any]]:
    """Start (and restart) the operator in its own thread; stopped at the end of the test."""
    running: list[OperatorThread] = []

    async def start() -> None:
        # A fresh config object per run: an operator restart loses every in-memory cache.
        config = OperatorConfig(
            operator_image=harness.config.operator_image,
            observe_interval=harness.config.observe_interval,
            kube_factory=harness.config.kube_factory,
            endpoints=harness.config.endpoints,
            connection=harness.config.connection,
            tune_settings=emulator_settings,
            retry_delay=1.0,
        )
        operator = OperatorThread(config)
        running.append(operator)
        await operator.start()

    async def stop() -> None:
        while running:
            await running.pop().stop()

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    await stop()


@pytest.fixture(scope="session")
def helm() -> Path:
    """The Helm binary (tools/fetch_helm.py), for tests comparing what the operator does with
    what the chart grants it."""
    try:
        return fetch_helm.fetch_helm(ROOT / ".cache" / "helm")
    except fetch_helm.FetchError as exc:
        pytest.fail(f"could not fetch helm with tools/fetch_helm.py: {exc}")
