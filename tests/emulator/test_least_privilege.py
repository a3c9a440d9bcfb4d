"""Least privilege, derived from what the operator really does (issue #13).

A representative run on the API emulator — create, a spec update, a move to an existing claim, a
promotion request, a backup (its Job started, read back and removed), an invalid spec — is logged
request by request. The (group, resource, verb) triples in that log are what the operator needs;
the chart's and the kustomize manifests' RBAC rules must grant every one of them and nothing else,
apart from the few grants listed in :data:`NOT_OBSERVABLE`, each with the reason the emulator
cannot show it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from gocd_ha_operator.local.emulator import CHILD_RESOURCES
from tests.delivery.test_rbac import grants, roles_bound
from tests.emulator.test_reconciler import settled
from tests.support.delivery import by_kind, helm_template, kustomize
from tests.support.emulator import Harness, finish_backup_job

pytestmark = pytest.mark.emulator

Start = Callable[[], Any]
Triple = tuple[str, str, str]
JOBS: Final = "batch/v1/jobs"

#: Grants the operator needs that no API request of its own shows.
NOT_OBSERVABLE: Final[dict[Triple, str]] = {
    # Checked by the API server when the operator sets blockOwnerDeletion on a child's owner
    # reference (OwnerReferencesPermissionEnforcement); it is an authorization check, not a call.
    ("gocdha.io", "gocdhaclusters/finalizers", "update"): "blockOwnerDeletion",
    # The hand-over of the primary Lease in a promotion's Promoting step, which this scenario
    # cannot reach without Postgres (the request is refused); tests/leases/test_lease_watch.py
    # and tests/promotion make that request.
    ("coordination.k8s.io", "leases", "patch"): "the Promoting step's Lease hand-over",
    # Never used by the operator itself: the instance guards' Role grants it (each guard watches
    # its cluster's primary Lease), and RBAC's escalation check lets the operator create a Role
    # only with rights it holds (tests/leases/test_lease_rules.py checks that Role).
    ("coordination.k8s.io", "leases", "watch"): "granted to the instance guards' Role",
}

_PATH: Final = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?"
    r"(?:/(?P<sub>[^/]+))?$"
)


def triple(method: str, path: str, watch: bool) -> Triple | None:
    """What RBAC must allow for one request; ``None`` for discovery (allowed to everyone)."""
    match = _PATH.match(path)
    if match is None:
        return None
    parts = match.groupdict()
    if parts["namespace"] is None and parts["resource"] == "namespaces" and parts["name"]:
        return None  # /api/v1/namespaces/<ns> alone is not requested; keep the parser honest
    resource = parts["resource"]
    if parts["sub"]:
        resource = f"{resource}/{parts['sub']}"
    group = "" if parts["core"] else str(parts["group"])
    named = parts["name"] is not None
    verb = {
        "POST": "create",
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete",
    }.get(method)
    if verb is None:
        verb = "watch" if watch else ("get" if named else "list")
    return group, resource, verb


#: User agents of the operator's own requests: kopf's, and the Kubernetes Python client's. The
#: test's requests (acting as a user with kubectl) come from aiohttp and are not counted.
OPERATOR_AGENTS: Final = ("kopf/", "OpenAPI-Generator/")


def used(log: list[tuple[str, str, bool, str]]) -> set[Triple]:
    agents = {agent.split(" ")[0].split("/")[0] for *_, agent in log}
    assert any(a.startswith(OPERATOR_AGENTS) for *_, a in log), agents
    found = {
        triple(method, path, watch)
        for method, path, watch, agent in log
        if agent.startswith(OPERATOR_AGENTS)
    }
    return {t for t in found if t is not None}


def granted(role: dict[str, Any]) -> set[Triple]:
    return {(g, r, v) for (g, r), verbs in grants(role).items() for v in verbs}


async def scenario(harness: Harness, run_operator: Start) -> set[Triple]:
    await run_operator()
    await harness.create_cluster()
    await settled(harness)
    # Someone edits every child; the next reconcile (a spec update) patches each one back.
    for (kind, name), child in harness.children().items():
        resource = next(r for r, k in CHILD_RESOURCES.items() if k == kind)
        await drift(harness, resource, name, child)
    await harness.patch_cluster(
        {"metadata": {"generation": 2}, "spec": {"gocd": {"jvmOptions": ["-Xmx3g"]}}}
    )
    await settled(harness, generation=2)
    await harness.eventually(
        lambda: all(
            c["metadata"]["labels"].get("app.kubernetes.io/part-of") == "gocd-ha"
            for (kind, _), c in harness.children().items()
            # The primary Lease is created once and never patched: its guard renews it and a
            # promotion moves it (docs/operator.md, "What fences a primary").
            if kind != "Lease"
        ),
        message="every child is patched back",
    )
    await harness.patch_cluster(
        {
            "metadata": {"generation": 3},
            "spec": {
                "sharedStorage": {"existingClaim": "rwx", "size": None, "storageClassName": None}
            },
        }
    )
    await harness.eventually(
        lambda: ("PersistentVolumeClaim", "ci-shared") not in harness.children(),
        message="the created claim is deleted",
    )
    await harness.patch_cluster({"metadata": {"annotations": {"gocdha.io/promote": "t1"}}})
    await harness.eventually(
        lambda: any(e.get("reason") == "PromotionRefused" for e in harness.events()),
        timeout=30,
        message="the promotion request is handled (refused: nothing is reachable)",
    )
    # A backup: its Job is started, read back with its pod (the result), and removed.
    await harness.patch_cluster(
        {
            "metadata": {"generation": 4, "annotations": {"gocdha.io/backup": "b1"}},
            "spec": {"backup": {"volume": {"existingClaim": "backups"}}},
        }
    )
    jobs = await harness.eventually(lambda: harness.objects(JOBS), message="a backup Job")
    await finish_backup_job(harness, next(iter(jobs.values())), succeeded=True)
    await harness.eventually(lambda: not harness.objects(JOBS), message="the Job is removed")
    await harness.patch_cluster(
        {"metadata": {"generation": 5}, "spec": {"failover": {"mode": "Sometimes"}}}
    )
    await harness.eventually(
        lambda: any(e.get("reason") == "InvalidSpec" for e in harness.events()),
        message="the invalid spec is reported",
    )
    return used(harness.emulator.access_log)


async def drift(harness: Harness, resource: str, name: str, child: dict[str, Any]) -> None:
    group_version, plural = resource.rsplit("/", 1)
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    namespace = child["metadata"]["namespace"]
    await harness.request(
        "PATCH",
        f"{prefix}/namespaces/{namespace}/{plural}/{name}",
        {"metadata": {"labels": {"app.kubernetes.io/part-of": "edited"}}},
    )


def test_the_request_parser() -> None:
    assert triple("GET", "/apis/gocdha.io/v1alpha1/gocdhaclusters", True) == (
        "gocdha.io",
        "gocdhaclusters",
        "watch",
    )
    assert triple("PATCH", "/apis/gocdha.io/v1alpha1/namespaces/b/gocdhaclusters/ci/status", False)
    assert triple("DELETE", "/api/v1/namespaces/b/persistentvolumeclaims/x", False) == (
        "",
        "persistentvolumeclaims",
        "delete",
    )
    assert triple("GET", "/api/v1/namespaces/b/secrets/x", False) == ("", "secrets", "get")
    assert triple("GET", "/apis", False) is None


async def test_rbac_grants_exactly_what_the_operator_uses(
    harness: Harness, run_operator: Start, helm: Path
) -> None:
    needed = await scenario(harness, run_operator)
    assert ("", "persistentvolumeclaims", "delete") in needed
    assert ("gocdha.io", "gocdhaclusters/status", "patch") in needed
    needed |= set(NOT_OBSERVABLE)
    namespaced = {t for t in needed if t[1] not in {"customresourcedefinitions", "namespaces"}}
    cluster_scoped = needed - namespaced

    renderings: dict[str, list[dict[str, Any]]] = {
        "helm-cluster-wide": helm_template(helm),
        "helm-namespaced": helm_template(helm, "--set", "watchNamespaces={a,b}"),
        "kustomize-cluster-wide": kustomize("cluster-wide"),
        "kustomize-namespaced": kustomize("namespaced"),
    }
    for name, docs in renderings.items():
        operator_roles = [
            r
            for r in roles_bound(docs, "ClusterRoleBinding") + roles_bound(docs, "RoleBinding")
            # The webhook's and leader election's Roles are limited by name and checked in
            # tests/delivery/test_rbac.py (the operator here runs without leader election).
            if not r["metadata"]["name"].endswith(("-webhook", "-leader-election"))
        ]
        if name.endswith("cluster-wide"):
            (role,) = [r for r in operator_roles if r["kind"] == "ClusterRole"]
            have = granted(role)
            assert needed - have == set(), f"{name}: missing grants (a 403 at runtime)"
            assert not have - needed, f"{name}: grants never used: {sorted(have - needed)}"
        else:
            for role in by_kind(operator_roles, "Role"):
                have = granted(role)
                where = f"{name} Role in {role['metadata']['namespace']}"
                assert namespaced - have == set(), f"{where}: missing grants"
                assert have - namespaced == set(), f"{where}: grants never used"
            for role in by_kind(operator_roles, "ClusterRole"):
                extra = granted(role) - cluster_scoped - DISCOVERY_IN_NAMESPACED_MODE
                assert extra == set(), f"{name} ClusterRole: grants never used"


#: Namespaced mode only (rbac.clusterDiscovery, optional): kopf lists and watches namespaces when
#: it serves a list of them (seen when trying: GET /api/v1/namespaces, which the emulator cannot
#: serve, so this mode is not run here) and CRDs to notice the resource appearing.
DISCOVERY_IN_NAMESPACED_MODE: Final[set[Triple]] = {
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
