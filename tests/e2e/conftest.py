"""End-to-end tests on a kind cluster (pytest-kind-ng). They need a Docker engine, a `kind` binary
and network access to pull images; where any of these is missing they are skipped with the reason.

Run them (see docs/install.md):

    .venv/bin/pytest tests/e2e -m e2e --kind-bin "$(command -v kind)" -v

A `kind` on PATH is used automatically. pytest-kind-ng would otherwise download kind v0.17, whose
default node (Kubernetes 1.25) is older than the chart's kubeVersion (>=1.29), so without a local
kind the tests skip instead.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import fetch_helm
import pytest
from pytest_kind import KindCluster

ROOT = Path(__file__).resolve().parents[2]


def docker_unavailable() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on PATH: kind needs a Docker engine"
    try:
        result = subprocess.run([docker, "info"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed ({exc}): kind needs a Docker engine"
    if result.returncode != 0:
        return "no Docker engine reachable (`docker info` failed): kind needs one"
    return None


def kind_binary(config: pytest.Config) -> str | None:
    return config.getoption("kind_bin") or shutil.which("kind")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    if not e2e:
        return
    reason = docker_unavailable()
    if reason is None and kind_binary(config) is None:
        reason = "no `kind` binary (PATH or --kind-bin); see tests/e2e/conftest.py"
    if reason is not None:
        for item in e2e:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def kind_cluster(request: pytest.FixtureRequest) -> Iterator[KindCluster]:
    """pytest-kind-ng's cluster, but with the local kind and kubectl (its download is too old)."""
    config = request.config
    kubectl = config.getoption("kind_kubectl_bin") or shutil.which("kubectl")
    cluster = KindCluster(
        config.getoption("cluster_name"),
        Path(config.getoption("kubeconfig")) if config.getoption("kubeconfig") else None,
        image=config.getoption("kind_image"),
        kind_path=Path(kind_binary(config) or "kind"),
        kubectl_path=Path(kubectl) if kubectl else None,
    )
    cluster.create()
    yield cluster
    if not config.getoption("keep_cluster"):
        cluster.delete()


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return fetch_helm.fetch_helm(ROOT / ".cache" / "helm")
