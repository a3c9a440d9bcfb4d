"""Every pod template the chart and the overlays render meets the Pod Security Standard
"restricted", plus this project's own bars (read-only root filesystem, requests and limits)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.support.delivery import pod_templates, renderings
from tests.support.pss import restricted_violations

RENDERINGS = renderings("{a}")


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_pod_templates_are_restricted(helm: Path, rendering: str) -> None:
    templates = list(pod_templates(RENDERINGS[rendering](helm)))
    names = [n for n, _ in templates]
    assert any(n.startswith("Deployment/") for n in names)
    if rendering.startswith("helm"):
        assert any(n.startswith("Job/") for n in names), "the helm test Job is checked too"
    for name, template in templates:
        assert restricted_violations(template.get("spec", {})) == [], name
        for c in template["spec"]["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            assert not c["image"].endswith(":latest"), name


def _good_pod() -> dict[str, Any]:
    return {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        }
    }


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["spec"].update(hostNetwork=True), "hostNetwork"),
        (lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {}}), "hostPath"),
        (
            lambda p: p["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
            "allowPrivilegeEscalation",
        ),
        (lambda p: p["spec"]["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p: p["spec"]["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (
            lambda p: p["spec"]["containers"][0]["securityContext"].update(
                capabilities={"drop": ["NET_RAW"]}
            ),
            "drop must include ALL",
        ),
        (
            lambda p: p["spec"]["containers"][0]["securityContext"].update(
                capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}
            ),
            "adds capabilities",
        ),
        (lambda p: p["spec"]["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser"),
        (
            lambda p: p["spec"]["containers"][0]["securityContext"].update(privileged=True),
            "privileged",
        ),
        (lambda p: p["spec"]["containers"][0].update(ports=[{"hostPort": 80}]), "hostPort"),
    ],
)
def test_checker_flags_each_violation(mutate: Any, expected: str) -> None:
    assert restricted_violations(_good_pod()["spec"]) == []
    pod = copy.deepcopy(_good_pod())
    mutate(pod)
    violations = restricted_violations(pod["spec"])
    assert any(expected in v for v in violations), violations
