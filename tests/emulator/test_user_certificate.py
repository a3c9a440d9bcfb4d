"""A user-provided (cert-manager) server certificate through the real kopf handlers
(docs/architecture.md §17): copied into ``ci-server-tls`` while valid, a broken one reported as
``CertificateReady=False`` with a Warning Event naming the field and what is wrong, while the
pods' Secret keeps the last valid certificate; a fixed one is taken up without a spec change."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from gocd_ha_operator.kube import certificates
from tests.support import usercerts
from tests.support.emulator import BODY, NAMESPACE, Harness

pytestmark = pytest.mark.emulator

Start = Callable[[], Any]
SECRET = "ci-postgres-cert"
NAMES = certificates.client_dns_names("ci", NAMESPACE)


def condition(harness: Harness) -> dict[str, Any] | None:
    status = harness.cluster().get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "CertificateReady"), None)


def served(harness: Harness) -> dict[str, str]:
    return dict(harness.objects("v1/secrets")["ci-server-tls"]["data"])


async def test_a_user_certificate_is_served_checked_and_a_broken_one_reported(
    harness: Harness, run_operator: Start
) -> None:
    harness.config.certificate_check_interval = dt.timedelta(seconds=0.2)
    now = dt.datetime.now(dt.UTC)
    ca = certificates.generate_ca("cert-manager CA", now=now)
    good = usercerts.issue(ca, NAMES, now=now)
    await harness.create("v1/secrets", usercerts.cert_manager_secret(SECRET, NAMESPACE, good))
    await run_operator()
    body = copy.deepcopy(BODY)
    body["spec"]["tls"] = {"serverCertificateSecret": {"name": SECRET}}
    await harness.create_cluster(body)

    ready = await harness.eventually(
        lambda: (c := condition(harness)) and c["status"] == "True" and c, message="provided"
    )
    assert ready["reason"] == "Provided"
    assert served(harness) == good.secret_data()
    # Cold mode: the operator's CA still signs the sync agent's certificate, not Postgres'.
    secrets = harness.objects("v1/secrets")
    own_ca = secrets["ci-ca"]["data"]["ca.crt"]
    assert secrets["ci-sync-agent-tls"]["data"]["ca.crt"] == own_ca
    assert served(harness)["ca.crt"] != own_ca

    # cert-manager writes a certificate without the role Services' names: refused, reported.
    few = usercerts.issue(ca, NAMES[:2], now=now)
    path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}"
    await harness.request("PATCH", path, {"data": few.secret_data()})
    broken = await harness.eventually(
        lambda: (c := condition(harness)) and c["status"] == "False" and c, message="refused"
    )
    assert broken["reason"] == "CertificateInvalid"
    assert broken["message"].startswith("spec.tls.serverCertificateSecret.name: ")
    assert f"does not name {NAMES[2]}, {NAMES[3]}" in broken["message"]
    assert "the instances keep the last valid certificate" in broken["message"]
    assert served(harness) == good.secret_data()
    events = await harness.eventually(
        lambda: [e for e in harness.events() if e.get("reason") == "CertificateInvalid"]
    )
    assert events[0]["type"] == "Warning"
    assert "spec.tls.serverCertificateSecret" in events[0]["message"]
    assert "PRIVATE KEY" not in str(harness.cluster().get("status"))

    # Fixed in the Secret alone: copied at the next check, no spec change needed.
    renewed = usercerts.issue(ca, NAMES, now=now)
    await harness.request("PATCH", path, {"data": renewed.secret_data()})
    await harness.eventually(
        lambda: (c := condition(harness)) and c["status"] == "True", message="fixed"
    )
    await harness.eventually(lambda: served(harness) == renewed.secret_data(), message="copied")
    updates = await harness.eventually(
        lambda: [e for e in harness.events() if e.get("reason") == "ServerCertificateUpdated"]
    )
    assert updates[0]["type"] == "Normal"
    assert f"copied the certificate of Secret {SECRET}" in updates[0]["message"]


async def test_the_manual_ca_rotation_the_docs_describe(
    harness: Harness, run_operator: Start
) -> None:
    """docs/install.md and architecture.md §17: delete both TLS Secrets, restart the operator;
    its start-up reconcile makes a new CA and a server certificate signed by it. Until then
    nothing is re-created (the periodic check only renews) and Postgres keeps its files."""
    harness.config.certificate_check_interval = dt.timedelta(seconds=0.2)
    await run_operator()
    await harness.create_cluster(copy.deepcopy(BODY))
    secrets = await harness.eventually(
        lambda: (s := harness.objects("v1/secrets")) and {"ci-ca", "ci-server-tls"} <= set(s) and s
    )
    old_ca = secrets["ci-ca"]["data"]["ca.crt"]
    for name in ("ci-ca", "ci-server-tls"):
        await harness.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}")
    await asyncio.sleep(1.5)  # several certificate checks: they create nothing
    assert not {"ci-ca", "ci-server-tls"} & set(harness.objects("v1/secrets"))

    await run_operator.stop()  # type: ignore[attr-defined]
    await run_operator()
    secrets = await harness.eventually(
        lambda: (s := harness.objects("v1/secrets")) and {"ci-ca", "ci-server-tls"} <= set(s) and s
    )
    new_ca = secrets["ci-ca"]["data"]["ca.crt"]
    assert new_ca != old_ca
    assert secrets["ci-server-tls"]["data"]["ca.crt"] == new_ca
    ca = certificates.CertificateAuthority.from_secret_data(secrets["ci-ca"]["data"])
    server = certificates.ServingCertificate.from_secret_data(secrets["ci-server-tls"]["data"])
    assert ca is not None and server is not None
    problem = certificates.server_certificate_problem(
        server,
        ca,
        certificates.postgres_dns_names("ci", NAMESPACE),
        now=dt.datetime.now(dt.UTC),
    )
    assert problem is None
    # Cold mode: the sync agent's certificate is re-issued from the new CA as well.
    await harness.eventually(
        lambda: harness.objects("v1/secrets")["ci-sync-agent-tls"]["data"]["ca.crt"] == new_ca,
        message="the sync agent's certificate from the new CA",
    )
