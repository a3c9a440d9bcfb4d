"""``gocd-ha-operator render``: every child as YAML, and readable errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gocd_ha_operator.cli.main import main
from tests.support.clusters import Replace, cluster_body

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def render(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gocd_ha_operator.cli.main", "render", "-f", str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def test_examples_cover_the_documented_cases() -> None:
    names = {e.name for e in EXAMPLES}
    assert {
        "cold-cluster.yaml",
        "warm-cluster-gocd-21.2.yaml",
        "existing-claim-cluster.yaml",
        "automatic-failover-cluster.yaml",
    } <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
@pytest.mark.parametrize("primary", ["a", "b"])
def test_every_rendered_object_is_valid_kubernetes(example: Path, primary: str) -> None:
    result = render(example, "--primary", primary)
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert len(documents) >= 20
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)


def test_render_uses_the_namespace_flag_when_the_file_has_none(tmp_path: Path) -> None:
    source = tmp_path / "c.yaml"
    body = cluster_body(
        metadata=Replace({"name": "x"}), spec=Replace({"sharedStorage": {"existingClaim": "rwx"}})
    )
    source.write_text(yaml.safe_dump(body))
    result = render(source, "-n", "team-a")
    assert result.returncode == 0, result.stderr
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all(result.stdout)} == {"team-a"}


def test_generated_credentials_differ_between_runs() -> None:
    first, second = render(EXAMPLES[0]).stdout, render(EXAMPLES[0]).stdout
    secret = lambda text: next(  # noqa: E731
        d for d in yaml.safe_load_all(text) if d["metadata"]["name"].endswith("postgres-superuser")
    )["data"]["password"]
    assert secret(first) != secret(second)


def test_invalid_input_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    source = tmp_path / "bad.yaml"
    body = cluster_body(
        metadata=Replace({"name": "ci"}),
        spec=Replace(
            {
                "gocd": {"image": "gocd/gocd-server:v26.1.0", "standbyMode": "Warm"},
                "sharedStorage": {"size": "1Gi"},
            }
        ),
    )
    source.write_text(yaml.safe_dump(body))
    result = render(source)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert any("spec.gocd.standbyMode" in line and "removed in 23.1.0" in line for line in lines)
    assert any("spec.sharedStorage.storageClassName" in line for line in lines)
    assert all(line.startswith(str(source)) for line in lines)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("spec: [unclosed", "not valid YAML (line 1"),
        ("", "contains no GoCDHACluster"),
        ("- a\n- b\n", "(document): must be a mapping"),
        ("apiVersion: v1\nkind: ConfigMap\n", "apiVersion: must be gocdha.io/v1alpha1"),
    ],
)
def test_unreadable_input_is_reported_plainly(tmp_path: Path, content: str, fragment: str) -> None:
    source = tmp_path / "in.yaml"
    source.write_text(content)
    result = render(source)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_crd_command_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    crd = yaml.safe_load(capsys.readouterr().out)
    assert crd["kind"] == "CustomResourceDefinition"
