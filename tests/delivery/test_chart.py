"""The Helm chart: Chart.yaml, values and their schema, NOTES.txt, and what `helm template` makes
of it (labels, the Deployment, both RBAC modes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gocd_ha_operator.api import constants
from tests.support.delivery import CHART, NAMESPACE, RELEASE, by_kind, helm_template, one, run

FIXTURES = Path(__file__).parent / "fixtures"
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
MODES = {
    "cluster-wide": (),
    "namespaced": ("--set", "watchNamespaces={team-a,team-b}"),
}


def chart_yaml() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "Chart.yaml").read_text()))


def values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def test_chart_yaml_fields() -> None:
    chart = chart_yaml()
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "gocd-ha-operator" == CHART.name
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", chart["name"])
    assert SEMVER.match(chart["version"])
    assert chart["type"] == "application"
    assert chart["kubeVersion"] == ">=1.29.0-0"
    # The default image the chart deploys is the one the operator believes is its own.
    assert f"{values()['image']['repository']}:{chart['appVersion']}" == (
        constants.DEFAULT_OPERATOR_IMAGE
    )


def test_values_validate_against_strict_draft7_schema() -> None:
    s = schema()
    assert s["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(s)
    assert s["additionalProperties"] is False
    jsonschema.Draft7Validator(s).validate(values())


def test_schema_forbids_unknown_keys_in_every_own_object() -> None:
    """Every object the chart defines itself is closed; only pass-through Kubernetes types
    (securityContext, affinity, …) and string maps are open."""
    open_ok = {"podSecurityContext", "securityContext", "affinity", "tolerations", "extraEnv"}

    def walk(node: dict[str, Any], path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if "$ref" in sub or key in open_ok:
                continue
            if sub.get("type") == "object" and "properties" in sub:
                assert sub.get("additionalProperties") is False, f"{path}.{key} is open"
                walk(sub, f"{path}.{key}")

    walk(schema(), "")


def test_bad_values_fixture_is_rejected_for_each_mistake() -> None:
    bad = yaml.safe_load((FIXTURES / "bad-values.yaml").read_text())
    merged = {**values(), **bad, "image": {**values()["image"], **bad["image"]}}
    merged["rbac"] = {**values()["rbac"], **bad["rbac"]}
    errors = {
        "/".join(str(p) for p in e.absolute_path) or "<root>"
        for e in jsonschema.Draft7Validator(schema()).iter_errors(merged)
    }
    for expected in (
        "logFormat",
        "watchNamespaces/0",
        "image/tag",
        "image/digest",
        "rbac/create",
        "resources/requests/cpu",
        "securityContext/allowPrivilegeEscalation",
        "<root>",  # replicaCount: unknown key
    ):
        assert expected in errors, f"{expected} was accepted; errors: {sorted(errors)}"


def test_helm_enforces_the_schema(helm: Path) -> None:
    result = run(
        [str(helm), "template", RELEASE, str(CHART), "-f", str(FIXTURES / "bad-values.yaml")],
        check=False,
    )
    assert result.returncode != 0
    assert "schema" in result.stderr.lower(), result.stderr
    typo = run(
        [str(helm), "template", RELEASE, str(CHART), "--set", "logformat=plain"], check=False
    )
    assert typo.returncode != 0, "a misspelt key must fail, not be ignored"


def test_every_value_is_documented() -> None:
    """helm-docs style: each leaf key, or an ancestor of it, has a `# --` comment right above."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: dict[tuple[str, ...], bool] = {}
    stack: list[tuple[int, str]] = []
    undocumented: list[str] = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(k for _, k in stack), key)
        j = i - 1
        has_doc = False
        while j >= 0 and lines[j].strip().startswith("#"):
            has_doc = has_doc or lines[j].strip().startswith("# --")
            j -= 1
        documented[path] = has_doc or documented.get(path[:-1], False)
        stack.append((indent, key))
        is_leaf = rest != ""
        if is_leaf and not documented[path]:
            undocumented.append(".".join(path))
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_lint_passes_in_both_modes(helm: Path) -> None:
    for args in MODES.values():
        run([str(helm), "lint", "--strict", str(CHART), *args])


@pytest.mark.parametrize("mode", MODES)
def test_recommended_labels_on_every_object(helm: Path, mode: str) -> None:
    docs = helm_template(helm, *MODES[mode])
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        missing = [k for k in RECOMMENDED_LABELS if k not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        if "template" in doc.get("spec", {}):
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert all(k in pod_labels for k in RECOMMENDED_LABELS)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(docs, "Deployment")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_deployment_defaults(helm: Path) -> None:
    docs = helm_template(helm)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Leader election on by default: a new pod waits for the Lease, so rolling updates are safe.
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    c = container(docs)
    assert c["args"] == [
        "run",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=json",
        "--webhook-port=9443",
        f"--webhook-service={RELEASE}-webhook",
        f"--webhook-secret={RELEASE}-webhook-tls",
        f"--webhook-configuration={RELEASE}",
        "--metrics-bind-address=:8081",
        "--leader-election-lease-duration=15",
        "--leader-election-renew-deadline=10",
        "--leader-election-retry-period=2",
    ]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == constants.DEFAULT_OPERATOR_IMAGE
    assert env[constants.ENV_OPERATOR_IMAGE] == c["image"]
    probe = c["livenessProbe"]["httpGet"]
    port = next(p for p in c["ports"] if p["name"] == probe["port"])
    assert (probe["path"], port["containerPort"]) == ("/healthz", 8080)
    # Ready once the admission webhook listens; without the webhook nothing calls the operator.
    assert c["readinessProbe"]["tcpSocket"]["port"] == "webhook"
    no_webhook = container(helm_template(helm, "--set", "webhook.enabled=false"))
    assert "readinessProbe" not in no_webhook
    assert c["resources"]["requests"] and c["resources"]["limits"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa


def test_values_reach_the_deployment(helm: Path) -> None:
    digest = "sha256:" + "ab" * 32
    docs = helm_template(
        helm,
        "--set",
        "logFormat=plain",
        "--set",
        "livenessPort=9090",
        "--set",
        "metrics.port=9091",
        "--set",
        "image.tag=1.2.3",
        "--set",
        f"image.digest={digest}",
        "--set",
        "extraArgs={--verbose}",
        "--set",
        "watchNamespaces={ci}",
        "--set",
        "webhook.enabled=false",
    )
    c = container(docs)
    image = f"ghcr.io/gocd-ha-operator/gocd-ha-operator:1.2.3@{digest}"
    assert c["image"] == image
    assert {e["name"]: e.get("value") for e in c["env"]}[constants.ENV_OPERATOR_IMAGE] == image
    assert c["args"] == [
        "run",
        "--namespace=ci",
        "--liveness=http://0.0.0.0:9090/healthz",
        "--log-format=plain",
        "--metrics-bind-address=:9091",
        "--leader-election-lease-duration=15",
        "--leader-election-renew-deadline=10",
        "--leader-election-retry-period=2",
        "--verbose",
    ]
    assert c["ports"][0]["containerPort"] == 9090
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 9090
    assert one(docs, "NetworkPolicy")["spec"]["ingress"][0]["ports"][0]["port"] == 9090


def test_namespaced_mode_objects(helm: Path) -> None:
    docs = helm_template(helm, *MODES["namespaced"])
    c = container(docs)
    assert c["args"][:3] == ["run", "--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in c["args"]

    def operator_side(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            d for d in docs if not d["metadata"]["name"].endswith(("-webhook", "-leader-election"))
        ]

    roles = {r["metadata"]["namespace"] for r in operator_side(by_kind(docs, "Role"))}
    bindings = {b["metadata"]["namespace"] for b in operator_side(by_kind(docs, "RoleBinding"))}
    assert roles == bindings == {"team-a", "team-b"}
    for b in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
        ]
    no_discovery = helm_template(
        helm,
        *MODES["namespaced"],
        "--set",
        "rbac.clusterDiscovery=false",
        "--set",
        "rbac.aggregateClusterRoles=false",
    )
    assert not operator_side(by_kind(no_discovery, "ClusterRole"))
    assert not operator_side(by_kind(no_discovery, "ClusterRoleBinding"))


def test_two_replicas_elect_a_leader(helm: Path) -> None:
    docs = helm_template(helm, "--set", "replicas=2")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    c = container(docs)
    assert "--leader-election-lease-duration=15" in c["args"]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}) for e in c["env"]}
    assert env["POD_NAME"] == {"fieldPath": "metadata.name"}
    assert env["POD_NAMESPACE"] == {"fieldPath": "metadata.namespace"}
    role = next(r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-election"))
    assert role["metadata"]["namespace"] == NAMESPACE


def test_replicas_without_leader_election_are_refused(helm: Path) -> None:
    single = helm_template(helm, "--set", "leaderElection.enabled=false")
    assert one(single, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert "--no-leader-election" in container(single)["args"]
    with pytest.raises(AssertionError, match=r"needs leaderElection\.enabled"):
        helm_template(helm, "--set", "replicas=2", "--set", "leaderElection.enabled=false")
    with pytest.raises(AssertionError, match="renewDeadlineSeconds must be below"):
        helm_template(helm, "--set", "leaderElection.renewDeadlineSeconds=20")


def test_rbac_and_service_account_can_be_turned_off(helm: Path) -> None:
    docs = helm_template(helm, "--set", "rbac.create=false", "--set", "serviceAccount.create=false")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_helm_test_job(helm: Path) -> None:
    docs = helm_template(helm)
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    script = pod["containers"][0]["args"][0]
    compile(script, "helm-test", "exec")  # the inline check is valid Python
    assert "/apis/gocdha.io/v1alpha1" in script and "gocdhaclusters" in script
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["HEALTH_URL"] == f"http://{RELEASE}.{NAMESPACE}.svc:8080/healthz"
    # The test runs with no grant from this chart.
    assert pod["serviceAccountName"] == "default"


def test_notes(helm: Path) -> None:
    out = run(
        [str(helm), "install", RELEASE, str(CHART), "--dry-run=client", "-n", NAMESPACE]
    ).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl apply -f examples/" in notes
    assert "kubectl get gocdha -w" in notes
    assert "kubectl annotate gocdha <name> gocdha.io/promote=$(date +%s) --overwrite" in notes
    assert f"helm test {RELEASE}" in notes
    namespaced = run(
        [
            str(helm),
            "install",
            RELEASE,
            str(CHART),
            "--dry-run=client",
            "--set",
            "watchNamespaces={team-a}",
            "--set",
            "crds.enabled=false",
        ]
    ).stdout.split("NOTES:", 1)[1]
    assert "team-a" in namespaced
    assert "kubectl apply --server-side -f crds/" in namespaced
