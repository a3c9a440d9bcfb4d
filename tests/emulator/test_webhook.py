"""The validating admission webhook as a real HTTPS server (issue #13).

The operator runs against the API emulator with its webhook on a loopback port. It generates its
certificate into a Secret and publishes the CA in the ValidatingWebhookConfiguration; the test
then talks to it like the API server does — AdmissionReview JSON over TLS, verified with that CA
for the Service's DNS name — and checks every invalid resource of the model's test table is
refused with the field-naming message, every example is accepted, and immutable fields stay so.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
import yaml

from gocd_ha_operator.controller.handlers import OperatorConfig
from gocd_ha_operator.controller.webhook import WEBHOOK_NAME, WEBHOOK_PATH, WebhookConfig
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.apply import client_for
from gocd_ha_operator.local.emulator import OperatorThread, emulator_settings
from tests.emulator.test_least_privilege import OPERATOR_AGENTS
from tests.support.clusters import MINIMAL_SPEC, Replace, cluster_body
from tests.support.delivery import by_kind, helm_template
from tests.support.emulator import BODY, Harness, closed_endpoints
from tests.support.ports import free_port
from tests.support.rollout import IMAGE_CHANGES
from tests.unit.test_models import INVALID, _apply

#: The unit tests' minimal cluster, which the model's invalid-resource table patches.
BASE_BODY: dict[str, Any] = cluster_body(
    name="ci",
    namespace="build",
    metadata={"uid": "u-1", "generation": 1},
    spec=Replace(MINIMAL_SPEC),
)

pytestmark = pytest.mark.emulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
OPERATOR_NS = "gocd-ha-operator"
VWC = "gocd-ha-operator"
VWC_RESOURCE = "admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


class Webhook:
    """An HTTPS client that speaks to the webhook the way the API server does."""

    def __init__(self, port: int, ca_pem: bytes, hostname: str) -> None:
        self.url = f"https://127.0.0.1:{port}{WEBHOOK_PATH}"
        self.context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        self.hostname = hostname

    async def review(
        self, obj: Any, *, operation: str = "CREATE", old: Any = None
    ) -> dict[str, Any]:
        review: dict[str, Any] = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "gocdha.io", "version": "v1alpha1", "kind": "GoCDHACluster"},
                "resource": {
                    "group": "gocdha.io",
                    "version": "v1alpha1",
                    "resource": "gocdhaclusters",
                },
                "name": "ci",
                "namespace": "build",
                "operation": operation,
                "userInfo": {"username": "jane", "groups": ["system:authenticated"]},
                "object": obj,
                "oldObject": old,
                "dryRun": False,
            },
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url, json=review, ssl=self.context, server_hostname=self.hostname
            ) as response,
        ):
            assert response.status == 200, await response.text()
            payload: dict[str, Any] = await response.json()
        assert payload["kind"] == "AdmissionReview"
        assert payload["response"]["uid"] == review["request"]["uid"]
        result: dict[str, Any] = payload["response"]
        return result


async def declare_webhook_configuration(harness: Harness) -> None:
    """The ValidatingWebhookConfiguration as the chart installs it: without a caBundle."""
    harness.emulator.resources[VWC_RESOURCE] = kmock.ResourceInfo(
        kind="ValidatingWebhookConfiguration",
        namespaced=False,
        verbs=["get", "list", "watch", "create", "patch", "update", "delete"],
    )
    await harness.request(
        "POST",
        f"/apis/{VWC_RESOURCE.rsplit('/', 1)[0]}/validatingwebhookconfigurations",
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": VWC},
            "webhooks": [
                {
                    "name": WEBHOOK_NAME,
                    "clientConfig": {
                        "service": {
                            "name": "gocd-ha-operator-webhook",
                            "namespace": OPERATOR_NS,
                            "path": WEBHOOK_PATH,
                            "port": 443,
                        }
                    },
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                }
            ],
        },
    )


def webhook_operator(harness: Harness, port: int) -> tuple[OperatorThread, WebhookConfig]:
    hook = WebhookConfig(
        port=port,
        service="gocd-ha-operator-webhook",
        namespace=OPERATOR_NS,
        secret="gocd-ha-operator-webhook-tls",
        configuration=VWC,
        addr="127.0.0.1",
    )
    config = OperatorConfig(
        operator_image="registry.example/gocd-ha-operator:test",
        observe_interval=0.3,
        kube_factory=lambda: client_for(harness.url),
        endpoints=closed_endpoints(),
        connection=kopf.ConnectionInfo(server=harness.url),
        tune_settings=emulator_settings,
        operator_namespace=OPERATOR_NS,
        webhook=hook,
    )
    return OperatorThread(config), hook


async def published_certificate(
    harness: Harness, hook: WebhookConfig
) -> certificates.ServingCertificate:
    """The certificate in the Secret, once the operator has published its CA."""

    def kept() -> certificates.ServingCertificate | None:
        assert hook.secret is not None
        raw = harness.emulator.objects[kmock.resource("v1/secrets"), OPERATOR_NS, hook.secret].raw
        certificate = certificates.ServingCertificate.from_secret_data(raw.get("data"))
        (entry,) = harness.objects(VWC_RESOURCE)[VWC]["webhooks"]
        bundle = entry["clientConfig"].get("caBundle")
        if certificate is None or bundle is None:
            return None
        if base64.b64decode(bundle) != certificate.ca_pem:
            return None
        assert entry["clientConfig"]["service"]["path"] == WEBHOOK_PATH, "the rest is kept"
        return certificate

    result: certificates.ServingCertificate = await harness.eventually(
        kept, message="the webhook certificate is generated and its CA published"
    )
    return result


@pytest.fixture
async def webhook(harness: Harness) -> AsyncIterator[Webhook]:
    await declare_webhook_configuration(harness)
    port = free_port()
    operator, hook = webhook_operator(harness, port)
    await operator.start()
    try:
        kept = await published_certificate(harness, hook)
        client = Webhook(port, kept.ca_pem, hook.dns_names[0])
        await _wait_until_serving(client)
        yield client
    finally:
        await operator.stop()


async def _wait_until_serving(client: Webhook) -> None:
    for _ in range(200):
        try:
            await client.review(copy.deepcopy(BODY))
            return
        except (aiohttp.ClientConnectorError, AssertionError):
            await asyncio.sleep(0.05)
    raise AssertionError("the webhook never answered")


@pytest.mark.parametrize(
    ("case", "patch", "path", "fragment"), INVALID, ids=[c[0] for c in INVALID]
)
async def test_every_invalid_resource_is_refused_naming_the_field(
    webhook: Webhook, case: str, patch: dict[str, Any], path: str, fragment: str
) -> None:
    response = await webhook.review(_apply(copy.deepcopy(BASE_BODY), patch))
    assert response["allowed"] is False, case
    message = response["status"]["message"]
    line = next((ln for ln in message.splitlines() if ln.startswith(f"{path}: ")), None)
    assert line is not None, f"{case}: {message}"
    assert fragment in line, f"{case}: {line}"
    assert response["status"]["code"] == 422


async def test_every_example_is_accepted(webhook: Webhook) -> None:
    assert EXAMPLES
    for example in EXAMPLES:
        body = yaml.safe_load(example.read_text(encoding="utf-8"))
        body["metadata"].setdefault("namespace", "build")
        response = await webhook.review(body)
        assert response["allowed"] is True, (example.name, response.get("status"))


async def test_immutable_fields_are_refused_on_update(webhook: Webhook) -> None:
    old = copy.deepcopy(BODY)
    changed = copy.deepcopy(BODY)
    changed["spec"]["postgres"] = {"database": "other", "storage": {"size": "50Gi"}}
    response = await webhook.review(changed, operation="UPDATE", old=old)
    assert response["allowed"] is False
    lines = response["status"]["message"].splitlines()
    assert any(ln.startswith("spec.postgres.database: is immutable") for ln in lines), lines
    assert any(ln.startswith("spec.postgres.storage: is immutable") for ln in lines), lines

    moved = copy.deepcopy(BODY)
    moved["spec"]["sharedStorage"] = {"size": "10Gi", "storageClassName": "other-nfs"}
    response = await webhook.review(moved, operation="UPDATE", old=old)
    assert response["allowed"] is False
    assert response["status"]["message"].startswith("spec.sharedStorage.storageClassName: ")

    to_claim = copy.deepcopy(BODY)
    to_claim["spec"]["sharedStorage"] = {"existingClaim": "team-rwx"}
    assert (await webhook.review(to_claim, operation="UPDATE", old=old))["allowed"] is True


async def test_image_changes_are_refused_across_major_versions(webhook: Webhook) -> None:
    """Issue #13: a minor version is rolled, anything else is refused at ``kubectl apply``."""
    for old_image, new_image, fragment in IMAGE_CHANGES:
        old, new = copy.deepcopy(BODY), copy.deepcopy(BODY)
        old["spec"].setdefault("postgres", {})["image"] = old_image
        new["spec"].setdefault("postgres", {})["image"] = new_image
        response = await webhook.review(new, operation="UPDATE", old=old)
        case = f"{old_image} -> {new_image}"
        if fragment is None:
            assert response["allowed"] is True, (case, response.get("status"))
            continue
        assert response["allowed"] is False, case
        message = response["status"]["message"]
        assert message.startswith("spec.postgres.image: "), (case, message)
        assert fragment in message, (case, message)


async def test_a_status_the_model_does_not_know_blocks_nothing(webhook: Webhook) -> None:
    """The status belongs to the operator (maybe an older one); only the spec is judged."""
    old = copy.deepcopy(BODY) | {"status": {"primary": "c", "history": "not a list"}}
    new = copy.deepcopy(old)
    new["spec"]["gocd"]["jvmOptions"] = ["-Xmx2g"]
    assert (await webhook.review(new, operation="UPDATE", old=old))["allowed"] is True


async def test_metadata_only_updates_of_an_invalid_resource_pass(webhook: Webhook) -> None:
    """An object that became invalid before the webhook existed can still be annotated (e.g.
    promoted), have its finalizer removed and be deleted."""
    invalid = copy.deepcopy(BODY)
    invalid["spec"]["failover"] = {"mode": "Sometimes"}
    annotated = copy.deepcopy(invalid)
    annotated["metadata"]["annotations"] = {"gocdha.io/promote": "t1"}
    response = await webhook.review(annotated, operation="UPDATE", old=invalid)
    assert response["allowed"] is True
    changed = copy.deepcopy(invalid)
    changed["spec"]["gocd"]["jvmOptions"] = ["-Xmx2g"]
    response = await webhook.review(changed, operation="UPDATE", old=invalid)
    assert response["allowed"] is False
    assert "spec.failover.mode: " in response["status"]["message"]


async def test_certificate_is_kept_across_restarts_and_replaced_when_unusable(
    harness: Harness, helm: Path
) -> None:
    """A restart serves the kept certificate; a broken one is replaced and its CA republished.
    Every request of that bootstrap is within the chart's webhook grants, by name."""
    await declare_webhook_configuration(harness)
    port = free_port()
    operator, hook = webhook_operator(harness, port)
    await operator.start()
    first = await published_certificate(harness, hook)
    await operator.stop()

    operator, hook = webhook_operator(harness, port)
    await operator.start()
    assert await published_certificate(harness, hook) == first
    await operator.stop()

    await harness.request(
        "PATCH",
        f"/api/v1/namespaces/{OPERATOR_NS}/secrets/{hook.secret}",
        {"data": {"tls.crt": base64.b64encode(b"not a certificate").decode()}},
    )
    operator, hook = webhook_operator(harness, port)
    await operator.start()
    try:
        renewed = await published_certificate(harness, hook)
        assert renewed.ca_pem != first.ca_pem
        client = Webhook(port, renewed.ca_pem, hook.dns_names[0])
        await _wait_until_serving(client)
    finally:
        await operator.stop()

    # What the bootstrap asked for, against what the chart grants it by name.
    log = harness.emulator.access_log
    calls = {
        (method, path)
        for method, path, _watch, agent in log
        if agent.startswith(OPERATOR_AGENTS)
        and ("/secrets" in path or "validatingwebhookconfigurations" in path)
    }
    secret = f"/api/v1/namespaces/{OPERATOR_NS}/secrets"
    vwc = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{VWC}"
    assert calls == {
        ("GET", f"{secret}/{hook.secret}"),
        ("POST", secret),
        ("PATCH", f"{secret}/{hook.secret}"),
        ("GET", vwc),
        ("PATCH", vwc),
    }
    docs = helm_template(helm)
    rules = [
        rule
        for role in by_kind(docs, "Role") + by_kind(docs, "ClusterRole")
        if role["metadata"]["name"].endswith("-webhook")
        for rule in role["rules"]
    ]
    expected = {
        ("secrets", None, "create"),
        ("secrets", hook.secret, "get"),
        ("secrets", hook.secret, "patch"),
        ("validatingwebhookconfigurations", VWC, "get"),
        ("validatingwebhookconfigurations", VWC, "patch"),
    }
    granted = {
        (resource, name, verb)
        for rule in rules
        for resource in rule["resources"]
        for name in rule.get("resourceNames", [None])
        for verb in rule["verbs"]
    }
    assert granted == expected
