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

    def superuser_password(text: str) -> str:
        documents = yaml.safe_load_all(text)
        secret = next(d for d in documents if d["metadata"]["name"].endswith("postgres-superuser"))
        return str(secret["data"]["password"])

    assert superuser_password(first) != superuser_password(second)


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


_HEAD = b"apiVersion: gocdha.io/v1alpha1\nkind: GoCDHACluster\n"
_LAUGHS = b'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n' + b"".join(
    b"%s: &%s [%s]\n" % (name, name, b",".join([b"*" + previous] * 10))
    for previous, name in zip(
        [bytes([c]) for c in b"abcdefghi"], [bytes([c]) for c in b"bcdefghij"], strict=True
    )
)


@pytest.mark.parametrize(
    ("content", "extra", "fragment"),
    [
        (_HEAD + b"metadata: {name: \xff\xfe}\n", (), "not UTF-8 text (byte 0xff at offset"),
        (b"\xef\xbb\xbf" + _HEAD + b"metadata: {name: \xc3}\n", (), "not UTF-8 text"),
        (_HEAD + b"metadata: [a, b]\nspec: {}\n", ("-n", "team"), "metadata: Input should be"),
        (_HEAD + b"metadata: hello\nspec: {}\n", ("-n", "team"), "metadata: Input should be"),
        (b"a: " + b"[" * 5000 + b"]" * 5000, (), "nested more than 64 levels deep"),
        (b"- " * 5000 + b"x", (), "nested more than 64 levels deep"),
        (b"a:\n" + b"".join(b"  " * i + b"b:\n" for i in range(1, 200)), (), "nested more than"),
        (_LAUGHS, (), "expands to more than 100000 values"),
        (b"!!python/object:os.system {}", (), "could not determine a constructor"),
        (b"a: 1\n" * (1024 * 1024), (), "larger than 4194304 bytes"),
        (b"\x00\x01", (), "not valid YAML"),
        (
            _HEAD + b"metadata: {name: x}\nspec: {sharedStorage: {size: 1e999999, "
            b"storageClassName: nfs}, failover: {maxLagBytes: 99999999999999999999999}}\n",
            (),
            "spec.sharedStorage.size: '1e999999' is out of range",
        ),
    ],
    ids=[
        "latin1",
        "truncated-utf8",
        "metadata-list",
        "metadata-scalar",
        "flow-5000",
        "sequence-5000",
        "block-200",
        "billion-laughs",
        "python-tag",
        "too-large",
        "control-bytes",
        "huge-numbers",
    ],
)
def test_hostile_input_exits_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    extra: tuple[str, ...],
    fragment: str,
) -> None:
    source = tmp_path / "in.yaml"
    source.write_bytes(content)
    assert main(["render", "-f", str(source), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert fragment in captured.err
    assert "Traceback" not in captured.err
    for line in captured.err.strip().splitlines():
        assert line.startswith(f"{source}: "), line
        assert len(line) < 400, line
