"""The whole user journey on kind: build the image, install the chart with the real Helm, create a
GoCDHACluster, write through Postgres, promote with `kubectl annotate`, check that the new primary
serves and that nothing was lost, uninstall (the CRD stays).

The GoCDHACluster below follows docs/architecture.md §3. kind's default storage class provides only
ReadWriteOnce, so the shared (ReadWriteMany) volume is a statically bound hostPath volume on the
single kind node, handed to the resource as `sharedStorage.existingClaim`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from pytest_kind import KindCluster

from tests.support.clusters import Replace, cluster_body

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gocd-ha-operator"
CRD_SOURCE = ROOT / "crds" / "gocdhaclusters.gocdha.io.yaml"
IMAGE_REPOSITORY, IMAGE_TAG = "gocd-ha-operator", "e2e"
OPERATOR_NS = "gocd-ha-operator"
NS = "gocdha-e2e"
NAME = "ci"

SHARED_VOLUME = f"""
apiVersion: v1
kind: PersistentVolume
metadata:
  name: {NS}-shared
spec:
  capacity: {{storage: 2Gi}}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: ""
  hostPath: {{path: /var/gocdha-e2e-shared, type: Directory}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {NAME}-shared-rwx
  namespace: {NS}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: {NS}-shared
  resources: {{requests: {{storage: 2Gi}}}}
"""

CLUSTER = yaml.safe_dump(
    cluster_body(
        name=NAME,
        namespace=NS,
        spec=Replace(
            {
                "gocd": {
                    "image": "gocd/gocd-server:v26.1.0",
                    "standbyMode": "Cold",
                    "storage": {"size": "2Gi"},
                },
                "postgres": {"image": "postgres:17", "storage": {"size": "2Gi"}},
                "sharedStorage": {"existingClaim": f"{NAME}-shared-rwx"},
            }
        ),
    ),
    sort_keys=False,
)


def sh(*cmd: str | Path, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in cmd],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def wait_for(what: str, check: object, timeout: float, interval: float = 5) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()  # type: ignore[operator]
            if last:
                return last
        except (AssertionError, subprocess.CalledProcessError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")


@pytest.fixture(scope="module")
def installed(kind_cluster: KindCluster, helm_bin: Path) -> Iterator[KindCluster]:
    image = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
    sh("docker", "build", "-t", image, ROOT)
    kind_cluster.load_docker_image(image)
    env = {"KUBECONFIG": str(kind_cluster.kubeconfig_path)}
    extra: list[str] = []
    if not (CHART / "templates" / "crds.yaml").exists():
        assert CRD_SOURCE.exists(), "neither the chart nor crds/ has the CRD yet"
        sh("kubectl", "apply", "--server-side", "-f", CRD_SOURCE, env=env)
        extra = ["--set", "crds.enabled=false"]
    sh(
        helm_bin, "install", "gocd-ha-operator", CHART,
        "--namespace", OPERATOR_NS, "--create-namespace",
        "--set", f"image.repository={IMAGE_REPOSITORY}",
        "--set", f"image.tag={IMAGE_TAG}",
        "--set", "image.pullPolicy=Never",
        *extra, "--wait", "--timeout", "5m",
        env=env,
    )  # fmt: skip
    yield kind_cluster
    # Normally test_uninstall_keeps_the_crd has uninstalled already; this covers earlier failures.
    subprocess.run(
        [str(helm_bin), "uninstall", "gocd-ha-operator", "-n", OPERATOR_NS, "--ignore-not-found"],
        env={**os.environ, **env},
        check=False,
        capture_output=True,
    )


def test_helm_test_passes(installed: KindCluster, helm_bin: Path) -> None:
    env = {"KUBECONFIG": str(installed.kubeconfig_path)}
    sh(helm_bin, "test", "gocd-ha-operator", "--namespace", OPERATOR_NS, "--timeout", "5m", env=env)


def status(cluster: KindCluster) -> dict[str, object]:
    body = json.loads(cluster.kubectl("get", "gocdha", NAME, "-n", NS, "-o", "json"))
    return dict(body.get("status") or {})


def condition(cluster: KindCluster, kind: str) -> str | None:
    for c in status(cluster).get("conditions") or []:  # type: ignore[attr-defined]
        if c["type"] == kind:
            return str(c["status"])
    return None


def superuser_password(cluster: KindCluster) -> str:
    secret = json.loads(
        cluster.kubectl("get", "secret", f"{NAME}-postgres-superuser", "-n", NS, "-o", "json")
    )
    data = secret["data"]
    key = "password" if "password" in data else next(iter(data))
    return base64.b64decode(data[key]).decode()


def psql(cluster: KindCluster, side: str, sql: str) -> str:
    """Runs SQL in the Postgres pod of ``side`` over its local socket, as the superuser."""
    return str(cluster.kubectl(
        "exec", "-i", "-n", NS, f"{NAME}-pg-{side}-0", "--",
        "env", f"PGPASSWORD={superuser_password(cluster)}",
        "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-d", "gocd",
        "-v", "ON_ERROR_STOP=1", "-Atc", sql,
    )).strip()  # fmt: skip


def test_create_write_promote_uninstall(installed: KindCluster) -> None:
    cluster = installed
    node = f"{cluster.name}-control-plane"
    sh("docker", "exec", node, "mkdir", "-p", "-m", "0777", "/var/gocdha-e2e-shared")
    cluster.kubectl("create", "namespace", NS)
    cluster.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("apply", "-f", "-", input=SHARED_VOLUME + "---\n" + CLUSTER)

    wait_for("Ready=True", lambda: condition(cluster, "Ready") == "True", timeout=1200)
    old_primary = str(status(cluster)["primary"])
    new_primary = "b" if old_primary == "a" else "a"

    psql(cluster, old_primary, "CREATE TABLE e2e_marker (n int PRIMARY KEY)")
    psql(cluster, old_primary, "INSERT INTO e2e_marker SELECT generate_series(1, 1000)")
    assert psql(cluster, old_primary, "SELECT count(*) FROM e2e_marker") == "1000"

    cluster.kubectl(
        "annotate", "gocdha", NAME, "-n", NS, f"gocdha.io/promote={int(time.time())}", "--overwrite"
    )
    wait_for(
        f"side {new_primary} to be primary and Ready",
        lambda: (
            status(cluster).get("primary") == new_primary and condition(cluster, "Ready") == "True"
        ),
        timeout=1200,
    )
    assert psql(cluster, new_primary, "SELECT pg_is_in_recovery()") == "f"
    assert psql(cluster, new_primary, "SELECT count(*) FROM e2e_marker") == "1000", "data lost"
    psql(cluster, new_primary, "INSERT INTO e2e_marker VALUES (1001)")  # writable

    def gocd_healthy() -> bool:
        with cluster.port_forward(f"service/{NAME}-gocd", 8153, "-n", NS) as port:
            reply = requests.get(f"http://127.0.0.1:{port}/go/api/v1/health", timeout=10)
            return reply.status_code == 200

    wait_for("the new primary GoCD server to serve", gocd_healthy, timeout=900, interval=15)

    cluster.kubectl("delete", "gocdha", NAME, "-n", NS, "--wait=true", "--timeout=5m")


def test_uninstall_keeps_the_crd(installed: KindCluster, helm_bin: Path) -> None:
    """helm.sh/resource-policy: keep: uninstalling the operator must not delete the CRD (which
    would delete every GoCDHACluster and, through owner references, their databases)."""
    env = {"KUBECONFIG": str(installed.kubeconfig_path)}
    sh(helm_bin, "uninstall", "gocd-ha-operator", "--namespace", OPERATOR_NS, "--wait", env=env)
    releases = sh(helm_bin, "list", "--namespace", OPERATOR_NS, "-q", env=env)
    assert "gocd-ha-operator" not in releases.split()
    assert installed.kubectl("get", "crd", "gocdhaclusters.gocdha.io", "-o", "name").strip()
