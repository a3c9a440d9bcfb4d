"""The Postgres NetworkPolicy of every GoCDHACluster admits the operator as installed (issue #13).

The policy the builders render is compared with the operator pod the chart (with and without
nameOverride/fullnameOverride, in another namespace) and the kustomize overlays install: the pod
must carry every label the policy's operator peer selects, and the namespace it is told it runs
in must be the namespace it is installed into.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gocd_ha_operator.api.constants import ENV_OPERATOR_NAMESPACE, operator_namespace_from
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.builders import BuildInputs
from gocd_ha_operator.builders.postgres import build_postgres_network_policy
from gocd_ha_operator.rules.topology import Topology
from tests.support.delivery import RELEASE, by_kind, helm_template, kustomize, load_all, one, run

CLUSTER = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": "ci", "namespace": "build"},
    "spec": {"sharedStorage": {"existingClaim": "rwx"}},
}


def operator_peer(operator_namespace: str) -> dict[str, Any]:
    inputs = BuildInputs(
        cluster=parse_cluster(CLUSTER),
        topology=Topology(primary="a"),
        credentials=ClusterCredentials.generate(),
        operator_image="img",
    )
    policy = build_postgres_network_policy(
        dataclasses.replace(inputs, operator_namespace=operator_namespace)
    )
    peers = policy["spec"]["ingress"][0]["from"]
    (peer,) = [p for p in peers if "namespaceSelector" in p]
    return dict(peer)


def admitted(docs: list[dict[str, Any]], installed_in: str) -> None:
    """The operator pod of ``docs``, installed in ``installed_in``, matches its policy peer."""
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["namespace"] == installed_in
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    namespace = operator_namespace_from(env)
    assert env[ENV_OPERATOR_NAMESPACE] == installed_in
    peer = operator_peer(namespace)
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": installed_in}
    wanted = peer["podSelector"]["matchLabels"]
    assert wanted.items() <= pod_labels.items(), (wanted, pod_labels)


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("--set", "nameOverride=ci-ha"),
        ("--set", "fullnameOverride=something-else"),
        ("--set", "nameOverride=x", "--set", "podLabels.team=platform"),
    ],
    ids=["default", "nameOverride", "fullnameOverride", "podLabels"],
)
def test_chart_operator_is_admitted_whatever_its_name(
    helm: Path, overrides: tuple[str, ...]
) -> None:
    admitted(helm_template(helm, *overrides), "gocd-ha-operator")


def test_name_override_changes_the_name_label_but_not_the_admitted_one(helm: Path) -> None:
    """The proof that the test above can fail: nameOverride does change app.kubernetes.io/name."""
    default = one(helm_template(helm), "Deployment")["spec"]["template"]["metadata"]["labels"]
    renamed = one(helm_template(helm, "--set", "nameOverride=ci-ha"), "Deployment")
    labels = renamed["spec"]["template"]["metadata"]["labels"]
    assert default["app.kubernetes.io/name"] != labels["app.kubernetes.io/name"] == "ci-ha"
    assert operator_peer("x")["podSelector"]["matchLabels"].items() <= labels.items()
    assert "app.kubernetes.io/name" not in operator_peer("x")["podSelector"]["matchLabels"]


def test_chart_in_another_namespace(helm: Path) -> None:
    out = run([str(helm), "template", RELEASE, "charts/gocd-ha-operator", "-n", "platform-ops"])
    admitted(load_all(out.stdout), "platform-ops")


@pytest.mark.parametrize("overlay", ["cluster-wide", "namespaced"])
def test_kustomize_operator_is_admitted(overlay: str) -> None:
    docs = kustomize(overlay)
    (namespace,) = by_kind(docs, "Namespace")
    admitted(docs, namespace["metadata"]["name"])
