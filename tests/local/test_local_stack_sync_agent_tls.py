"""The Cold sync agent's HTTPS on the local stack (docs/architecture.md §17), as a user sees it:
the operator reads the agent over TLS verified against the cluster CA; when the agent serves a
certificate from another CA (its Secret replaced behind the operator's back), the status says
``CertificateRejected`` instead of claiming a sync, and the next reconcile re-issues the Secret
from the cluster CA, after which the agent is read again."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from typing import Any

import pytest

from gocd_ha_operator.kube import certificates
from gocd_ha_operator.local.stack import local_stack
from tests.support.localstack import BODY, NAME, synced_on
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NAMESPACE = "build"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"


def config_synced(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == "ConfigSynced"), {})


async def test_the_token_goes_only_to_an_agent_verified_by_the_cluster_ca() -> None:
    async with local_stack([NAME], namespace=NAMESPACE, observe_interval=0.5) as stack:
        await stack.apply(BODY)
        sync = await stack.wait_for(
            synced_on(stack, "a"), NAME, timeout=120, what="ConfigSynced over HTTPS on a"
        )
        assert sync["source"].startswith("https://")
        ca_pem = base64.b64decode(
            (await stack.request("GET", f"{SECRETS}/{NAME}-ca"))["data"]["ca.crt"]
        )

        # The agent's Secret replaced by a certificate for the right names from another CA.
        other = certificates.generate_ca("not the cluster CA", now=dt.datetime.now(dt.UTC))
        impostor = certificates.issue_server_certificate(
            other,
            certificates.sync_agent_dns_names(NAME, NAMESPACE),
            now=dt.datetime.now(dt.UTC),
        )
        await stack.request(
            "PATCH", f"{SECRETS}/{NAME}-sync-agent-tls", {"data": impostor.secret_data()}
        )
        # A new pod of the primary GoCD server mounts what the Secret holds now.
        await stack.kubelet.kill(f"{NAME}-gocd-a")
        await stack.kubelet.resume(f"{NAME}-gocd-a")
        status = await stack.wait_for(
            lambda s: (s.get("configSync") or {}).get("reason") == "CertificateRejected" and s,
            NAME,
            timeout=120,
            what="configSync.reason CertificateRejected",
        )
        condition = config_synced(status)
        assert (condition["status"], condition["reason"]) == ("False", "CertificateRejected")
        assert "failed verification for ci-gocd-a.build.svc" in condition["message"]
        assert status["configSync"]["synced"] is False and status["configSync"]["files"] == []

        # A reconcile (any spec change) finds a certificate its CA did not sign and re-issues it.
        await stack.request(
            "PATCH",
            f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters/{NAME}",
            {"spec": {"failover": {"maxLagBytes": 64 * 1024 * 1024}}},
        )
        for _ in range(240):
            data = (await stack.request("GET", f"{SECRETS}/{NAME}-sync-agent-tls"))["data"]
            if base64.b64decode(data["ca.crt"]) == ca_pem:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("the sync agent's Secret was not re-issued from the cluster CA")
        certificate = base64.b64decode(data["tls.crt"])
        assert certificates.serial_number(certificate) != certificates.serial_number(
            impostor.cert_pem
        )
        await stack.kubelet.kill(f"{NAME}-gocd-a")
        await stack.kubelet.resume(f"{NAME}-gocd-a")
        await stack.wait_for(
            synced_on(stack, "a"), NAME, timeout=120, what="ConfigSynced again on a"
        )
