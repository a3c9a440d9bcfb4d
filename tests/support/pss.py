"""The one Pod Security Standards "restricted" checker of the tests.

A port of kubernetes/pod-security-admission (policy/check_*.go): the baseline controls (host
namespaces, privileged, hostPath and other volume types, hostPort, procMount, SELinux, sysctls)
plus the restricted ones (no privilege escalation, non-root, seccomp, capabilities). The unit tests
run it over the builders' pod specs and the delivery tests over the rendered chart and kustomize
manifests, so a pod template that the API server's PSS admission would refuse fails here first.
"""

from __future__ import annotations

from typing import Any, Final

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
ALLOWED_SELINUX_TYPES: Final = frozenset({"", "container_t", "container_init_t"})


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """Human-readable violations of a pod spec; an empty list means the pod is admitted."""
    pod_sc = pod_spec.get("securityContext") or {}
    bad: list[str] = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(host):
            bad.append(f"{host} is true")
    for volume in pod_spec.get("volumes") or []:
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
    if (pod_sc.get("seLinuxOptions") or {}).get("type") not in (None, *ALLOWED_SELINUX_TYPES):
        bad.append(f"pod seLinuxOptions.type {pod_sc['seLinuxOptions']['type']}")
    if not pod_spec.get("containers"):
        bad.append("no containers")
    containers = [
        *(pod_spec.get("initContainers") or []),
        *(pod_spec.get("containers") or []),
        *(pod_spec.get("ephemeralContainers") or []),
    ]
    for container in containers:
        bad.extend(_container_violations(container, pod_sc, pod_seccomp))
    return bad


def _container_violations(
    container: dict[str, Any], pod_sc: dict[str, Any], pod_seccomp: str | None
) -> list[str]:
    name = container.get("name")
    sc = container.get("securityContext") or {}
    bad: list[str] = []
    if sc.get("privileged"):
        bad.append(f"{name}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        bad.append(f"{name}: allowPrivilegeEscalation must be set to false")
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        bad.append(f"{name}: runAsNonRoot must be true (container or pod)")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
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
    if (sc.get("seLinuxOptions") or {}).get("type") not in (None, *ALLOWED_SELINUX_TYPES):
        bad.append(f"{name}: seLinuxOptions.type {sc['seLinuxOptions']['type']}")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            bad.append(f"{name}: hostPort {port['hostPort']}")
    return bad
