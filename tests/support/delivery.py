"""Shared helpers of the delivery tests: paths, rendering with the real Helm and kustomize, and a
port of the Pod Security Standard "restricted" checks.

Rendering goes through real binaries on purpose: the chart is only as good as what ``helm
template`` makes of it, and ``kubectl kustomize`` is what ``kubectl apply -k`` runs.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
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


# --- Pod Security Standard "restricted" -----------------------------------------------------------
# Ported from the rules of kubernetes/pod-security-admission (policy/check_*.go): baseline plus the
# restricted controls. Returns human-readable violations; an empty list means the pod is admitted.
RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
GOOD_SECCOMP: Final = frozenset({"RuntimeDefault", "Localhost"})


def pss_restricted_violations(template: dict[str, Any]) -> list[str]:
    spec = template.get("spec", {})
    pod_sc = spec.get("securityContext") or {}
    bad: list[str] = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            bad.append(f"{host} is true")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            bad.append(f"volume {volume.get('name')}: type {sorted(kinds)} not allowed")
    if pod_sc.get("runAsUser") == 0:
        bad.append("pod runAsUser is 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in GOOD_SECCOMP:
        bad.append(f"pod seccompProfile {pod_seccomp}")
    if pod_sc.get("sysctls"):
        bad.append("pod sets sysctls")
    containers = [
        *spec.get("initContainers", []),
        *spec.get("containers", []),
        *spec.get("ephemeralContainers", []),
    ]
    if not spec.get("containers"):
        bad.append("no containers")
    for c in containers:
        name = c.get("name")
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be set to false")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            bad.append(f"{name}: runAsNonRoot must be true (container or pod)")
        if sc.get("runAsUser") == 0:
            bad.append(f"{name}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in GOOD_SECCOMP:
            bad.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost, is {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities.drop must include ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps.get('add')}")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount {sc.get('procMount')}")
        for se in ("seLinuxOptions",):
            opts = sc.get(se) or {}
            if opts.get("type") not in (None, "", "container_t", "container_init_t"):
                bad.append(f"{name}: seLinuxOptions.type {opts.get('type')}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort {port['hostPort']}")
    return bad
