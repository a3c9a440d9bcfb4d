"""Least privilege of the rendered RBAC, in both modes, for the chart and the kustomize overlays.

The allow-list below is the contract: a rule the operator does not need fails here, and so does a
need that silently disappears (the exact-match test), because a missing verb is a runtime 403.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.delivery import NAMESPACE, by_kind, helm_template, renderings

CHILDREN = frozenset({"get", "create", "patch"})
#: (apiGroup, resource) -> verbs the operator may hold on namespaced objects: exactly what it calls
#: (tests/emulator/test_least_privilege.py derives the same set from a logged run).
ALLOWED_NAMESPACED: dict[tuple[str, str], frozenset[str]] = {
    ("gocdha.io", "gocdhaclusters"): frozenset({"get", "list", "watch", "patch"}),
    ("gocdha.io", "gocdhaclusters/status"): frozenset({"patch"}),
    ("gocdha.io", "gocdhaclusters/finalizers"): frozenset({"update"}),
    ("", "events"): frozenset({"create"}),
    ("", "configmaps"): CHILDREN,
    ("", "services"): CHILDREN,
    ("", "persistentvolumeclaims"): CHILDREN | {"delete"},
    ("", "secrets"): CHILDREN,
    ("apps", "statefulsets"): CHILDREN,
    ("apps", "deployments"): CHILDREN,
    ("policy", "poddisruptionbudgets"): CHILDREN,
    ("networking.k8s.io", "networkpolicies"): CHILDREN,
    # Backup Jobs: started, listed with their pods (termination message), removed.
    ("batch", "jobs"): frozenset({"list", "create", "delete"}),
    ("", "pods"): frozenset({"list"}),
    # Issue #12: each cluster's primary Lease, and the instance guards' ServiceAccount and Role
    # (limited by resourceNames to that Lease and the role ConfigMap). RBAC's escalation check
    # lets the operator grant only rights it holds itself; it has no escalate/bind (so it holds
    # `watch` of Leases because the guards' Role grants it, issue #16).
    ("coordination.k8s.io", "leases"): frozenset({"get", "create", "patch", "watch"}),
    ("", "serviceaccounts"): frozenset({"get", "create", "patch"}),
    ("rbac.authorization.k8s.io", "roles"): frozenset({"get", "create", "patch"}),
    ("rbac.authorization.k8s.io", "rolebindings"): frozenset({"get", "create", "patch"}),
}
#: The operator's leader-election Role in its own namespace: exactly its Lease.
LEADER_ELECTION_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["gocd-ha-operator"],
        "verbs": ["get", "patch"],
    },
]
RBAC_OBJECTS = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES = ("", "namespaces")
CLUSTER_READ = frozenset({"list", "watch"})

RENDERINGS = renderings("{a,b}")


def is_webhook_role(role: dict[str, Any]) -> bool:
    """The webhook's certificate roles (checked by test_webhook_roles_are_limited_by_name)."""
    return bool(role["metadata"]["name"].endswith("-webhook"))


def is_leader_election(role: dict[str, Any]) -> bool:
    return str(role["metadata"]["name"]).endswith("-leader-election")


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules", []):
        assert not rule.get("nonResourceURLs"), "no non-resource URLs are needed"
        if not (is_webhook_role(role) or is_leader_election(role)):
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
        if not is_webhook_role(roles[key]):
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
            if resource in RBAC_OBJECTS:
                # Only the guards' Role/RoleBinding, never a cluster-wide one, never more.
                assert resource in {"roles", "rolebindings"}, where
                assert verbs <= {"get", "create", "patch"}, where
    for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] not in {"cluster-admin", "admin", "edit"}


def test_rules_match_the_contract_exactly(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    if name.endswith("cluster-wide"):
        (role,) = roles_bound(docs, "ClusterRoleBinding")
        # Only the webhook's certificate Role (test_webhook_roles_are_limited_by_name) and the
        # leader-election Role (test_leader_election_reaches_only_its_lease).
        assert all(is_leader_election(r) for r in roles_bound(docs, "RoleBinding"))
        expected = {k: set(v) for k, v in ALLOWED_NAMESPACED.items()}
        # kopf does not list namespaces when it runs with --all-namespaces.
        expected[CRDS] = set(CLUSTER_READ)
        assert grants(role) == expected
    else:
        namespaced_roles = [
            r for r in roles_bound(docs, "RoleBinding") if not is_leader_election(r)
        ]
        assert namespaced_roles
        for role in namespaced_roles:
            assert role["kind"] == "Role"
            assert grants(role) == {k: set(v) for k, v in ALLOWED_NAMESPACED.items()}


def test_leader_election_reaches_only_its_lease(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    (role,) = [r for r in roles_bound(docs, "RoleBinding") if is_leader_election(r)]
    assert role["rules"] == LEADER_ELECTION_RULES


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


WEBHOOK_ROLE_RULES: dict[str, list[dict[str, Any]]] = {
    "Role": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["gocd-ha-operator-webhook-tls"],
            "verbs": ["get", "patch"],
        },
    ],
    "ClusterRole": [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": ["gocd-ha-operator"],
            "verbs": ["get", "patch"],
        }
    ],
}


def test_webhook_roles_are_limited_by_name(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The generated certificate needs its own Secret (in the operator's namespace only) and the
    caBundle of the release's own ValidatingWebhookConfiguration, by name."""
    _, docs = rendered
    webhook_roles = [
        r for r in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") if is_webhook_role(r)
    ]
    assert sorted(r["kind"] for r in webhook_roles) == ["ClusterRole", "Role"]
    for role in webhook_roles:
        assert role["rules"] == WEBHOOK_ROLE_RULES[role["kind"]], role["metadata"]["name"]
        if role["kind"] == "Role":
            assert role["metadata"]["namespace"] == NAMESPACE
    (vwc,) = by_kind(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["name"] == "gocd-ha-operator"
    secret_arg = "--webhook-secret=gocd-ha-operator-webhook-tls"
    (container,) = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert secret_arg in container["args"]
    assert "--webhook-configuration=gocd-ha-operator" in container["args"]


def test_no_webhook_roles_with_cert_manager_or_without_webhook(helm: Path) -> None:
    for values in (("webhook.certManager.enabled=true",), ("webhook.enabled=false",)):
        docs = helm_template(helm, *(a for v in values for a in ("--set", v)))
        roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
        assert not [r for r in roles if is_webhook_role(r)], values
