"""The chart wires the admission webhook to what the operator serves (issue #13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gocd_ha_operator.controller.webhook import WEBHOOK_NAME, WEBHOOK_PATH
from tests.support.delivery import NAMESPACE, RELEASE, by_kind, helm_template, kustomize, one


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def arg(container: dict[str, Any], name: str) -> str | None:
    prefix = f"--{name}="
    return next((a[len(prefix) :] for a in container["args"] if a.startswith(prefix)), None)


def check_wiring(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The VWC reaches the operator: Service → named port → --webhook-port, same path and name."""
    (vwc,) = by_kind(docs, "ValidatingWebhookConfiguration")
    (hook,) = vwc["webhooks"]
    assert hook["name"] == WEBHOOK_NAME
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [
        {
            "apiGroups": ["gocdha.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["gocdhaclusters"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    ref = hook["clientConfig"]["service"]
    assert ref["path"] == WEBHOOK_PATH
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == ref["name"])
    assert service["metadata"]["namespace"] == ref["namespace"] == NAMESPACE
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
    container = operator_container(docs)
    (container_port,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert str(container_port["containerPort"]) == arg(container, "webhook-port")
    assert arg(container, "webhook-service") == ref["name"]
    assert container["readinessProbe"]["tcpSocket"]["port"] == port["targetPort"]
    policy = next(p for p in by_kind(docs, "NetworkPolicy"))
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert container_port["containerPort"] in ports, "the API server must reach the webhook"
    return dict(hook)


def test_default_webhook(helm: Path) -> None:
    docs = helm_template(helm)
    hook = check_wiring(docs)
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 10
    assert "namespaceSelector" not in hook
    container = operator_container(docs)
    assert arg(container, "webhook-secret") == f"{RELEASE}-webhook-tls"
    assert (
        arg(container, "webhook-configuration")
        == one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"]
    )


def test_values_reach_the_webhook(helm: Path) -> None:
    docs = helm_template(
        helm,
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        "webhook.timeoutSeconds=5",
        "--set",
        "webhook.port=10443",
        "--set",
        "watchNamespaces={ci,qa}",
    )
    hook = check_wiring(docs)
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == 5
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ci", "qa"]}
        ]
    }
    assert arg(operator_container(docs), "webhook-port") == "10443"


def test_cert_manager(helm: Path) -> None:
    docs = helm_template(helm, "--set", "webhook.certManager.enabled=true")
    check_wiring(docs)
    vwc = one(docs, "ValidatingWebhookConfiguration")
    certificate = one(docs, "Certificate")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/{certificate['metadata']['name']}"
    )
    assert certificate["spec"]["issuerRef"]["name"] == one(docs, "Issuer")["metadata"]["name"]
    service = vwc["webhooks"][0]["clientConfig"]["service"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    container = operator_container(docs)
    assert arg(container, "webhook-secret") is None
    directory = arg(container, "webhook-cert-dir")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]


def test_webhook_can_be_disabled(helm: Path) -> None:
    docs = helm_template(helm, "--set", "webhook.enabled=false")
    assert not by_kind(docs, "ValidatingWebhookConfiguration")
    container = operator_container(docs)
    assert not [a for a in container["args"] if a.startswith("--webhook")]
    assert "webhook" not in [p["name"] for p in container["ports"]]
    assert [s["metadata"]["name"] for s in by_kind(docs, "Service")] == [RELEASE]


def test_kustomize_overlays_wire_the_webhook() -> None:
    for overlay in ("cluster-wide", "namespaced"):
        hook = check_wiring(kustomize(overlay))
        assert ("namespaceSelector" in hook) == (overlay == "namespaced")
