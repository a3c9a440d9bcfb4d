"""Helpers of the emulator tests: the example cluster, and a :class:`Harness` that acts like
``kubectl`` against kmock's in-process Kubernetes API emulator and reads back what it stored.

The emulator merges every write as a plain dict merge and keeps no resourceVersion, generation or
garbage collection, so tests set ``metadata.generation`` themselves and assert on stored objects
and on the request log.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import kmock

from gocd_ha_operator.controller.handlers import OperatorConfig
from gocd_ha_operator.kube.apply import KubeClient
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.local.emulator import CHILD_RESOURCES, OperatorEmulator
from tests.support.clusters import MINIMAL_SPEC, Replace, cluster_body

NAMESPACE = "build"
CR = "gocdha.io/v1alpha1/gocdhaclusters"
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}

BODY: dict[str, Any] = cluster_body(
    name="ci",
    namespace=NAMESPACE,
    metadata={"uid": "uid-ci", "generation": 1, "resourceVersion": "1"},
    spec=Replace({"gocd": {"image": "gocd/gocd-server:v26.1.0"}, **MINIMAL_SPEC}),
)


async def kubectl_request(url: str, method: str, path: str, body: Any = None) -> Any:
    """One API request as ``kubectl`` makes it (merge patches), asserting success."""
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, json=body, headers=headers) as response,
    ):
        payload = await response.json(content_type=None)
        assert response.status < 300, (response.status, payload)
        return payload


@dataclass
class Harness:
    """An emulator with the operator running against it, plus helpers to act like kubectl."""

    emulator: OperatorEmulator
    url: str
    config: OperatorConfig

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        return await kubectl_request(self.url, method, path, body)

    async def request_object(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """:meth:`request` for one object: the object the API answers with."""
        answer: dict[str, Any] = await self.request(method, path, body)
        return answer

    async def create_cluster(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        body = copy.deepcopy(body or BODY)
        return await self.request_object(
            "POST", f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters", body
        )

    async def patch_cluster(self, patch: dict[str, Any], name: str = "ci") -> dict[str, Any]:
        return await self.request_object(
            "PATCH", f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters/{name}", patch
        )

    async def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        group_version, plural = resource.rsplit("/", 1)
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        return await self.request_object("POST", f"{prefix}/namespaces/{NAMESPACE}/{plural}", obj)

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

    def requests_by_verb_and_kind(self, since: int = 0) -> dict[tuple[str, str], int]:
        """Requests served from position ``since`` of the emulator's log on, counted by verb and
        kind as a user reading the API server's audit log would: ``GET`` of one object, ``LIST``
        and ``WATCH`` of a collection, writes by method; the kind is the resource's plural, with
        ``/status`` for the subresource. Events included."""
        counts: dict[tuple[str, str], int] = {}
        log = self.emulator.access_log
        for method, path, watch, _agent in log[since:]:
            kind, named = resource_of(path)
            verb = method
            if method == "GET" and not named:
                verb = "WATCH" if watch else "LIST"
            counts[(verb, kind)] = counts.get((verb, kind), 0) + 1
        return counts

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


class GatedCreates:
    """A :class:`KubeClient` whose creates wait until :meth:`release`: a reconcile held at its
    first child, as one waiting for a free reconcile slot behind many others."""

    def __init__(self, inner: KubeClient) -> None:
        self.inner = inner
        self.held = threading.Event()
        self._open = threading.Event()

    def create(self, obj: Any) -> Any:
        self.held.set()
        if not self._open.wait(60):
            raise TimeoutError("GatedCreates: never released")
        return self.inner.create(obj)

    def release(self) -> None:
        self._open.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def resource_of(path: str) -> tuple[str, bool]:
    """``(plural[/subresource], names one object)`` of an API request path; discovery paths
    (``/api``, ``/apis/...`` without a resource) are their own kind."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        at = parts.index("namespaces")
        rest = parts[at + 2 :]
        return "/".join(rest[:1] + rest[2:3]), len(rest) >= 2
    core = 2 if parts[:1] == ["api"] else 3  # /api/v1/<plural> or /apis/<group>/<v>/<plural>
    rest = parts[core:]
    if not rest:
        return "/".join(parts), False
    return "/".join(rest[:1] + rest[2:3]), len(rest) >= 2


def closed_endpoints() -> dict[str, Endpoint]:
    closed = Endpoint("127.0.0.1", 9)  # the discard port: nothing listens on it here
    services = [("ci-pg-a", 5432), ("ci-pg-b", 5432), ("ci-gocd-a", 8153), ("ci-gocd-b", 8153)]
    services += [("ci-gocd-a", 8155), ("ci-gocd-b", 8155)]
    return {f"{NAMESPACE}/{service}:{port}": closed for service, port in services}


async def finish_backup_job(harness: Harness, job: dict[str, Any], *, succeeded: bool) -> None:
    """What Kubernetes does when a backup Job's pod exits."""
    name = job["metadata"]["name"]
    backup = job["metadata"]["labels"]["gocdha.io/backup"]
    manifest = {
        "name": backup,
        "startedAt": "2026-12-02T02:00:00Z",
        "finishedAt": "2026-12-02T02:00:42Z",
        "durationSeconds": 42,
        "startWal": "000000010000000000000003",
        "endWal": "000000010000000000000004",
        "sizeBytes": 31457280,
    }
    report = {
        "manifest": manifest,
        "retention": {"kept": 1, "oldest": backup, "oldestFinishedAt": "2026-12-02T02:00:42Z"},
    }
    message = json.dumps(report) if succeeded else "pg_basebackup: could not connect\nERROR: x"
    await harness.create(
        "v1/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-x1",
                "namespace": NAMESPACE,
                "labels": {"job-name": name},
            },
            "status": {
                "containerStatuses": [
                    {"name": "backup", "state": {"terminated": {"message": message}}}
                ]
            },
        },
    )
    condition = "Complete" if succeeded else "Failed"
    await harness.request(
        "PATCH",
        f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}",
        {
            "status": {
                "startTime": "2026-12-02T02:00:00Z",
                "conditions": [
                    {
                        "type": condition,
                        "status": "True",
                        "lastTransitionTime": "2026-12-02T02:00:43Z",
                        "message": "BackoffLimitExceeded" if not succeeded else "",
                    }
                ],
            }
        },
    )
