"""The whole operator on one machine: API emulator + local kubelet + the operator in its thread.

This is what ``gocd-ha-operator demo`` runs and what the promotion tests and benchmark drive. The
emulator and the kubelet share the caller's event loop; the operator runs kopf in its own thread
(kopf cancels every task of its loop when it exits). Users' actions — creating a resource,
``kubectl annotate`` — are the same API requests kubectl would send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import kopf

from gocd_ha_operator.api.constants import GOCD_DB_USER, POSTGRES_PORT, TLS_CA_CERT_KEY
from gocd_ha_operator.controller.handlers import OperatorConfig
from gocd_ha_operator.controller.tls import CERTIFICATE_CHECK_INTERVAL
from gocd_ha_operator.kube.apply import client_for
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.local.emulator import OperatorThread, emulator_settings, running_emulator
from gocd_ha_operator.local.kubelet import VOLUME_REFRESH_SECONDS, LocalKubelet
from gocd_ha_operator.rules.promotion import StepHook

CLUSTERS_PATH: Final = "/apis/gocdha.io/v1alpha1/namespaces/{ns}/gocdhaclusters"


@dataclass(frozen=True)
class GocdDatabaseConfig:
    """GoCD's database settings that do not depend on where the Service points: read once by a
    client that reconnects through a promotion, as a GoCD server reads ``db.properties`` at
    start."""

    password: str = field(repr=False)
    ca_file: str


@dataclass
class LocalStack:
    url: str
    namespace: str
    kubelet: LocalKubelet
    observe_interval: float
    operator: OperatorThread | None = None
    #: Where the operator serves /metrics (port 0: a free port), or ``None``.
    metrics_address: tuple[str, int] | None = None
    #: The running operator's configuration (its metrics, where they are served).
    operator_config: OperatorConfig | None = None
    #: How often the operator checks the TLS Secrets (renewal, a user's changed certificate).
    certificate_check_interval: timedelta = CERTIFICATE_CHECK_INTERVAL
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    # --- the operator -------------------------------------------------------------------------

    def config(self, promotion_hook: StepHook | None = None) -> OperatorConfig:
        return OperatorConfig(
            operator_image="local/gocd-ha-operator:dev",
            observe_interval=self.observe_interval,
            kube_factory=lambda: client_for(self.url),
            endpoints=self.kubelet.endpoint_map,
            connection=kopf.ConnectionInfo(server=self.url),
            tune_settings=emulator_settings,
            retry_delay=1.0,
            promotion_hook=promotion_hook,
            metrics_address=self.metrics_address,
            certificate_check_interval=self.certificate_check_interval,
        )

    async def start_operator(self, promotion_hook: StepHook | None = None) -> None:
        # Cluster-wide: kmock cannot serve the namespace listing kopf needs for --namespace.
        self.operator_config = self.config(promotion_hook)
        self.operator = OperatorThread(self.operator_config)
        await self.operator.start()

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` of the running operator, when it serves metrics."""
        config = self.operator_config
        served = config.metrics.served_at if config is not None else None
        return f"http://{served[0]}:{served[1]}/metrics" if served else None

    async def stop_operator(self) -> None:
        if self.operator is not None:
            operator, self.operator = self.operator, None
            await operator.stop()

    # --- what a user does with kubectl ----------------------------------------------------------

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self._session.request(
            method, self.url + path, json=body, headers=headers
        ) as response:
            payload = await response.json(content_type=None)
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}: {payload}")
            return payload

    async def apply(self, resource: dict[str, Any]) -> None:
        """``kubectl apply`` of a new GoCDHACluster."""
        body = copy.deepcopy(resource)
        body.setdefault("metadata", {})["namespace"] = self.namespace
        await self.request("POST", CLUSTERS_PATH.format(ns=self.namespace), body)

    async def annotate(self, name: str, key: str, value: str) -> None:
        """``kubectl annotate gocdha <name> <key>=<value> --overwrite``."""
        path = CLUSTERS_PATH.format(ns=self.namespace) + f"/{name}"
        await self.request("PATCH", path, {"metadata": {"annotations": {key: value}}})

    async def cluster(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "GET", CLUSTERS_PATH.format(ns=self.namespace) + f"/{name}"
        )
        return result

    async def status(self, name: str) -> dict[str, Any]:
        return dict((await self.cluster(name)).get("status") or {})

    async def wait_for(
        self,
        check: Callable[[dict[str, Any]], Any],
        name: str,
        *,
        timeout: float,
        what: str,
    ) -> Any:
        """Poll ``check(status)`` until it is truthy."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = await self.status(name)
            result = check(status)
            if result:
                return result
            await asyncio.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; status: {status}")

    async def secret_value(self, name: str, key: str) -> str:
        secret = await self.request("GET", f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        return base64.b64decode(secret["data"][key]).decode()

    async def gocd_conninfo(self, cluster: str, service: str) -> dict[str, Any] | None:
        """Connection parameters for GoCD's database through ``service`` (e.g. the primary
        Service), or ``None`` while the Service selects nothing."""
        if self._endpoint(service) is None:
            return None
        return self.gocd_conninfo_with(service, await self.gocd_database_config(cluster))

    async def gocd_database_config(self, cluster: str) -> GocdDatabaseConfig:
        """What GoCD's ``db.properties`` hold for ``cluster``: its password, the CA it verifies
        the server with (written to a file)."""
        names = ChildNames(cluster)
        password = await self.secret_value(names.gocd_db_user_secret, "password")
        ca_pem = await self.secret_value(names.server_tls_secret, TLS_CA_CERT_KEY)
        ca_path = self.kubelet.work_dir / f"{cluster}-ca.crt"
        if not ca_path.exists() or ca_path.read_text() != ca_pem:
            ca_path.write_text(ca_pem)
        return GocdDatabaseConfig(password=password, ca_file=str(ca_path))

    def gocd_conninfo_with(self, service: str, config: GocdDatabaseConfig) -> dict[str, Any] | None:
        """:meth:`gocd_conninfo` from a configuration read before: no request, as a GoCD server
        that reconnects reads no Secret (``None`` while the Service selects nothing)."""
        endpoint = self._endpoint(service)
        if endpoint is None:
            return None
        # As GoCD's db.properties: TLS verified against the Service name (§17), connected to
        # the Service's local address.
        return {
            "host": f"{service}.{self.namespace}.svc",
            "hostaddr": endpoint.host,
            "sslmode": "verify-full",
            "sslrootcert": config.ca_file,
            "port": endpoint.port,
            "user": GOCD_DB_USER,
            "password": config.password,
            "dbname": "gocd",
            "connect_timeout": 3,
        }

    def _endpoint(self, service: str) -> Endpoint | None:
        return self.kubelet.endpoint_map.get(f"{self.namespace}/{service}:{POSTGRES_PORT}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@contextlib.asynccontextmanager
async def local_stack(
    clusters: list[str],
    *,
    namespace: str = "demo",
    observe_interval: float = 1.0,
    work_root: Path | None = None,
    start_operator: bool = True,
    metrics_address: tuple[str, int] | None = None,
    volume_refresh_interval: float = VOLUME_REFRESH_SECONDS,
    certificate_check_interval: timedelta = CERTIFICATE_CHECK_INTERVAL,
) -> AsyncIterator[LocalStack]:
    """Emulator, kubelet and operator, torn down in reverse order whatever happens.
    ``volume_refresh_interval``: the kubelet's refresh of Secret and ConfigMap volumes in running
    pods; ``certificate_check_interval``: the operator's check of the TLS Secrets (tests that
    rotate certificates shorten both)."""
    async with running_emulator() as (_emulator, url):
        kubelet = LocalKubelet(
            url,
            namespace,
            clusters=clusters,
            work_root=work_root,
            volume_refresh_interval=volume_refresh_interval,
        )
        async with kubelet:
            stack = LocalStack(
                url,
                namespace,
                kubelet,
                observe_interval,
                metrics_address=metrics_address,
                certificate_check_interval=certificate_check_interval,
            )
            try:
                if start_operator:
                    await stack.start_operator()
                yield stack
            finally:
                with contextlib.suppress(Exception):
                    await stack.stop_operator()
                await stack.close()
