"""Shared helpers of the delivery tests: paths and rendering with the real Helm and kustomize (the
Pod Security Standard checker they run over the rendered pods is ``tests/support/pss.py``).

Rendering goes through real binaries on purpose: the chart is only as good as what ``helm
template`` makes of it, and ``kubectl kustomize`` is what ``kubectl apply -k`` runs.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
CHART: Final = ROOT / "charts" / "gocd-ha-operator"
CRD_SOURCE: Final = ROOT / "crds" / "gocdhaclusters.gocdha.io.yaml"
CRD_TEMPLATE: Final = CHART / "templates" / "crds.yaml"
OVERLAYS: Final = ROOT / "manifests" / "overlays"
RELEASE: Final = "gocd-ha-operator"
NAMESPACE: Final = "gocd-ha-operator"

# A minimal but valid apiextensions/v1 CRD used to exercise the CRD plumbing of the chart until the
# generated one exists in crds/. It is never written into the repository. Its description contains
# Go-template-like text, which the sync tool must escape.
STAND_IN_CRD: Final = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gocdhaclusters.gocdha.io
  labels:
    app.kubernetes.io/name: should-be-replaced-by-the-chart
    example.org/kept: "yes"
  annotations:
    example.org/generator: stand-in
spec:
  group: gocdha.io
  names:
    kind: GoCDHACluster
    listKind: GoCDHAClusterList
    plural: gocdhaclusters
    singular: gocdhacluster
    shortNames: [gocdha]
    categories: [gocd]
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources:
        status: {}
      additionalPrinterColumns:
        - name: Ready
          type: string
          jsonPath: .status.conditions[?(@.type=="Ready")].status
      schema:
        openAPIV3Schema:
          type: object
          description: "Stand-in. Literal braces: {{ .Values.nothing }} and }} stay as they are."
          properties:
            spec:
              type: object
              x-kubernetes-preserve-unknown-fields: true
            status:
              type: object
              x-kubernetes-preserve-unknown-fields: true
"""


def run(
    cmd: list[str], *, check: bool = True, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def load_all(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def helm_template(helm: Path, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
    """``helm template`` as the gate runs it, with extra ``--set``/``-f`` arguments."""
    out = run([str(helm), "template", RELEASE, str(chart), "--namespace", NAMESPACE, *args])
    return load_all(out.stdout)


def kustomize(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise AssertionError("kubectl (with built-in kustomize) is needed and not on PATH")
    return load_all(run([kubectl, "kustomize", str(OVERLAYS / overlay)]).stdout)


#: A way to render the operator's manifests: the chart or a kustomize overlay.
Render = Callable[[Path], list[dict[str, Any]]]


def renderings(watch_namespaces: str) -> dict[str, Render]:
    """The four ways of installing the operator, keyed by name (``helm`` is the chart tool):
    the chart and kustomize, each cluster-wide and watching ``watch_namespaces`` only (a Helm
    list such as ``{a,b}``; the kustomize overlay has its own)."""
    return {
        "helm-cluster-wide": helm_template,
        "helm-namespaced": lambda helm: helm_template(
            helm, "--set", f"watchNamespaces={watch_namespaces}"
        ),
        "kustomize-cluster-wide": lambda _helm: kustomize("cluster-wide"),
        "kustomize-namespaced": lambda _helm: kustomize("namespaced"),
    }


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``Kind/name``, pod template) for every object that makes pods."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Pod":
            yield name, doc
        elif doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield name, doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            yield name, doc["spec"]["jobTemplate"]["spec"]["template"]
