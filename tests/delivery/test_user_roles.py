"""The ClusterRoles for people who use the operator: `gocdha-view` and `gocdha-edit`, aggregated
into Kubernetes' built-in `view`, `edit` and `admin`, from the chart and the kustomize base alike.

A namespace editor must be able to create a GoCDHACluster and `kubectl annotate` it (promotion is
an annotation: a `patch`); a viewer must be able to read it and nothing more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.delivery import (
    CHART,
    NAMESPACE,
    RELEASE,
    by_kind,
    helm_template,
    renderings,
    run,
)

AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
READ = {"get", "list", "watch"}
WRITE = {"create", "update", "patch", "delete"}
#: role name -> (built-in roles it aggregates into, verbs on gocdhaclusters)
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "gocdha-view": ({"view", "edit", "admin"}, READ),
    "gocdha-edit": ({"edit", "admin"}, READ | WRITE),
}

RENDERINGS = renderings("{a,b}")


def user_roles(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        role["metadata"]["name"]: role
        for role in by_kind(docs, "ClusterRole")
        if any(k.startswith(AGGREGATE) for k in role["metadata"].get("labels", {}))
    }


def aggregated_into(role: dict[str, Any]) -> set[str]:
    return {
        key.removeprefix(AGGREGATE)
        for key, value in role["metadata"]["labels"].items()
        if key.startswith(AGGREGATE) and value == "true"
    }


def check(role: dict[str, Any]) -> None:
    name = role["metadata"]["name"]
    targets, verbs = EXPECTED[name]
    assert aggregated_into(role) == targets, name
    assert "aggregationRule" not in role, f"{name} is aggregated into others, not an aggregate"
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["gocdha.io"] and rule["resources"] == ["gocdhaclusters"], name
    assert set(rule["verbs"]) == verbs, name
    assert len(rule["verbs"]) == len(verbs), f"{name}: repeated verbs"


@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_view_and_edit_roles(helm: Path, rendering: str) -> None:
    docs = RENDERINGS[rendering](helm)
    roles = user_roles(docs)
    assert set(roles) == set(EXPECTED), rendering
    for role in roles.values():
        check(role)
    # Bound to nobody: they only feed the built-in roles.
    bound = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
    bound |= {b["roleRef"]["name"] for b in by_kind(docs, "RoleBinding")}
    assert not bound & set(EXPECTED)


@pytest.mark.parametrize("values", [("rbac.aggregateClusterRoles=false",), ("rbac.create=false",)])
def test_chart_value_turns_them_off(helm: Path, values: tuple[str, ...]) -> None:
    args = [a for v in values for a in ("--set", v)]
    docs = helm_template(helm, *args)
    assert user_roles(docs) == {}
    assert by_kind(docs, "Deployment")


@pytest.mark.parametrize("enabled", [True, False])
def test_notes_mention_them_when_installed(helm: Path, enabled: bool) -> None:
    out = run(
        [
            str(helm),
            "install",
            RELEASE,
            str(CHART),
            "--dry-run=client",
            "-n",
            NAMESPACE,
            "--set",
            f"rbac.aggregateClusterRoles={str(enabled).lower()}",
        ]
    ).stdout
    notes = out.split("NOTES:", 1)[1]
    assert ("gocdha-edit" in notes) is enabled


def test_the_check_rejects_wrong_roles() -> None:
    """`check` fails for a viewer that may write and for an editor missing the view label."""
    viewer: dict[str, Any] = {
        "kind": "ClusterRole",
        "metadata": {"name": "gocdha-view", "labels": {f"{AGGREGATE}view": "true"}},
        "rules": [
            {"apiGroups": ["gocdha.io"], "resources": ["gocdhaclusters"], "verbs": sorted(READ)}
        ],
    }
    with pytest.raises(AssertionError):
        check(viewer)  # not aggregated into edit and admin
    viewer["metadata"]["labels"] |= {f"{AGGREGATE}edit": "true", f"{AGGREGATE}admin": "true"}
    check(viewer)
    viewer["rules"][0]["verbs"].append("patch")
    with pytest.raises(AssertionError):
        check(viewer)
