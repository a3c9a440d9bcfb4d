"""A local kubelet: StatefulSets and Deployments in a Kubernetes API become local processes.

Why it exists: the operator's job is to drive real Postgres instances through Kubernetes objects.
Without a cluster (the ``demo`` command on a laptop, the promotion tests in CI) the API is kmock's
in-process emulator, which stores objects but runs nothing. This module plays the node: it polls
the StatefulSets and Deployments of one namespace and makes local processes match them, so the
operator's writes (replicas, ConfigMap roles, pod templates) have the effects they have on a node.

What a workload becomes:

* a StatefulSet or Deployment with ``replicas >= 1`` -> one local pod ``<name>-0``: its volumes
  materialised as directories, then its init containers one at a time, in order, each to
  completion (a failing one is retried with back-off and the containers wait), then **every**
  container, sidecars included, each as its own process group run as an unprivileged OS user,
  with its env resolved (plain values, ``configMapKeyRef``/``secretKeyRef`` read from the API **at
  container start**, ``fieldRef`` for the pod's name/namespace/IP). Container paths in the env
  and command are rewritten to the volumes' directories (see ``docs/local-kubelet.md``); each
  declared container port gets a loopback port of its own;
* a Deployment's first container (the GoCD server) is the stand-in GoCD server (health endpoint
  only, see :mod:`gocd_ha_operator.local.standin_gocd`), run as a process like any container;
* every container gets in-cluster API access: ``KUBERNETES_SERVICE_HOST``/``_PORT`` lead to a
  per-pod HTTPS proxy in front of the kubelet's own API URL, and the ServiceAccount volume (token,
  namespace, ca.crt) is mounted unless the pod opts out. A test can cut one pod off the API
  (:meth:`LocalKubelet.cut_api`, :mod:`gocd_ha_operator.local.apiproxy`);
* ``replicas == 0`` or a deleted workload -> the pod is stopped, all containers at once (Postgres:
  fast shutdown, bounded by ``terminationGracePeriodSeconds``, then SIGKILL of the groups);
* a changed pod template -> the pod is replaced (stop, fresh emptyDirs, start): a rollout;
* a container that exits on its own -> that container is restarted with a short exponential
  back-off (``restartPolicy: Always``), unless the pod is *held* (see :meth:`LocalKubelet.kill`).

Ports are allocated per workload name on first sight (or up front with
:meth:`LocalKubelet.reserve_cluster`) and never change for the life of the kubelet, so the
``GOCDHA_ENDPOINTS`` map (:meth:`LocalKubelet.endpoints`) can be handed to the operator before any
pod runs. Services are resolved by their selectors against the workloads' pod-template labels.

Event loop: the kubelet is asyncio code that runs as a background task **in the caller's event
loop** (``async with LocalKubelet(...)``), the same loop as the API emulator. It must not share a
loop with kopf, because kopf cancels every task of its loop when it exits: run the operator in its
own thread, as ``tests/emulator/conftest.py`` does. :meth:`LocalKubelet.endpoints`,
:attr:`LocalKubelet.endpoint_map`, :meth:`LocalKubelet.running` and :meth:`LocalKubelet.pod_log`
only read, and may be called from any thread (the operator's thread reads ``endpoint_map``).

Secrets: Secret values are written only to 0600 files owned by the OS user; they are never logged,
never put in an environment variable by the kubelet itself, and never in a command line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import aiohttp

from gocd_ha_operator.api.constants import (
    ENV_ENDPOINTS,
    ENV_PEER_HOST,
    ENV_PEER_PORT,
    ENV_PG_BINDIR,
    ENV_PORT,
    ENV_SERVICE_ACCOUNT_DIR,
    GOCD_DATA_DIR,
    GOCD_HTTP_PORT,
    POSTGRES_PORT,
    SIDES,
)
from gocd_ha_operator.kube.apply import resource_path
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.local.apiproxy import ApiProxy, CutMode, TlsUnavailableError, make_certificate
from gocd_ha_operator.local.process import (
    LOOPBACK,
    ProcessGroup,
    default_os_user,
    find_pg_bindir,
    free_port,
    give_to,
    user_command,
)
from gocd_ha_operator.local.standin_gocd import ensure_config

logger = logging.getLogger(__name__)

Kind = Literal["StatefulSet", "Deployment", "Job"]
KINDS: Final[tuple[Kind, Kind]] = ("StatefulSet", "Deployment")

#: The PATH of a local container: the host's standard directories (the image's are not there).
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Kubernetes' default ``terminationGracePeriodSeconds``.
DEFAULT_GRACE_SECONDS: Final = 30.0
#: Where a container writes its termination message unless its spec says otherwise.
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
#: Kubernetes keeps at most this much of a termination message.
TERMINATION_MESSAGE_LIMIT: Final = 4096
#: Environment variables naming a Service's host and port that a node's DNS would resolve: the
#: instance's peer, and the instance a backup Job copies from. The host keeps the Service name
#: (clients verify TLS certificates against it); its address goes into ``<host variable>ADDR``,
#: which the scripts hand to libpq as ``hostaddr``.
SERVICE_ADDRESS_VARIABLES: Final = (
    (ENV_PEER_HOST, ENV_PEER_PORT),
    ("GOCDHA_BACKUP_HOST", "GOCDHA_BACKUP_PORT"),
)
#: Crash back-off: 0.5 s doubling up to 10 s (Kubernetes goes to 5 minutes; too slow for a demo).
#: How often a running pod's ConfigMap and Secret volumes are refreshed (a real kubelet's
#: ``syncFrequency`` is one minute; its cache may add up to another).
VOLUME_REFRESH_SECONDS: Final = 60.0
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 10.0
#: How long ``close()`` waits for a graceful stop before it kills.
CLOSE_GRACE_SECONDS: Final = 10.0
HTTP_TIMEOUT_SECONDS: Final = 10.0
#: What a sync reads and therefore watches (an event starts the next sync at once).
WATCHED_KINDS: Final = (
    ("v1", "Service"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
)
#: How long one watch request lasts (the server ends it), and the pause before watching again.
WATCH_SECONDS: Final = 300
WATCH_RETRY_SECONDS: Final = 1.0
#: The entrypoint's listen address variable (docs/postgres-instances.md); not in the pod template.
ENV_LISTEN_ADDRESSES: Final = "GOCDHA_LISTEN_ADDRESSES"

#: The stand-in GoCD server's process (``-m`` would warn: ``local`` imports the module already).
STANDIN_MAIN: Final = (
    "import sys; from gocd_ha_operator.local.standin_gocd import main; sys.exit(main(sys.argv[1:]))"
)
#: Where Kubernetes mounts a pod's ServiceAccount token, namespace and CA.
SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_VOLUME: Final = "kube-api-access"
#: Listen addresses that mean "this pod's address" (rewritten by ``_rewrite_port``).
BIND_ANY: Final = frozenset({"0.0.0.0", "::", "[::]", "", "127.0.0.1", "localhost"})  # noqa: S104

SECRET_FILE_MODE: Final = 0o600
CONFIG_FILE_MODE: Final = 0o444
PRIVATE_DIR_MODE: Final = 0o700


class PodSpecError(Exception):
    """The pod template asks for something the local kubelet cannot provide (reported in the pod's
    log, retried with back-off like a ``CreateContainerConfigError``)."""


class ApiError(Exception):
    """The Kubernetes API answered with an error status."""

    def __init__(self, status: int, what: str) -> None:
        self.status = status
        super().__init__(f"{status} for {what}")


@dataclass
class _Container:
    """One container (or init container) of the current pod and its process."""

    name: str
    spec: dict[str, Any]
    init: bool = False
    #: The GoCD server container of a Deployment: run as the stand-in GoCD server.
    standin: bool = False
    process: ProcessGroup | None = None
    pgdata: Path | None = None
    restarts: int = 0
    next_start: float = 0.0
    #: An init container that exited 0.
    completed: bool = False

    def alive(self) -> bool:
        return self.process is not None and not self.process.exited()

    def ports(self) -> list[tuple[int, str | None]]:
        return [(int(p["containerPort"]), p.get("name")) for p in self.spec.get("ports") or []]


PodPhase = Literal["Stopped", "Init", "Running"]


@dataclass
class _Pod:
    """Ordinal 0 of one workload: its stable ports, its latest object, and its local runtime."""

    kind: Kind
    name: str
    port: int
    obj: dict[str, Any] | None = None
    phase: PodPhase = "Stopped"
    init_containers: list[_Container] = field(default_factory=list)
    containers: list[_Container] = field(default_factory=list)
    volumes: _Volumes | None = None
    template_hash: str | None = None
    held: bool = False
    #: Pod-level start failures (volumes, API reads): back-off before creating the pod again.
    restarts: int = 0
    next_start: float = 0.0
    warned_replicas: bool = False
    grace: float = DEFAULT_GRACE_SECONDS
    #: containerPort -> loopback port, for every port but the first container's first (``port``).
    extra_ports: dict[int, int] = field(default_factory=dict)
    api: ApiProxy | None = None
    #: A Job's pod ran to its end (Jobs are run once; the result is written back to the API).
    job_done: bool = False

    @property
    def pod_name(self) -> str:
        # A Deployment's pods have generated names; one stable name is enough locally.
        return f"{self.name}-0"

    @property
    def replicas(self) -> int:
        if self.obj is None:
            return 0
        if self.kind == "Job":
            return 0 if self.job_done or _job_finished(self.obj) else 1
        value = (self.obj.get("spec") or {}).get("replicas", 1)
        return int(value) if value is not None else 1

    @property
    def template(self) -> dict[str, Any]:
        assert self.obj is not None
        template: dict[str, Any] = self.obj["spec"]["template"]
        return template

    def template_containers(self) -> list[dict[str, Any]]:
        if self.obj is None:
            return []
        return list((self.template.get("spec") or {}).get("containers") or [])

    def main_port(self) -> int | None:
        """The first port of the first container: the one ``port`` stands for."""
        containers = self.template_containers()
        ports = (containers[0].get("ports") or []) if containers else []
        return int(ports[0]["containerPort"]) if ports else None

    def local_port(self, container_port: int) -> int:
        """The loopback port standing for ``container_port`` (allocated once, then stable)."""
        if container_port == self.main_port():
            return self.port
        if container_port not in self.extra_ports:
            self.extra_ports[container_port] = free_port()
        return self.extra_ports[container_port]

    def target_port(self, target: int | str) -> int | None:
        """The loopback port of a Service's ``targetPort`` (a number or a port name)."""
        for container in self.template_containers():
            for port in container.get("ports") or []:
                number = int(port["containerPort"])
                if target == port.get("name") or str(target) == str(number):
                    return self.local_port(number)
        return None

    def labels(self) -> dict[str, str]:
        if self.obj is None:
            return {}
        return dict((self.template.get("metadata") or {}).get("labels") or {})

    def all_containers(self) -> list[_Container]:
        return [*self.init_containers, *self.containers]

    def is_running(self) -> bool:
        """The pod is past its init containers and its first container runs."""
        return self.phase == "Running" and bool(self.containers) and self.containers[0].alive()


def _template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _Mount:
    container_path: str
    local_path: Path


def _rewrite_path(value: str, mounts: list[_Mount]) -> str:
    """``value`` with a container mount path prefix replaced by the local directory."""
    for mount in mounts:  # longest container path first
        prefix = mount.container_path.rstrip("/")
        if value == prefix:
            return str(mount.local_path)
        if value.startswith(prefix + "/"):
            return str(mount.local_path) + value[len(prefix) :]
    return value


@dataclass
class _Volumes:
    """Where a pod's volumes live locally, by volume name."""

    dirs: dict[str, Path] = field(default_factory=dict)
    #: Directory volumes (emptyDir, claims), where a missing ``subPath`` is created.
    writable: set[str] = field(default_factory=set)
    #: The ServiceAccount volume (token, namespace, ca.crt), if the pod automounts it.
    service_account: Path | None = None


def _rewrite_port(value: str, ports: Mapping[int, int]) -> str:
    """``<any address>:<containerPort>`` -> ``127.0.0.1:<local port>``, for the container's own
    declared ports: a listen address such as the sync agent's ``--listen 0.0.0.0:8155``. Pods
    share loopback here, so each keeps its port by getting a local one of its own."""
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and host in BIND_ANY and int(port) in ports:
        return f"{LOOPBACK}:{ports[int(port)]}"
    return value


def _projects_token(spec: Mapping[str, Any]) -> bool:
    """Whether a projected volume asks for the pod's token (the instance guard's, issue #12)."""
    return any(
        "serviceAccountToken" in source
        for volume in spec.get("volumes") or []
        for source in (volume.get("projected") or {}).get("sources") or []
    )


def _automount(spec: Mapping[str, Any]) -> bool:
    """``automountServiceAccountToken`` of the pod (default true). The ServiceAccount's own field
    is not read: a pod that should not get a token says so itself, as this project's pods do."""
    return spec.get("automountServiceAccountToken") is not False


class EndpointMap(Mapping[str, Endpoint]):
    """A live, read-only view of the kubelet's endpoints, for ``OperatorConfig(endpoints=...)``.

    Every lookup reads the kubelet's latest snapshot (a dict replaced as a whole, never mutated),
    so the operator's thread can use it while the kubelet's loop updates it.
    """

    def __init__(self, kubelet: LocalKubelet) -> None:
        self._kubelet = kubelet

    def __getitem__(self, key: str) -> Endpoint:
        return self._kubelet._endpoint_snapshot[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._kubelet._endpoint_snapshot))

    def __len__(self) -> int:
        return len(self._kubelet._endpoint_snapshot)


class LocalKubelet:
    """Makes local processes match the StatefulSets and Deployments of one namespace."""

    def __init__(
        self,
        api_url: str,
        namespace: str,
        *,
        work_root: Path | None = None,
        pg_bindir: Path | None = None,
        os_user: str | None = None,
        interval: float = 0.2,
        clusters: Iterable[str] = (),
        keep_files: bool = False,
        volume_refresh_interval: float = VOLUME_REFRESH_SECONDS,
    ) -> None:
        """
        ``work_root``: parent of the kubelet's own temporary work dir (default: the system temp
        dir); only that work dir is removed by :meth:`close`, never ``work_root``.
        ``pg_bindir``: Postgres binaries (default: ``GOCDHA_PG_BINDIR`` or the newest
        ``/usr/lib/postgresql/*/bin``). ``os_user``: who runs the pods (default: ``postgres`` as
        root, else the current user). ``clusters``: names of ``GoCDHACluster`` resources whose
        instance Services get endpoints up front (see :meth:`reserve_cluster`).
        ``keep_files``: leave the work dir behind on close (for debugging).
        ``volume_refresh_interval``: how often the ConfigMap, Secret and projected volumes of
        running pods are brought up to date (a real kubelet: its sync period, about a minute).
        """
        self.api_url = api_url.rstrip("/")
        self.namespace = namespace
        self.interval = interval
        self.os_user = os_user or default_os_user()
        bindir = pg_bindir or find_pg_bindir()
        self.pg_bindir = bindir
        self.keep_files = keep_files
        self.volume_refresh_interval = volume_refresh_interval
        self._next_volume_refresh = time.monotonic() + volume_refresh_interval
        self.work_dir = Path(tempfile.mkdtemp(prefix="gocdha-kubelet-", dir=work_root))
        # Traversable by the OS user the pods run as; nothing secret lives directly in it.
        self.work_dir.chmod(0o755)
        for sub in ("claims", "pods", "logs"):
            (self.work_dir / sub).mkdir(mode=0o755)
        self._pods: dict[tuple[Kind, str], _Pod] = {}
        #: Pods whose workload wants no replica, being stopped: each on its own, as a node's pod
        #: workers do, so a slow stop (a GoCD server's grace period) never holds up the sync that
        #: stops or starts another pod (a switchover scales its old primary down while the old
        #: GoCD server still stops, issue #16).
        self._terminating: dict[tuple[Kind, str], asyncio.Task[None]] = {}
        self._services: dict[str, dict[str, Any]] = {}
        self._reserved: dict[str, Endpoint] = {}
        self._endpoint_snapshot: dict[str, Endpoint] = {}
        self._started_groups: list[int] = []
        self._certificate: tuple[Path, Path] | None = None
        self._certificate_lock = asyncio.Lock()
        self._python_user: str | None = None
        #: Held while the OS user is probed: pods start concurrently, and a second container must
        #: wait for the answer instead of running as a user that cannot run this Python.
        self._python_user_lock = threading.Lock()
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        #: Watches of the kinds a sync reads: an event starts the next sync at once (a Service
        #: moved by a promotion, a StatefulSet scaled), as kube-proxy and a kubelet react to
        #: events; the interval stays the fallback.
        self._watches: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        #: A Service changed: its endpoints are refreshed from a fresh list of Services at once,
        #: without waiting for a sync that may be busy starting or stopping a pod.
        self._services_changed = asyncio.Event()
        #: Lists of Services are numbered as they start; only a list started later than the one
        #: in force replaces it (a sync's list may be answered after a newer quick one).
        self._list_number = 0
        self._services_number = 0
        self._closed = False
        for cluster in clusters:
            self.reserve_cluster(cluster)

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start polling in the background (in the running event loop)."""
        if self._closed:
            raise RuntimeError("this LocalKubelet is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="local-kubelet")
            self._watches = [
                asyncio.create_task(self._watch(api_version, kind), name=f"local-kubelet-{kind}")
                for api_version, kind in WATCHED_KINDS
            ]
            self._watches.append(
                asyncio.create_task(self._follow_services(), name="local-kubelet-endpoints")
            )

    async def close(self) -> None:
        """Stop every pod (gracefully, then SIGKILL), stop polling, remove the work dir.

        Safe to call twice and after a failed start; processes are killed even if a graceful
        stop raises."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        watches, self._watches = self._watches, []
        for running in [task, *watches]:
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        try:
            async with self._lock:
                await asyncio.gather(*self._terminating.values(), return_exceptions=True)
                await asyncio.gather(
                    *(self._stop(pod, grace=CLOSE_GRACE_SECONDS) for pod in self._pods.values()),
                    return_exceptions=True,
                )
        finally:
            for pod in self._pods.values():
                for container in pod.all_containers():
                    if container.process is not None:
                        container.process.reap()
                        container.process = None
                if pod.api is not None:
                    with contextlib.suppress(Exception):
                        await pod.api.close()
                    pod.api = None
            if self._session is not None:
                await self._session.close()
                self._session = None
            if not self.keep_files:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    async def _run(self) -> None:
        while True:
            # Cleared before the sync: a change that arrives while it runs starts the next one.
            self._changed.clear()
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API may be briefly unavailable; keep going
                logger.warning("local kubelet: sync failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self.interval)

    async def _watch(self, api_version: str, kind: str) -> None:
        """Watch one kind in the namespace; every event wakes the sync loop (which lists
        everything again, after the change: what it acts on never comes from the event)."""
        path = resource_path(api_version, kind, self.namespace)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_SECONDS + 10)
        while True:
            try:
                async with self._http().get(
                    self.api_url + path,
                    params={"watch": "true", "timeoutSeconds": str(WATCH_SECONDS)},
                    timeout=timeout,
                ) as response:
                    if response.status < 300:
                        async for line in response.content:
                            if line.strip():
                                self._changed.set()
                                if kind == "Service":
                                    self._services_changed.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the interval still syncs; watch again shortly
                logger.debug("local kubelet: watching %s failed: %s", kind, exc)
            await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _follow_services(self) -> None:
        """After each Service event: list the Services and refresh the endpoints (the pods' labels
        and ports are what the last sync left)."""
        while True:
            await self._services_changed.wait()
            self._services_changed.clear()
            number = self._next_list_number()
            try:
                services = await self._list("v1", "Service")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next sync lists them anyway
                logger.debug("local kubelet: listing Services failed: %s", exc)
                continue
            self._store_services(services, number)

    def _next_list_number(self) -> int:
        self._list_number += 1
        return self._list_number

    def _store_services(self, services: list[dict[str, Any]], number: int) -> None:
        """Take a list of Services started as ``number``, unless a later one is in force."""
        if number <= self._services_number:
            return
        self._services_number = number
        self._services = {s["metadata"]["name"]: s for s in services}
        self._refresh_endpoints()

    # --- public API -----------------------------------------------------------------------------

    def reserve_cluster(self, cluster: str) -> None:
        """Fix the ports of a cluster's four instance workloads now, and publish endpoints for their
        Services by name, before any of those objects exist (the operator needs its endpoint map
        when it starts, and creates the Services later)."""
        names = ChildNames(cluster)
        for side in SIDES:
            sts = self._pod("StatefulSet", names.postgres_statefulset(side))
            self._reserved[self._key(names.postgres_instance_service(side), POSTGRES_PORT)] = (
                Endpoint(LOOPBACK, sts.port)
            )
            gocd = self._pod("Deployment", names.gocd_deployment(side))
            self._reserved[self._key(names.gocd_side_service(side), GOCD_HTTP_PORT)] = Endpoint(
                LOOPBACK, gocd.port
            )
        self._refresh_endpoints()

    def endpoints(self) -> dict[str, str]:
        """A snapshot in the ``GOCDHA_ENDPOINTS`` shape: ``{"<ns>/<svc>:<port>": "127.0.0.1:<p>"}``.

        Contains the reserved instance Services and every Service in the namespace whose selector
        matches a workload's pod labels on one of its containers' ports. For a map that follows
        later changes, use :attr:`endpoint_map`."""
        return {key: str(value) for key, value in self._endpoint_snapshot.items()}

    def endpoints_json(self) -> str:
        """:meth:`endpoints` as the JSON value of ``GOCDHA_ENDPOINTS``."""
        return json.dumps(self.endpoints(), sort_keys=True)

    @property
    def endpoint_map(self) -> EndpointMap:
        """A live ``Mapping[str, Endpoint]`` for ``OperatorConfig(endpoints=...)``."""
        return EndpointMap(self)

    def port(self, name: str) -> int:
        """The loopback port of the workload ``name`` (stable for the life of the kubelet)."""
        return self._find(name).port

    def running(self, name: str) -> bool:
        """Whether the pod of workload ``name`` has a live process (or a serving stand-in).

        Running is not ready: there are no probes (a Postgres pod may still be in initdb)."""
        return self._find(name).is_running()

    def held(self, name: str) -> bool:
        return self._find(name).held

    def pod_log(self, name: str) -> str:
        """Everything the pod's containers wrote, across restarts, with the kubelet's own lines
        (``==== ...``) marking starts, stops and exits."""
        try:
            return self._log_path(self._find(name)).read_text(errors="replace")
        except OSError:
            return ""

    def claim_dir(self, claim: str) -> Path:
        """The directory standing for the PersistentVolumeClaim ``claim`` (created when missing,
        owned by the OS user): data survives pod stops and restarts, like a bound volume. Tests and
        the demo use it to inspect or pre-provision a volume."""
        path = self.work_dir / "claims" / claim
        if not path.exists():
            path.mkdir(mode=PRIVATE_DIR_MODE)
            give_to(path, self.os_user)
        return path

    def process_groups(self) -> list[int]:
        """Every process group id this kubelet ever started (for leak checks)."""
        return list(self._started_groups)

    def container_running(self, name: str, container: str) -> bool:
        """Whether the container ``container`` of workload ``name``'s pod has a live process (an
        init container only while it runs)."""
        pod = self._find(name)
        return any(c.name == container and c.alive() for c in pod.all_containers())

    def container_restarts(self, name: str, container: str) -> int:
        """How often ``container`` of the current pod was restarted after it exited or failed
        (Kubernetes' ``restartCount``; a new pod starts again at 0)."""
        pod = self._find(name)
        return next((c.restarts for c in pod.all_containers() if c.name == container), 0)

    def api_port(self, name: str) -> int | None:
        """The loopback port of the pod's API proxy (its ``KUBERNETES_SERVICE_PORT``), once the
        pod was created."""
        api = self._find(name).api
        return api.port if api is not None else None

    async def cut_api(self, name: str, mode: CutMode = "refuse") -> None:
        """Cut the pod of workload ``name`` off the Kubernetes API until :meth:`heal_api`.

        Only this pod's containers lose the API: other pods, the operator and the kubelet keep it.
        ``refuse``: connections are refused and open ones (watches) reset. ``blackhole``: requests
        hang, unanswered, until the heal resets them (a partition seen through client timeouts).
        Survives pod restarts: a cut pod's new containers are cut too."""
        pod = self._find(name)
        async with self._lock:
            api = await self._api_proxy(pod)
            await api.cut(mode)
            self._log(pod, f"API access cut ({mode})")

    async def heal_api(self, name: str) -> None:
        """Give the pod of workload ``name`` its API access back (same address, same token)."""
        pod = self._find(name)
        async with self._lock:
            if pod.api is not None and pod.api.mode is not None:
                await pod.api.heal()
                self._log(pod, "API access healed")

    async def kill(self, name: str) -> None:
        """Crash the pod: SIGKILL the process groups of all its containers, and **hold** it: the
        kubelet will not start it again, whatever ``replicas`` says, until :meth:`resume`. This is
        a lost node, for tests of failover; the next start is a new pod."""
        async with self._lock:
            pod = self._find(name)
            pod.held = True
            await self._terminated(pod, cancel=True)  # a crash does not wait for a graceful stop
            self._log(pod, "killed (SIGKILL of every container); held until resumed")
            for container in pod.all_containers():
                if container.process is not None:
                    container.process.reap()
                    container.process = None
            self._stopped(pod)

    async def pause(self, name: str) -> None:
        """Stop the pod gracefully and hold it until :meth:`resume` (a drained node)."""
        async with self._lock:
            pod = self._find(name)
            pod.held = True
            await self._terminated(pod)
            await self._stop(pod)

    async def resume(self, name: str) -> None:
        """Release a held pod: the next sync starts it again if its workload wants a replica."""
        async with self._lock:
            pod = self._find(name)
            pod.held = False
            pod.restarts = 0
            pod.next_start = 0.0
            self._log(pod, "resumed")

    async def sync(self) -> None:
        """One convergence pass: read the workloads and Services, start/stop/restart pods."""
        async with self._lock:
            number = self._next_list_number()
            statefulsets, deployments, jobs, services = await asyncio.gather(
                self._list("apps/v1", "StatefulSet"),
                self._list("apps/v1", "Deployment"),
                self._list("batch/v1", "Job"),
                self._list("v1", "Service"),
            )
            seen: set[tuple[Kind, str]] = set()
            workloads = (("StatefulSet", statefulsets), ("Deployment", deployments), ("Job", jobs))
            for kind, objects in workloads:
                for obj in objects:
                    pod = self._pod(kind, obj["metadata"]["name"])  # type: ignore[arg-type]
                    pod.obj = obj
                    seen.add((pod.kind, pod.name))
            for key, pod in self._pods.items():
                if key not in seen:
                    pod.obj = None  # deleted (or never created): no replicas wanted
            self._store_services(services, number)
            self._refresh_endpoints()  # the pods may have changed even if the Services did not
            await asyncio.gather(*(self._converge(pod) for pod in list(self._pods.values())))
            if time.monotonic() >= self._next_volume_refresh:
                self._next_volume_refresh = time.monotonic() + self.volume_refresh_interval
                await self._refresh_volumes()

    # --- convergence ----------------------------------------------------------------------------

    @staticmethod
    def _backoff(restarts: int) -> float:
        return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (restarts - 1)))

    def _terminate(self, pod: _Pod) -> None:
        """Stop ``pod`` in a task of its own (see ``_terminating``); the sync after it ends sees
        it stopped."""
        key = (pod.kind, pod.name)

        async def stop() -> None:
            try:
                await self._stop(pod)
            except Exception as exc:  # as a failed sync was: logged, the next sync goes on
                logger.warning("local kubelet: stopping %s failed: %s", pod.name, exc)
            finally:
                self._terminating.pop(key, None)
                self._changed.set()

        self._terminating[key] = asyncio.create_task(stop(), name=f"local-kubelet-stop-{pod.name}")

    async def _terminated(self, pod: _Pod, *, cancel: bool = False) -> None:
        """Until a stop ``_terminate`` started for ``pod`` (if any) has ended; ``cancel``: end it
        now (its processes are left to the caller)."""
        task = self._terminating.get((pod.kind, pod.name))
        if task is not None:
            if cancel:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _converge(self, pod: _Pod) -> None:
        if (pod.kind, pod.name) in self._terminating:
            return  # its stop runs; the sync after it converges it
        if pod.kind == "Job" and pod.phase == "Running":
            await self._finish_job_if_done(pod)
        if pod.phase == "Running" and pod.kind != "Job":
            for container in pod.containers:
                if container.process is not None and container.process.exited():
                    code = container.process.reap()
                    container.process = None
                    container.restarts += 1  # restartPolicy: Always, one container at a time
                    delay = self._backoff(container.restarts)
                    container.next_start = time.monotonic() + delay
                    self._log(
                        pod,
                        f"container {container.name} exited with status {code}; "
                        f"restart in {delay:.1f}s",
                    )
        wanted = pod.replicas
        if wanted > 1 and not pod.warned_replicas:
            pod.warned_replicas = True
            self._log(pod, f"replicas={wanted}: the local kubelet runs one pod per workload")
        if wanted == 0:
            if pod.phase != "Stopped":
                self._terminate(pod)
            pod.restarts = 0
            pod.next_start = 0.0
            return
        if pod.held:
            return
        template_hash = _template_hash(pod.template)
        if pod.phase != "Stopped" and template_hash != pod.template_hash:
            self._log(pod, "pod template changed: replacing the pod")
            await self._stop(pod)
            pod.restarts = 0
            pod.next_start = 0.0
        if pod.phase == "Stopped":
            if time.monotonic() < pod.next_start:
                return
            try:
                await self._create_pod(pod, template_hash)
            except (PodSpecError, ApiError, OSError, aiohttp.ClientError) as exc:
                pod.restarts += 1
                delay = self._backoff(pod.restarts)
                pod.next_start = time.monotonic() + delay
                self._log(pod, f"cannot start: {exc}; retry in {delay:.1f}s")
                return
        if pod.phase == "Init":
            await self._step_init(pod)
        if pod.phase == "Running":
            for container in pod.containers:
                if container.process is None and time.monotonic() >= container.next_start:
                    if pod.kind == "Job" and container.restarts == 0 and container.completed:
                        continue
                    await self._try_start(pod, container)

    async def _try_start(self, pod: _Pod, container: _Container) -> bool:
        """Start one container; a failure (a missing ConfigMap key...) is logged and retried with
        back-off, like a ``CreateContainerConfigError``."""
        try:
            await self._start_container(pod, container)
        except (PodSpecError, ApiError, OSError, aiohttp.ClientError) as exc:
            container.restarts += 1
            delay = self._backoff(container.restarts)
            container.next_start = time.monotonic() + delay
            kind = "init container" if container.init else "container"
            self._log(pod, f"cannot start: {kind} {container.name}: {exc}; retry in {delay:.1f}s")
            return False
        return True

    async def _step_init(self, pod: _Pod) -> None:
        """Run the init containers one at a time, each to completion, in order. A failed one is
        run again after a back-off (restartPolicy: Always); the containers wait until all are
        done. Never blocks: each sync pass moves the pod on as far as it can."""
        for container in pod.init_containers:
            if container.completed:
                continue
            if container.process is None:
                if time.monotonic() >= container.next_start:
                    await self._try_start(pod, container)
                return
            if not container.process.exited():
                return
            code = container.process.reap()
            container.process = None
            if code == 0:
                container.completed = True
                self._log(pod, f"init container {container.name} completed")
                continue
            container.restarts += 1
            delay = self._backoff(container.restarts)
            container.next_start = time.monotonic() + delay
            self._log(
                pod,
                f"init container {container.name} failed with status {code}: the pod's "
                f"containers are not started; init container retried in {delay:.1f}s",
            )
            return
        if pod.containers and pod.containers[0].standin and pod.volumes is not None:
            data = self._standin_data_dir(pod.volumes, pod.containers[0].spec)
            if data is not None:
                # GoCD writes its configuration as it starts, after the init containers (which
                # may have restored one); done here, before any sidecar can look for it.
                try:
                    ensure_config(data)
                    for path in (data, data / "config", *(data / "config").iterdir()):
                        give_to(path, self.os_user)
                except OSError as exc:
                    self._log(pod, f"stand-in GoCD: cannot write its configuration: {exc}")
        pod.phase = "Running"

    async def _create_pod(self, pod: _Pod, template_hash: str) -> None:
        """A new pod: fresh pod dir and emptyDirs, volumes and the ServiceAccount token in place,
        containers known. Init containers and containers are started by :meth:`_converge`."""
        spec = self._template_spec(pod)
        grace = spec.get("terminationGracePeriodSeconds")
        pod.grace = float(grace) if grace is not None else DEFAULT_GRACE_SECONDS
        shutil.rmtree(self._pod_dir(pod), ignore_errors=True)
        pod_dir = self._pod_dir(pod)
        pod_dir.mkdir(mode=0o755)
        for key in ("initContainers", "ephemeralContainers"):
            for container in spec.get(key) or []:
                if key == "ephemeralContainers" or container.get("restartPolicy"):
                    raise PodSpecError(
                        f"{key[:-1]} {container.get('name')!r}: native sidecars and ephemeral "
                        "containers are not supported"
                    )
        init = [_Container(c["name"], c, init=True) for c in spec.get("initContainers") or []]
        main = [
            _Container(c["name"], c, standin=pod.kind == "Deployment" and index == 0)
            for index, c in enumerate(spec["containers"])
        ]
        for container in [*init, *main]:
            if not container.standin and not container.spec.get("command"):
                raise PodSpecError(
                    f"container {container.name!r} has no command: image entrypoints are not "
                    "known here"
                )
        try:
            api: ApiProxy | None = await self._api_proxy(pod)
        except TlsUnavailableError as exc:
            # Pods still run, without the API (nothing in this project's pods needs it yet).
            self._log(pod, f"no in-cluster API access: {exc}")
            api = None
        token = (
            secrets.token_urlsafe(32)
            if api is not None and (_automount(spec) or _projects_token(spec))
            else None
        )
        if api is not None:
            api.token = token
        pod.volumes = await self._materialize_volumes(pod, spec, pod_dir, token=token)
        pod.init_containers, pod.containers = init, main
        pod.template_hash = template_hash
        pod.phase = "Init"
        self._log(
            pod,
            f"pod created: {len(init)} init containers, containers "
            f"{', '.join(c.name for c in main)}",
        )

    @staticmethod
    def _template_spec(pod: _Pod) -> dict[str, Any]:
        spec = pod.template.get("spec") or {}
        if not spec.get("containers"):
            raise PodSpecError("the pod template has no containers")
        result: dict[str, Any] = spec
        return result

    def _standin_data_dir(self, volumes: _Volumes, container: Mapping[str, Any]) -> Path | None:
        """Where the GoCD server container's ``/godata`` is, if it mounts one."""
        mounts = self._mounts(volumes, container, create=True)
        local = _rewrite_path(GOCD_DATA_DIR, mounts)
        return Path(local) if local != GOCD_DATA_DIR else None

    def _mounts(
        self, volumes: _Volumes, container: Mapping[str, Any], *, create: bool
    ) -> list[_Mount]:
        """The container's mounts, longest container path first. ``create``: make a missing
        ``subPath`` directory on a directory volume, as the kubelet does."""
        mounts = []
        for mount in container.get("volumeMounts") or []:
            local = volumes.dirs.get(mount["name"])
            if local is None:
                raise PodSpecError(f"volumeMount {mount['name']!r} names no volume")
            if mount.get("subPath"):
                local = local / mount["subPath"]
                if create and mount["name"] in volumes.writable and not local.exists():
                    local.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
                    give_to(local, self.os_user)
            mounts.append(_Mount(mount["mountPath"], local))
        paths = {m.container_path.rstrip("/") for m in mounts}
        if volumes.service_account is not None and SERVICE_ACCOUNT_DIR not in paths:
            mounts.append(_Mount(SERVICE_ACCOUNT_DIR, volumes.service_account))
        mounts.sort(key=lambda m: len(m.container_path), reverse=True)
        return mounts

    async def _start_container(self, pod: _Pod, container: _Container) -> None:
        assert pod.volumes is not None
        pod_dir = self._pod_dir(pod)
        spec = container.spec
        if container.restarts and not container.init:
            # A restarted container sees the current ConfigMaps and Secrets (Kubernetes refreshes
            # them in a running pod within about a minute; here at the next container start).
            pod_spec = self._template_spec(pod)
            token = pod.api.token if pod.api is not None else None
            pod.volumes = await self._materialize_volumes(pod, pod_spec, pod_dir, token=token)
        mounts = self._mounts(pod.volumes, spec, create=True)
        ports = {number: pod.local_port(number) for number, _name in container.ports()}

        env = {"PATH": f"{Path(sys.executable).parent}:{DEFAULT_PATH}", "LC_ALL": "C"}
        env.update(await self._resolve_env(pod, spec))
        env = {key: _rewrite_port(_rewrite_path(v, mounts), ports) for key, v in env.items()}
        tmp = _rewrite_path("/tmp", mounts)  # noqa: S108 - the container's /tmp, if mounted
        env["TMPDIR"] = tmp if tmp != "/tmp" else str(pod_dir)  # noqa: S108
        env["HOME"] = str(pod_dir)
        # What a node's network and image would provide: the pod's own port on loopback, the
        # binaries, the peer Service resolved to its local address, and the API server.
        env[ENV_PORT] = str(pod.port)
        env[ENV_LISTEN_ADDRESSES] = LOOPBACK
        if self.pg_bindir is not None:
            env[ENV_PG_BINDIR] = str(self.pg_bindir)
        for host_variable, port_variable in SERVICE_ADDRESS_VARIABLES:
            if env.get(host_variable):
                self._resolve_peer(pod, env, host_variable, port_variable)
        if pod.api is not None:
            env.update(
                {
                    "KUBERNETES_SERVICE_HOST": LOOPBACK,
                    "KUBERNETES_SERVICE_PORT": str(pod.api.port),
                    "KUBERNETES_SERVICE_PORT_HTTPS": str(pod.api.port),
                }
            )
        if pod.volumes.service_account is not None:
            env[ENV_SERVICE_ACCOUNT_DIR] = str(pod.volumes.service_account)
        for mount in mounts:  # a token projected into this container only (issue #12)
            if mount.container_path.rstrip("/") == SERVICE_ACCOUNT_DIR:
                env[ENV_SERVICE_ACCOUNT_DIR] = str(mount.local_path)
        container.pgdata = Path(env["PGDATA"]) if env.get("PGDATA") else None
        # The container's termination message file (a file the node provides): in the pod dir.
        message_path = str(spec.get("terminationMessagePath") or TERMINATION_MESSAGE_PATH)
        local_message = str(self._termination_file(pod, container))
        env = {key: local_message if v == message_path else v for key, v in env.items()}

        if container.standin:
            argv = [
                sys.executable,
                "-c",
                STANDIN_MAIN,
                "--listen",
                f"{LOOPBACK}:{pod.port}",
            ]
            data = _rewrite_path(GOCD_DATA_DIR, mounts)
            if data != GOCD_DATA_DIR:
                argv += ["--data-dir", data]
            # What a node gives a real GoCD server: its mounts (db.properties names the CA by
            # its container path) and Service name resolution (the endpoint map).
            for mount in mounts:
                argv += ["--mount", f"{mount.container_path}={mount.local_path}"]
            env[ENV_ENDPOINTS] = self.endpoints_json()
        else:
            command = [*(spec.get("command") or []), *(spec.get("args") or [])]
            argv = [_rewrite_port(_rewrite_path(arg, mounts), ports) for arg in command]
            argv = [local_message if arg == message_path else arg for arg in argv]
        cwd = Path(_rewrite_path(spec["workingDir"], mounts)) if spec.get("workingDir") else pod_dir
        # In a thread: the first operator-image command probes the OS user with a subprocess.
        user = await asyncio.to_thread(self._user_for, argv, env["PATH"])
        # The node provides the termination message file, writable by the container's user.
        message_file = Path(local_message)
        message_file.write_bytes(b"")
        give_to(message_file, user)
        pod_security = self._template_spec(pod).get("securityContext") or {}
        groups = [int(g) for g in pod_security.get("supplementalGroups") or []]
        wrapped_argv = user_command(user, argv, groups)
        kind = "init container" if container.init else "container"
        with self._log_path(pod).open("ab") as log:
            log.write(
                f"==== {_now()} start {pod.pod_name} {kind} {container.name} on port "
                f"{pod.port}{' (stand-in GoCD server)' if container.standin else ''}\n".encode()
            )
            log.flush()
            container.process = ProcessGroup(
                wrapped_argv, env=env, cwd=cwd, log=log, wrapped=wrapped_argv != argv
            )
        self._started_groups.append(container.process.pid)
        logger.info(
            "local kubelet: started %s/%s %s (pid %d, port %d)",
            pod.kind,
            pod.name,
            container.name,
            container.process.pid,
            pod.port,
        )

    def _user_for(self, argv: list[str], path: str) -> str:
        """Who runs a container: the OS user, except a command of the operator image (this Python
        environment's ``gocd-ha-operator``, the stand-in) when that user cannot run this Python
        (e.g. an interpreter under root's home): then the kubelet's own user runs it."""
        executable = shutil.which(argv[0], path=path) if argv else None
        python_bin = Path(sys.executable).parent
        if executable is None or Path(executable).parent != python_bin:
            return self.os_user
        with self._python_user_lock:
            if self._python_user is None:
                self._python_user = self._probe_python_user()
            return self._python_user

    def _probe_python_user(self) -> str:
        wrapped = user_command(self.os_user, [sys.executable, "-c", "import gocd_ha_operator"])
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            probe = subprocess.run(wrapped, capture_output=True, timeout=60, check=False)
            if probe.returncode != 0:
                user = pwd.getpwuid(os.geteuid()).pw_name
                logger.warning(
                    "local kubelet: %s cannot run %s; operator-image containers run as %s",
                    self.os_user,
                    sys.executable,
                    user,
                )
                return user
        return self.os_user

    async def _api_proxy(self, pod: _Pod) -> ApiProxy:
        """The workload's API proxy (one port for the kubelet's life), started on first use."""
        if pod.api is None:
            async with self._certificate_lock:  # pods are created concurrently: make it once
                if self._certificate is None:
                    tls = self.work_dir / "tls"
                    tls.mkdir(mode=0o700, exist_ok=True)
                    self._certificate = await asyncio.to_thread(make_certificate, tls)
            pod.api = ApiProxy(self.api_url, self._certificate)
            await pod.api.start()
        return pod.api

    def _resolve_peer(
        self, pod: _Pod, env: dict[str, str], host_variable: str, port_variable: str
    ) -> None:
        """``<svc>.<ns>.svc[.cluster.local]`` + port -> the local address of that Service (what
        cluster DNS and kube-proxy do for a pod)."""
        host = env[host_variable]
        parts = host.split(".")
        service = parts[0]
        namespace = parts[1] if len(parts) >= 3 and parts[2] == "svc" else self.namespace
        try:
            port = int(env.get(port_variable) or POSTGRES_PORT)
        except ValueError:
            return
        endpoint = self._endpoint_snapshot.get(f"{namespace}/{service}:{port}")
        if endpoint is None:
            self._log(pod, f"cannot resolve {host}:{port} to a local address; left unchanged")
            return
        env[f"{host_variable}ADDR"] = endpoint.host
        env[port_variable] = str(endpoint.port)

    async def _stop(self, pod: _Pod, grace: float | None = None) -> None:
        """Stop like a pod deletion, every container at once: Postgres fast shutdown (SIGINT to the
        postmaster), else SIGTERM to the container's group; SIGKILL whatever is left after the
        grace period."""
        grace = pod.grace if grace is None else min(grace, pod.grace)
        running = [c for c in pod.all_containers() if c.process is not None]
        for container in running:
            assert container.process is not None
            postmaster = _postmaster_pid(container.pgdata)
            if postmaster is None or not container.process.signal_pid(postmaster, signal.SIGINT):
                container.process.terminate()
        deadline = time.monotonic() + grace
        while (
            any(c.process is not None and not c.process.exited() for c in running)
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        for container in running:
            assert container.process is not None
            killed = not container.process.exited()
            code = container.process.reap()
            container.process = None
            self._log(
                pod,
                f"container {container.name} killed after the grace period"
                if killed
                else f"container {container.name} stopped (status {code})",
            )
        if pod.phase != "Stopped":
            self._log(pod, "pod stopped")
        self._stopped(pod)

    @staticmethod
    def _stopped(pod: _Pod) -> None:
        """The pod is gone: the next start is a new pod (fresh emptyDirs, init containers, a new
        token)."""
        pod.phase = "Stopped"
        pod.init_containers, pod.containers = [], []
        pod.template_hash = None
        if pod.api is not None:
            pod.api.token = None  # a deleted pod's token is no longer valid

    # --- volumes and env --------------------------------------------------------------------------

    async def _materialize_volumes(
        self, pod: _Pod, spec: Mapping[str, Any], pod_dir: Path, *, token: str | None
    ) -> _Volumes:
        """Every volume of the pod as a local directory (see ``docs/local-kubelet.md``), and the
        ServiceAccount volume when the pod gets a ``token``."""
        result = _Volumes()
        volumes_dir = pod_dir / "volumes"
        volumes_dir.mkdir(mode=0o755, exist_ok=True)
        for volume in spec.get("volumes") or []:
            name = volume["name"]
            target = volumes_dir / name
            if "emptyDir" in volume:
                # Kept across container restarts of the same pod, fresh for a new pod.
                if not target.exists():
                    target.mkdir(mode=PRIVATE_DIR_MODE)
                    give_to(target, self.os_user)
                result.writable.add(name)
            elif "persistentVolumeClaim" in volume:
                target = self.claim_dir(volume["persistentVolumeClaim"]["claimName"])
                result.writable.add(name)
            elif "configMap" in volume or "secret" in volume or "projected" in volume:
                files = await self._volume_files(pod, volume, token=token)
                self._write_files(target, files, None, secret="configMap" not in volume)
            else:
                raise PodSpecError(f"volume {name!r}: type {sorted(volume)} is not supported")
            result.dirs[name] = target
        if pod.kind == "StatefulSet":
            for claim_template in (pod.obj or {}).get("spec", {}).get("volumeClaimTemplates") or []:
                template_name = claim_template["metadata"]["name"]
                # The claim a StatefulSet controller creates for ordinal 0.
                result.dirs[template_name] = self.claim_dir(f"{template_name}-{pod.pod_name}")
                result.writable.add(template_name)
        if token is not None and _automount(spec):
            # The projected kube-api-access volume of a pod that automounts its token.
            target = volumes_dir / SERVICE_ACCOUNT_VOLUME
            data = {
                "token": token.encode(),
                "namespace": self.namespace.encode(),
                "ca.crt": self._certificate[0].read_bytes() if self._certificate else b"",
            }
            self._write_files(target, data, None, secret=True)
            result.service_account = target
        return result

    async def _volume_files(
        self, pod: _Pod, volume: Mapping[str, Any], *, token: str | None
    ) -> dict[str, bytes]:
        """The files (relative path -> content) a ConfigMap, Secret or projected volume holds
        now, read from the API."""
        name = volume["name"]
        if "configMap" in volume:
            source = volume["configMap"]
            data = await self._configmap_data(source["name"], optional=source.get("optional"))
            return _select(data, source.get("items"))
        if "secret" in volume:
            source = volume["secret"]
            data = await self._secret_data(source["secretName"], source.get("optional"))
            return _select(data, source.get("items"))
        files: dict[str, bytes] = {}
        for item in volume["projected"].get("sources") or []:
            if "secret" in item:
                src = item["secret"]
                data = await self._secret_data(src["name"], src.get("optional"))
                files.update(_select(data, src.get("items")))
            elif "serviceAccountToken" in item:
                if token is not None:
                    # A token projected into the containers that mount it (issue #12).
                    files[item["serviceAccountToken"]["path"]] = token.encode()
            elif "downwardAPI" in item:
                fields = {"metadata.namespace": self.namespace, "metadata.name": pod.pod_name}
                for entry in item["downwardAPI"].get("items") or []:
                    field_path = entry.get("fieldRef", {}).get("fieldPath")
                    if field_path not in fields:
                        raise PodSpecError(f"volume {name!r}: fieldRef {field_path!r}")
                    files[entry["path"]] = fields[field_path].encode()
            elif "configMap" in item and item["configMap"]["name"] == "kube-root-ca.crt":
                # The API server's CA, as Kubernetes publishes it in every namespace.
                crt = self._certificate[0].read_bytes() if self._certificate else b""
                files.update(_select({"ca.crt": crt}, item["configMap"].get("items")))
            elif "configMap" in item:
                src = item["configMap"]
                data = await self._configmap_data(src["name"], src.get("optional"))
                files.update(_select(data, src.get("items")))
            else:
                raise PodSpecError(
                    f"volume {name!r}: projected source {sorted(item)} is not supported"
                )
        return files

    async def _refresh_volumes(self) -> None:
        """What a real kubelet does every sync period: ConfigMap, Secret and projected volumes of
        a running pod get the objects' current data, file by file (each replaced atomically),
        with no container restarted. A volume a container mounts with ``subPath`` is left alone:
        a real kubelet never updates such a mount. An object that cannot be read keeps its old
        files, as on a node."""
        for pod in list(self._pods.values()):
            if pod.phase not in ("Init", "Running") or pod.volumes is None or pod.obj is None:
                continue
            spec = pod.template.get("spec") or {}
            pinned = {
                mount["name"]
                for container in [*(spec.get("initContainers") or []), *spec["containers"]]
                for mount in container.get("volumeMounts") or []
                if mount.get("subPath")
            }
            token = pod.api.token if pod.api is not None else None
            for volume in spec.get("volumes") or []:
                name = volume["name"]
                kinds = ("configMap", "secret", "projected")
                target = pod.volumes.dirs.get(name)
                if name in pinned or target is None or not any(k in volume for k in kinds):
                    continue
                try:
                    files = await self._volume_files(pod, volume, token=token)
                except (PodSpecError, ApiError, OSError, aiohttp.ClientError) as exc:
                    self._log(pod, f"volume {name} not refreshed: {exc}")
                    continue
                changed = self._update_files(target, files, secret="configMap" not in volume)
                if changed:
                    self._log(pod, f"volume {name} refreshed: {', '.join(changed)}")

    def _update_files(self, target: Path, files: Mapping[str, bytes], *, secret: bool) -> list[str]:
        """Bring ``target`` to ``files``: changed or new files replaced atomically (a reader
        sees the old or the new content, never a mix), files no longer wanted removed. The
        paths that changed (names only, never contents)."""
        if not target.is_dir():
            return []
        changed: list[str] = []
        for relative, content in files.items():
            path = _inside(target, relative)
            try:
                if path.read_bytes() == content:
                    continue
            except OSError:
                pass
            self._make_parents(target, path, secret=secret)
            temporary = path.with_name(f".{path.name}.refresh")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            if secret:
                give_to(temporary, self.os_user)
            temporary.chmod(SECRET_FILE_MODE if secret else CONFIG_FILE_MODE)
            os.replace(temporary, path)
            changed.append(relative)
        wanted = {_inside(target, relative) for relative in files}
        for path in sorted(target.rglob("*"), reverse=True):
            if path.is_file() and path not in wanted:
                path.unlink()
                changed.append(f"{path.relative_to(target)} (removed)")
        return changed

    def _make_parents(self, target: Path, path: Path, *, secret: bool) -> None:
        parent = path.parent
        for directory in reversed([parent, *parent.parents]):
            if directory.is_relative_to(target) and not directory.exists():
                directory.mkdir(mode=PRIVATE_DIR_MODE if secret else 0o755)
                if secret:
                    give_to(directory, self.os_user)

    def _reset_dir(self, target: Path, *, secret: bool) -> None:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(mode=PRIVATE_DIR_MODE if secret else 0o755)
        if secret:
            give_to(target, self.os_user)

    def _write_files(
        self,
        target: Path,
        files: Mapping[str, bytes],
        items: list[dict[str, Any]] | None,
        *,
        secret: bool,
        reset: bool = True,
    ) -> None:
        """Keys -> files. Secrets: 0600, owned by the OS user (there is no fsGroup locally);
        ConfigMaps: 0444. Written afresh at pod start and every container start; a running pod's
        volumes are refreshed by :meth:`_refresh_volumes`."""
        if reset:
            self._reset_dir(target, secret=secret)
        for relative, content in _select(files, items).items():
            path = _inside(target, relative)
            self._make_parents(target, path, secret=secret)
            mode = SECRET_FILE_MODE if secret else CONFIG_FILE_MODE
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            if secret:
                give_to(path, self.os_user)
            path.chmod(mode)

    async def _resolve_env(self, pod: _Pod, container: Mapping[str, Any]) -> dict[str, str]:
        """The container's env, with references read from the API now: at container start,
        exactly when a kubelet reads them (a later ConfigMap change needs a restart)."""
        if container.get("envFrom"):
            raise PodSpecError("envFrom is not supported")
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            name = var["name"]
            source = var.get("valueFrom")
            if source is None:
                env[name] = str(var.get("value", ""))
                continue
            if "fieldRef" in source:
                env[name] = self._field(pod, source["fieldRef"]["fieldPath"])
                continue
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                data = await self._configmap_data(ref["name"], optional=ref.get("optional"))
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = await self._secret_data(ref["name"], optional=ref.get("optional"))
            else:
                raise PodSpecError(f"env {name!r}: {sorted(source)} is not supported")
            value = data.get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    continue
                raise PodSpecError(f"env {name!r}: key {ref['key']!r} not found in {ref['name']!r}")
            env[name] = value.decode()
        return env

    def _field(self, pod: _Pod, path: str) -> str:
        values = {
            "metadata.name": pod.pod_name,
            "metadata.namespace": self.namespace,
            "status.podIP": LOOPBACK,
            "status.hostIP": LOOPBACK,
            "spec.nodeName": "local",
        }
        if path not in values:
            raise PodSpecError(f"fieldRef {path!r} is not supported")
        return values[path]

    # --- the API ----------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
            )
        return self._session

    async def _get(self, path: str) -> dict[str, Any] | None:
        async with self._http().get(self.api_url + path) as response:
            if response.status == 404:
                return None
            if response.status >= 300:
                raise ApiError(response.status, path)
            payload: dict[str, Any] = await response.json(content_type=None)
            return payload

    async def _list(self, api_version: str, kind: str) -> list[dict[str, Any]]:
        payload = await self._get(resource_path(api_version, kind, self.namespace))
        return list((payload or {}).get("items") or [])

    async def _configmap_data(self, name: str, optional: bool | None) -> dict[str, bytes]:
        obj = await self._get(resource_path("v1", "ConfigMap", self.namespace, name))
        if obj is None:
            if optional:
                return {}
            raise PodSpecError(f"ConfigMap {name!r} not found")
        data = {key: str(value).encode() for key, value in (obj.get("data") or {}).items()}
        for key, value in (obj.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value)
        return data

    async def _secret_data(self, name: str, optional: bool | None) -> dict[str, bytes]:
        obj = await self._get(resource_path("v1", "Secret", self.namespace, name))
        if obj is None:
            if optional:
                return {}
            raise PodSpecError(f"Secret {name!r} not found")
        data = {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
        # The emulator stores stringData as written (a real API server folds it into data).
        for key, value in (obj.get("stringData") or {}).items():
            data[key] = str(value).encode()
        return data

    # --- endpoints ------------------------------------------------------------------------------

    def _key(self, service: str, port: int) -> str:
        return f"{self.namespace}/{service}:{port}"

    def _refresh_endpoints(self) -> None:
        snapshot = dict(self._reserved)
        for name, service in self._services.items():
            spec = service.get("spec") or {}
            selector = spec.get("selector") or {}
            if not selector:
                continue
            # A headless Service has no virtual IP: cluster DNS answers with the pod's address
            # and a client dials the Service's port number on the pod itself (no targetPort
            # mapping). A ClusterIP Service forwards its port to the targetPort.
            headless = spec.get("clusterIP") == "None"
            for port in spec.get("ports") or []:
                target = int(port["port"]) if headless else port.get("targetPort", port["port"])
                pod = self._select(selector, target)
                local = pod.target_port(target) if pod is not None else None
                if local is not None:
                    snapshot[self._key(name, int(port["port"]))] = Endpoint(LOOPBACK, local)
        self._endpoint_snapshot = snapshot  # replaced whole: readers in other threads see either

    def _select(self, selector: Mapping[str, str], target: int | str) -> _Pod | None:
        for _key, pod in sorted(self._pods.items()):
            labels = pod.labels()
            if all(labels.get(k) == v for k, v in selector.items()) and pod.target_port(target):
                return pod
        return None

    # --- helpers --------------------------------------------------------------------------------

    # --- Jobs -------------------------------------------------------------------------------------

    def _termination_file(self, pod: _Pod, container: _Container) -> Path:
        return self._pod_dir(pod) / f"termination-{container.name}"

    async def _finish_job_if_done(self, pod: _Pod) -> None:
        """A Job's pod whose containers all exited: report it as the Job controller and a kubelet
        would (a Pod with the containers' termination messages, owned by the Job, and the Job's
        Complete or Failed condition), then stop it. Jobs are never restarted here
        (``backoffLimit: 0`` is the only policy this project uses)."""
        if not pod.containers or any(c.alive() for c in pod.containers):
            return
        if any(c.process is None and not c.completed for c in pod.containers):
            return  # a container has not started yet
        statuses: list[dict[str, Any]] = []
        failed = False
        for container in pod.containers:
            code = container.process.reap() if container.process is not None else 0
            container.process = None
            container.completed = True
            failed = failed or code != 0
            statuses.append(self._terminated_status(pod, container, code))
        pod.job_done = True
        self._log(pod, f"job {'failed' if failed else 'completed'}")
        await self._stop(pod)
        try:
            await self._report_job(pod, statuses, failed=failed)
        except (ApiError, aiohttp.ClientError) as exc:
            self._log(pod, f"cannot report the job's result: {exc}")

    def _terminated_status(self, pod: _Pod, container: _Container, code: int) -> dict[str, Any]:
        message = ""
        path = self._termination_file(pod, container)
        with contextlib.suppress(OSError):
            message = path.read_text(errors="replace")[:TERMINATION_MESSAGE_LIMIT]
        policy = container.spec.get("terminationMessagePolicy")
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                lines = self._log_path(pod).read_text(errors="replace").splitlines()
                message = "\n".join(lines[-80:])[-TERMINATION_MESSAGE_LIMIT:]
        return {
            "name": container.name,
            "ready": False,
            "restartCount": 0,
            "image": str(container.spec.get("image") or ""),
            "imageID": "",
            "state": {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "message": message,
                    "startedAt": _rfc3339(),
                    "finishedAt": _rfc3339(),
                }
            },
        }

    async def _report_job(self, pod: _Pod, statuses: list[dict[str, Any]], *, failed: bool) -> None:
        assert pod.obj is not None
        meta = pod.obj["metadata"]
        labels = {**pod.labels(), "job-name": pod.name}
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": pod.name,
            "uid": meta.get("uid", ""),
            "controller": True,
            "blockOwnerDeletion": True,
        }
        pod_name = f"{pod.name}-local"
        pods = resource_path("v1", "Pod", self.namespace)
        status = {"phase": "Failed" if failed else "Succeeded", "containerStatuses": statuses}
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": self.namespace,
                "labels": labels,
                "ownerReferences": [owner] if meta.get("uid") else [],
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": c.name, "image": str(c.spec.get("image") or "local")}
                    for c in pod.containers
                ],
            },
            "status": status,
        }
        await self._write("POST", pods, body, missing_ok=False, exists_ok=True)
        # The API server drops the status of a new Pod: it is set through the subresource.
        await self._write("PATCH", f"{pods}/{pod_name}/status", {"status": status})
        now = _rfc3339()
        condition = {
            "type": "Failed" if failed else "Complete",
            "status": "True",
            "lastProbeTime": now,
            "lastTransitionTime": now,
            "reason": "BackoffLimitExceeded" if failed else "Completed",
            "message": "the pod failed" if failed else "",
        }
        job_status: dict[str, Any] = {
            "startTime": meta.get("creationTimestamp") or now,
            "conditions": [condition],
            "failed" if failed else "succeeded": 1,
        }
        if not failed:
            job_status["completionTime"] = now
        path = resource_path("batch/v1", "Job", self.namespace, pod.name)
        await self._write("PATCH", f"{path}/status", {"status": job_status})

    async def _write(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        *,
        missing_ok: bool = True,
        exists_ok: bool = False,
    ) -> None:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self._http().request(
            method, self.api_url + path, json=body, headers=headers
        ) as response:
            if response.status == 404 and missing_ok:
                return
            if response.status == 409 and exists_ok:
                return
            if response.status >= 300:
                raise ApiError(response.status, path)

    def _pod(self, kind: Kind, name: str) -> _Pod:
        key = (kind, name)
        if key not in self._pods:
            self._pods[key] = _Pod(kind=kind, name=name, port=free_port())
        return self._pods[key]

    def _find(self, name: str) -> _Pod:
        # The workload's name, else its pod's (``<name>-0``).
        matches = [pod for pod in self._pods.values() if pod.name == name] or [
            pod for pod in self._pods.values() if pod.pod_name == name
        ]
        if not matches:
            raise KeyError(f"no StatefulSet or Deployment {name!r} seen by the local kubelet")
        if len(matches) > 1:
            raise KeyError(f"both a StatefulSet and a Deployment are named {name!r}")
        return matches[0]

    def _pod_dir(self, pod: _Pod) -> Path:
        return self.work_dir / "pods" / pod.pod_name

    def _log_path(self, pod: _Pod) -> Path:
        return self.work_dir / "logs" / f"{pod.pod_name}.log"

    def _log(self, pod: _Pod, message: str) -> None:
        """A kubelet line in the pod's log (and the Python log). Never given secret values."""
        logger.info("local kubelet: %s/%s: %s", pod.kind, pod.name, message)
        with contextlib.suppress(OSError), self._log_path(pod).open("a") as log:
            log.write(f"==== {_now()} {message}\n")


def _select(data: Mapping[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    """A volume's files from an object's data: every key, or the ``items`` (key -> path)."""
    if not items:
        return dict(data)
    files = {}
    for item in items:
        if item["key"] not in data:
            raise PodSpecError(f"key {item['key']!r} is missing")
        files[item["path"]] = data[item["key"]]
    return files


def _inside(target: Path, relative: str) -> Path:
    if ".." in Path(relative).parts or Path(relative).is_absolute():
        raise PodSpecError(f"item path {relative!r} leaves the volume")
    return target / relative


def _job_finished(job: Mapping[str, Any]) -> bool:
    """A Job with a Complete or Failed condition (by this kubelet, now or before a restart)."""
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


def _postmaster_pid(pgdata: Path | None) -> int | None:
    if pgdata is None:
        return None
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _now() -> str:
    return time.strftime("%H:%M:%S")


def _rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
