"""An in-process Kubernetes API (kmock's ``KubernetesEmulator``) set up for this operator.

Used by ``gocd-ha-operator demo``, the benchmarks and the emulator tests. kmock is a database over
HTTP: it stores objects and streams watch events, but merges every write as a plain dict merge,
never changes ``resourceVersion`` or ``generation``, runs no controllers and collects no garbage.
Whoever drives it plays those parts (see ``docs/local-kubelet.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, Final

import kmock
import kopf

from gocd_ha_operator.controller.handlers import OperatorConfig, build_registry

#: Every resource the operator (and kopf's discovery) touches, with its kind.
CHILD_RESOURCES: Final[dict[str, str]] = {
    "v1/secrets": "Secret",
    "v1/configmaps": "ConfigMap",
    "v1/services": "Service",
    "v1/persistentvolumeclaims": "PersistentVolumeClaim",
    "v1/pods": "Pod",
    "apps/v1/statefulsets": "StatefulSet",
    "apps/v1/deployments": "Deployment",
    "policy/v1/poddisruptionbudgets": "PodDisruptionBudget",
    "networking.k8s.io/v1/networkpolicies": "NetworkPolicy",
    "batch/v1/jobs": "Job",
    "coordination.k8s.io/v1/leases": "Lease",
    "v1/serviceaccounts": "ServiceAccount",
    "rbac.authorization.k8s.io/v1/roles": "Role",
    "rbac.authorization.k8s.io/v1/rolebindings": "RoleBinding",
}
#: Resources whose merge patches carrying ``metadata.resourceVersion`` are preconditions, as on a
#: real API server (409 Conflict when the version moved): the Leases' compare-and-swap.
PRECONDITIONED_RESOURCES: Final = frozenset({"leases"})
CLUSTER_RESOURCE: Final = "gocdha.io/v1alpha1/gocdhaclusters"
ALL_VERBS: Final = ["get", "list", "watch", "create", "patch", "update", "delete"]


def resource_version_conflict() -> Exception:
    """What a real API server answers to a write whose ``resourceVersion`` precondition failed."""
    error: Exception = kmock.KubernetesError(
        status=409,
        reason="Conflict",
        message="the object has been modified; please apply your changes to the latest version",
    )
    return error


class OperatorEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the bookkeeping kopf relies on and kmock leaves out:

    * ``metadata.resourceVersion`` changes on every write (kopf compares versions to tell its own
      patches' echoes from new changes, and waits for a newer version after a patch);
    * ``metadata.generation`` increases when a write touches ``spec``;
    * ``metadata.generateName`` names new objects (kopf's Events use it);
    * new objects get a ``uid`` and a ``creationTimestamp`` (owner references need the uid);
    * a watch that starts from a list's ``resourceVersion`` does not send again what that list
      returned, as an API server streams only what changed after it: kmock replays every object
      as ``ADDED``, and kopf, seeing a resource created just before its watch started twice (the
      second time without the finalizer it had just added), patched the finalizer twice — the
      third kopf patch issue #16's benchmark counted at N = 1.

    Optimistic concurrency is not emulated: a JSON patch's ``resourceVersion`` test always passes.

    kmock matches every request against its request history: each of its reactions walks the
    history from the oldest request until it meets the one being served, so the cost of a request
    grows with the history's length. This class keeps in kmock's history only the requests still
    being served (each must be found there when it is matched) and its own compact logs for
    counting: ``(method, path)`` in :attr:`request_log`, and the field manager of every write in
    :attr:`write_log`.
    """

    _counter: int = 0
    #: Seconds each request waits before it is served (none by default): the round trip of an
    #: API server across a network, without its CPU cost (benchmarks).
    latency: float = 0.0

    @classmethod
    def _next(cls) -> int:
        cls._counter += 1
        return cls._counter

    def _stored(self, request: Any) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        raw: dict[str, Any] = self.objects[key].raw
        return raw

    @property
    def request_log(self) -> list[tuple[str, str]]:
        """Every request served, as ``(METHOD, path)``, oldest first."""
        log: list[tuple[str, str]] = self.__dict__.setdefault("_compact_log", [])
        return log

    @property
    def write_log(self) -> list[tuple[str, str, str | None]]:
        """Every write served (any method but GET), as ``(METHOD, path, fieldManager)``."""
        log: list[tuple[str, str, str | None]] = self.__dict__.setdefault("_write_log", [])
        return log

    @property
    def _in_flight(self) -> dict[int, Any]:
        """The requests being served now, by ``id``."""
        served: dict[int, Any] = self.__dict__.setdefault("_in_flight_requests", {})
        return served

    @property
    def access_log(self) -> list[tuple[str, str, bool, str]]:
        """Every request served, as ``(METHOD, path, is_watch, User-Agent)``: what RBAC has to
        allow, and who asked (kopf and the Kubernetes client, or a test acting as a user)."""
        log: list[tuple[str, str, bool, str]] = self.__dict__.setdefault("_access_log", [])
        return log

    @staticmethod
    def _check_precondition(request: Any, data: Any, stored: dict[str, Any] | None) -> None:
        if getattr(request.resource, "plural", None) not in PRECONDITIONED_RESOURCES:
            return
        if not isinstance(data, dict) or stored is None:
            return
        wanted = (data.get("metadata") or {}).get("resourceVersion")
        current = stored.get("metadata", {}).get("resourceVersion")
        if wanted is not None and str(wanted) != str(current):
            raise resource_version_conflict()

    async def _handle(self, request: Any) -> Any:
        data = getattr(request, "data", None)
        method = str(getattr(request, "method", "")).upper()
        self.request_log.append((method.rsplit(".", 1)[-1], str(request.url.path)))
        watch = str(request.url.query.get("watch", "")).lower() in {"true", "1"}
        agent = str((getattr(request, "headers", None) or {}).get("User-Agent", ""))
        self.access_log.append((method.rsplit(".", 1)[-1], str(request.url.path), watch, agent))
        if not method.endswith("GET"):
            manager = request.url.query.get("fieldManager")
            verb, path = method.rsplit(".", 1)[-1], str(request.url.path)
            self.write_log.append((verb, path, str(manager) if manager else None))
        in_flight = self._in_flight
        in_flight[id(request)] = request
        # kmock's matching walks this list (under no await): what is served no more can go.
        history: list[Any] = self._requests
        history[:] = [r for r in history if id(r) in in_flight]
        try:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            return await self._serve(request, data, method)
        finally:
            in_flight.pop(id(request), None)

    @property
    def _listed(self) -> dict[str, set[tuple[str, str, str]]]:
        """What each list returned, by the ``resourceVersion`` it answered with: ``(namespace,
        name, resourceVersion)`` of every object, until a watch starts from it."""
        listed: dict[str, set[tuple[str, str, str]]] = self.__dict__.setdefault("_lists", {})
        return listed

    @staticmethod
    def _listed_key(obj: Any) -> tuple[str, str, str]:
        meta = (obj.get("metadata") if isinstance(obj, dict) else None) or {}
        return (
            str(meta.get("namespace")),
            str(meta.get("name")),
            str(meta.get("resourceVersion")),
        )

    async def _serve_list(self, request: Any) -> Any:
        payload: Any = await super()._serve_list(request)
        if not isinstance(payload, dict):
            return payload
        token = f"list-{self._next()}"
        self._listed[token] = {self._listed_key(item) for item in payload.get("items") or []}
        payload["metadata"] = {**(payload.get("metadata") or {}), "resourceVersion": token}
        return payload

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        since = str(request.url.query.get("resourceVersion", ""))
        listed = self._listed.pop(since, set())
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and event.get("type") == "ADDED" and listed:
                key = self._listed_key(event.get("object"))
                if key in listed:
                    listed.discard(key)  # the list returned it as it is: not sent again
                    continue
            yield event

    async def _serve(self, request: Any, data: Any, method: str) -> Any:
        version = str(self._next())
        if method.endswith("POST") and isinstance(data, dict):
            metadata = data.setdefault("metadata", {})
            if metadata.get("generateName") and not metadata.get("name"):
                metadata["name"] = f"{metadata['generateName']}{version}"
            metadata["resourceVersion"] = version
            metadata.setdefault("generation", 1)
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault(
                "creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
        elif method.endswith(("PATCH", "PUT")) and request.resource is not None and request.name:
            stored = self._stored(request)
            self._check_precondition(request, data, stored)
            if isinstance(data, dict):
                metadata = (
                    data.setdefault("metadata", {})
                    if isinstance(data.get("metadata"), dict) or "metadata" not in data
                    else {}
                )
                metadata["resourceVersion"] = version
                if "spec" in data and not getattr(request, "subresource", None) and stored:
                    current = int(stored.get("metadata", {}).get("generation") or 1)
                    metadata.setdefault("generation", current + 1)
            elif isinstance(data, list):
                # JSON patches: optimistic-concurrency "test" ops always pass here (the emulator
                # serialises every write), then the version moves on like any other write.
                data[:] = [
                    op
                    for op in data
                    if not (
                        op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion"
                    )
                ]
                data.append(
                    {"op": "replace", "path": "/metadata/resourceVersion", "value": version}
                )
        return await super()._handle(request)


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """Make the emulator's discovery serve what kopf needs before it starts watching."""
    info = kmock.ResourceInfo
    read = ["list", "watch", "get"]
    resources = emulator.resources
    resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs=read
    )
    resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs=read)
    resources[CLUSTER_RESOURCE] = info(
        kind="GoCDHACluster",
        singular="gocdhacluster",
        shortnames=["gocdha"],
        categories=["gocd"],
        namespaced=True,
        subresources=["status"],
        verbs=ALL_VERBS,
    )
    resources["v1/events"] = info(kind="Event", namespaced=True, verbs=ALL_VERBS)
    for resource, kind in CHILD_RESOURCES.items():
        resources[resource] = info(kind=kind, namespaced=True, verbs=ALL_VERBS)


def emulator_settings(settings: kopf.OperatorSettings) -> None:
    """kopf settings for the emulator. The consistency timeout is kopf's default (5 s): the
    emulator gives every write a new ``resourceVersion``, so kopf waits only until the echo of its
    own patch arrives; a shorter one (0.05 s) let kopf act on a stale body and create the children
    a second time (issue #16's request counts). Short queue and exit timeouts keep test stops
    fast."""
    settings.persistence.consistency_timeout = 5.0
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    settings.background.instant_exit_timeout = 0.5


@contextlib.asynccontextmanager
async def running_emulator() -> AsyncIterator[tuple[OperatorEmulator, str]]:
    """An emulator serving on a loopback port: ``(emulator, base_url)``."""
    async with OperatorEmulator() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        yield emulator, str(emulator.url).rstrip("/")


class OperatorThread:
    """The operator in its own thread and event loop, as in production.

    kopf treats every task of its event loop as its own when it exits, so it must not share a loop
    with the API emulator (or anything else the caller runs).
    """

    def __init__(self, config: OperatorConfig, *, namespaces: Iterable[str] = ()) -> None:
        self._config = config
        self._namespaces = list(namespaces)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, name="operator", daemon=True)

    def _serve(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=build_registry(self._config),
                    clusterwide=not self._namespaces,
                    namespaces=self._namespaces,
                    standalone=True,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                    memo=kopf.Memo(),
                )
            )
        except BaseException as exc:
            self.errors.append(exc)

    async def start(self, timeout: float = 15) -> None:
        self._thread.start()
        if not await asyncio.to_thread(self._ready.wait, timeout):
            raise RuntimeError(f"the operator did not start within {timeout} s: {self.errors}")

    async def stop(self, timeout: float = 20) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the operator did not stop within {timeout} s")
        if self.errors:
            raise RuntimeError(f"the operator failed: {self.errors[0]!r}") from self.errors[0]
