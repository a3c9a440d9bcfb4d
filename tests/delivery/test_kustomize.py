"""`kubectl apply -k manifests/overlays/<mode>` installs the same operator as the chart.

Compared object by object (ServiceAccount, RBAC, Deployment, Service, NetworkPolicy) after removing
what legitimately differs: the labels that name the tool (helm.sh/chart, managed-by) and the
namespace field the chart writes explicitly. Everything else — verbs, resources, args, env,
securityContext, probes, resources — must be identical.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.delivery import (
    CRD_TEMPLATE,
    NAMESPACE,
    OVERLAYS,
    ROOT,
    helm_template,
    kustomize,
    load_all,
    one,
    run,
)

COMPARED = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "NetworkPolicy",
    "ValidatingWebhookConfiguration",
}
MODES = {
    "cluster-wide": (),
    "namespaced": ("--set", f"watchNamespaces={{{NAMESPACE}}}"),
}


def normalized(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    meta = doc["metadata"]
    meta.pop("labels", None)
    meta.pop("annotations", None)
    if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
        meta.pop("namespace", None)
    template = doc.get("spec", {}).get("template")
    if template:
        template["metadata"].pop("labels", None)
    return doc


def index(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    return {
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): normalized(d)
        for d in docs
        if d["kind"] in COMPARED
    }


@pytest.mark.parametrize("mode", MODES)
def test_overlay_equals_chart(helm: Path, mode: str) -> None:
    from_helm = helm_template(helm, *MODES[mode])
    from_kustomize = kustomize(mode)
    h, k = index(from_helm), index(from_kustomize)
    assert sorted(h, key=str) == sorted(k, key=str), "different sets of objects"
    for key in h:
        assert h[key] == k[key], f"{key} differs between the chart and the {mode} overlay"
    # What only one side has, on purpose: the chart's helm test Job; kustomize's Namespace
    # (kubectl apply -k cannot create it otherwise). The CRD only in the chart (once generated):
    # kubectl users apply crds/ server-side, see docs/install.md.
    helm_only = {"Job"} | ({"CustomResourceDefinition"} if CRD_TEMPLATE.exists() else set())
    assert {d["kind"] for d in from_helm} - COMPARED == helm_only
    assert {d["kind"] for d in from_kustomize} - COMPARED == {"Namespace"}


@pytest.mark.parametrize("mode", MODES)
def test_overlay_labels_and_selectors(mode: str) -> None:
    docs = kustomize(mode)
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "gocd-ha-operator", doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize"
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "gocd-ha-operator",
        "app.kubernetes.io/instance": "gocd-ha-operator",
    }
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    namespace = one(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_operator_image_env_follows_the_component_image(tmp_path: Path) -> None:
    """A user who changes `images:` in components/common gets the same image in
    GOCDHA_OPERATOR_IMAGE, in every overlay."""
    manifests = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", manifests)
    component = manifests / "components" / "common" / "kustomization.yaml"
    digest = "sha256:" + "cd" * 32
    text = component.read_text()
    assert 'newTag: "0.1.0"' in text
    component.write_text(text.replace('newTag: "0.1.0"', f'newTag: "7.7.7"\n    digest: {digest}'))
    image = f"ghcr.io/gocd-ha-operator/gocd-ha-operator:7.7.7@{digest}"
    for overlay in MODES:
        docs = load_all(run(["kubectl", "kustomize", str(manifests / "overlays" / overlay)]).stdout)
        (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        assert c["image"] == image, overlay
        assert {e["name"]: e.get("value") for e in c["env"]}["GOCDHA_OPERATOR_IMAGE"] == image


def test_overlays_share_the_common_component() -> None:
    """Namespace, labels, image and the image replacement are written once, in
    components/common, and every overlay uses it instead of repeating them."""
    component = yaml.safe_load(
        (ROOT / "manifests" / "components" / "common" / "kustomization.yaml").read_text()
    )
    assert component["kind"] == "Component"
    assert {"namespace", "labels", "images", "replacements"} <= set(component)
    for overlay in OVERLAYS.iterdir():
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        assert kustomization["components"] == ["../../components/common"], overlay.name
        repeated = {"namespace", "labels", "images", "replacements"} & set(kustomization)
        assert not repeated, f"{overlay.name} repeats {repeated}: put it in components/common"
    assert {p.name for p in OVERLAYS.iterdir()} == set(MODES)
