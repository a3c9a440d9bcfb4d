"""Least privilege of the rendered RBAC, in both modes, for the chart and the kustomize overlays.

The allow-list below is the contract: a rule the operator does not need fails here, and so does a
need that silently disappears (the exact-match test), because a missing verb is a runtime 403.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ._support import by_kind, helm_template, kustomize

NAMESPACED_CHILDREN = ("get", "list", "watch", "create", "patch", "delete")
#: (apiGroup, resource) -> verbs the operator may hold on namespaced objects.
ALLOWED_NAMESPACED: dict[tuple[str, str], frozenset[str]] = {
    ("gocdha.io", "gocdhaclusters"): frozenset({"get", "list", "watch", "patch"}),
    ("gocdha.io", "gocdhaclusters/status"): frozenset({"get", "patch"}),
    ("gocdha.io", "gocdhaclusters/finalizers"): frozenset({"update"}),
    ("", "events"): frozenset({"create", "patch"}),
    ("events.k8s.io", "events"): frozenset({"create", "patch"}),
    ("", "configmaps"): frozenset(NAMESPACED_CHILDREN),
    ("", "services"): frozenset(NAMESPACED_CHILDREN),
    ("", "persistentvolumeclaims"): frozenset(NAMESPACED_CHILDREN),
    ("", "secrets"): frozenset({"get", "create", "patch", "delete"}),
    ("", "pods"): frozenset({"get", "list", "watch"}),
    ("apps", "statefulsets"): frozenset(NAMESPACED_CHILDREN),
    ("apps", "deployments"): frozenset(NAMESPACED_CHILDREN),
    ("policy", "poddisruptionbudgets"): frozenset(NAMESPACED_CHILDREN),
    ("networking.k8s.io", "networkpolicies"): frozenset(NAMESPACED_CHILDREN),
    # Backup Jobs: started, read back (with their pods' termination messages), removed.
    ("batch", "jobs"): frozenset({"get", "list", "create", "delete"}),
}
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES = ("", "namespaces")
CLUSTER_READ = frozenset({"list", "watch"})

RENDERINGS = {
    "helm-cluster-wide": helm_template,
    "helm-namespaced": lambda helm: helm_template(helm, "--set", "watchNamespaces={a,b}"),
    "kustomize-cluster-wide": lambda helm: kustomize("cluster-wide"),
    "kustomize-namespaced": lambda helm: kustomize("namespaced"),
}


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules", []):
        assert not rule.get("nonResourceURLs"), "no non-resource URLs are needed"
        assert not rule.get("resourceNames"), "unexpected resourceNames"
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return out


def roles_bound(docs: list[dict[str, Any]], binding_kind: str) -> list[dict[str, Any]]:
    """The roles that bindings of ``binding_kind`` grant (fails on a dangling roleRef)."""
    roles = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d for d in docs}
    bound = []
    for b in by_kind(docs, binding_kind):
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        key = (ref["kind"], ref["name"], ns)
        assert key in roles, f"{binding_kind} {b['metadata']['name']} refers to missing {key}"
        bound.append(roles[key])
    return bound


@pytest.fixture(params=list(RENDERINGS))
def rendered(request: pytest.FixtureRequest, helm: Path) -> tuple[str, list[dict[str, Any]]]:
    return request.param, RENDERINGS[request.param](helm)


def test_no_dangerous_grants(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    assert roles
    for role in roles:
        for (group, resource), verbs in grants(role).items():
            where = f"{role['kind']}/{role['metadata']['name']}: {group or 'core'}/{resource}"
            assert "*" not in verbs and group != "*" and resource != "*", f"wildcard in {where}"
            assert not verbs & {"escalate", "bind", "impersonate"}, where
            assert resource not in {"pods/exec", "pods/attach", "pods/portforward"}, where
            assert not (resource == "secrets" and verbs & {"list", "watch"}), where
            if (group, resource) == CRDS:
                assert verbs <= CLUSTER_READ, f"CRD write access in {where}"
            assert resource not in {"roles", "clusterroles", "rolebindings", "clusterrolebindings"}
    for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] not in {"cluster-admin", "admin", "edit"}


def test_rules_match_the_contract_exactly(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    if name.endswith("cluster-wide"):
        (role,) = roles_bound(docs, "ClusterRoleBinding")
        assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
        expected = {k: set(v) for k, v in ALLOWED_NAMESPACED.items()}
        # kopf does not list namespaces when it runs with --all-namespaces.
        expected[CRDS] = set(CLUSTER_READ)
        assert grants(role) == expected
    else:
        namespaced_roles = roles_bound(docs, "RoleBinding")
        assert namespaced_roles
        for role in namespaced_roles:
            assert role["kind"] == "Role"
            assert grants(role) == {k: set(v) for k, v in ALLOWED_NAMESPACED.items()}


@pytest.mark.parametrize("name", ["helm-namespaced", "kustomize-namespaced"])
def test_namespaced_mode_grants_nothing_namespaced_cluster_wide(helm: Path, name: str) -> None:
    docs = RENDERINGS[name](helm)
    assert roles_bound(docs, "ClusterRoleBinding"), "the discovery ClusterRole is bound"
    for role in roles_bound(docs, "ClusterRoleBinding"):
        assert grants(role) == {CRDS: set(CLUSTER_READ), NAMESPACES: set(CLUSTER_READ)}, (
            f"ClusterRole {role['metadata']['name']} grants more than cluster-scoped reads"
        )


def test_the_checks_catch_a_bad_role() -> None:
    """The assertions above can fail: a role with a wildcard and exec is flagged."""
    bad = {
        "kind": "ClusterRole",
        "metadata": {"name": "bad"},
        "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["*"]}],
    }
    with pytest.raises(AssertionError):
        test_no_dangerous_grants(("x", [bad]))
