"""Helpers of the local kubelet tests: the example cluster, an :class:`Api` that acts like
``kubectl`` against kmock's API emulator, and :func:`eventually`."""

from __future__ import annotations

import asyncio
import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.builders.guard import build_primary_lease
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.apply import resource_path
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.rules.topology import Topology
from tests.support.clusters import MINIMAL_SPEC, Replace, cluster_body
from tests.support.emulator import kubectl_request

NAMESPACE = "build"
CLUSTER = "ci"
BODY: dict[str, Any] = cluster_body(
    name=CLUSTER,
    namespace=NAMESPACE,
    metadata={"uid": "uid-ci", "generation": 1},
    spec=Replace({"gocd": {"image": "gocd/gocd-server:v26.1.0"}, **MINIMAL_SPEC}),
)


@dataclass
class Api:
    """The emulator's URL plus what ``kubectl`` would do with it."""

    url: str
    credentials: ClusterCredentials
    #: The cluster CA certificate once :meth:`create_children` made the TLS Secrets.
    ca_pem: bytes = field(default=b"", repr=False)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        return await kubectl_request(self.url, method, path, body)

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
        # What the reconcile adds once: the primary Lease, without which the instance guard
        # grants no start as a primary (docs/operator.md, "What fences a primary").
        lease = build_primary_lease(inputs, datetime.now(UTC))
        if keep(lease):
            await self.create(lease)
        # And the TLS Secrets (controller/tls.py): the CA and the server certificate.
        for secret in self.tls_secrets():
            if keep(secret):
                await self.create(secret)

    def tls_secrets(self) -> list[dict[str, Any]]:
        """``<name>-ca``, ``<name>-server-tls`` and (Cold mode) ``<name>-sync-agent-tls`` as
        the operator makes them."""
        now = datetime.now(UTC)
        names = ChildNames(CLUSTER)
        ca = certificates.generate_ca("test CA", now=now)
        server = certificates.issue_server_certificate(
            ca, certificates.postgres_dns_names(CLUSTER, NAMESPACE), now=now
        )
        agent = certificates.issue_server_certificate(
            ca, certificates.sync_agent_dns_names(CLUSTER, NAMESPACE), now=now
        )
        self.ca_pem = ca.cert_pem
        return [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "type": kind,
                "data": data,
            }
            for name, kind, data in (
                (names.ca_secret, "Opaque", ca.secret_data()),
                (names.server_tls_secret, "kubernetes.io/tls", server.secret_data()),
                (names.sync_agent_tls_secret, "kubernetes.io/tls", agent.secret_data()),
            )
        ]

    def tls_params(self, service: str, host: str, port: int) -> dict[str, Any]:
        """libpq parameters of a fully verified TLS connection to ``service`` at ``host:port``."""
        ca_file = Path(tempfile.gettempdir()) / f"gocdha-kubelet-test-{id(self)}.crt"
        ca_file.write_bytes(self.ca_pem)
        return {
            "host": f"{service}.{NAMESPACE}.svc",
            "hostaddr": host,
            "port": port,
            "sslmode": "verify-full",
            "sslrootcert": str(ca_file),
        }


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
