"""Everything rendered validates against the Kubernetes 1.30 OpenAPI schemas, strictly (unknown
fields rejected) — the same check the static gate runs with the CLI."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from tests.support.delivery import helm_template, kustomize

K8S_VERSION = "1.30.0"


@pytest.mark.parametrize(
    "rendering",
    [
        "helm-cluster-wide",
        "helm-namespaced",
        "helm-crd",
        "kustomize-cluster-wide",
        "kustomize-namespaced",
    ],
)
def test_strictly_valid(helm: Path, chart_with_crd: Path, rendering: str) -> None:
    docs = {
        "helm-cluster-wide": lambda: helm_template(helm),
        "helm-namespaced": lambda: helm_template(helm, "--set", "watchNamespaces={a,b}"),
        "helm-crd": lambda: helm_template(helm, chart=chart_with_crd),
        "kustomize-cluster-wide": lambda: kustomize("cluster-wide"),
        "kustomize-namespaced": lambda: kustomize("namespaced"),
    }[rendering]()
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_is_strict() -> None:
    bogus = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}, "bogus": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bogus, K8S_VERSION, strict=True)
