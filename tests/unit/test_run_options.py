"""``gocd-ha-operator run`` refuses bad webhook and namespace configuration before connecting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gocd_ha_operator.cli.main import main


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--webhook-secret=s"], "the --webhook-* options need --webhook-port"),
        (["--webhook-port=0", "--webhook-service=w", "--webhook-secret=s"], "between 1 and 65535"),
        (["--webhook-port=9443", "--webhook-secret=s"], "needs --webhook-service"),
        (["--webhook-port=9443", "--webhook-service=w"], "needs --webhook-secret"),
        (
            ["--webhook-port=9443", "--webhook-service=w", "--webhook-cert-dir=/nonexistent/x"],
            "is not a directory",
        ),
    ],
)
def test_bad_webhook_options_exit_2(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert main(["run", "--all-namespaces", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run: ") and message in err
    assert "Traceback" not in err


def test_bad_operator_namespace_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOCDHA_OPERATOR_NAMESPACE", "Not A Namespace")
    assert main(["run", "--all-namespaces"]) == 2
    assert "GOCDHA_OPERATOR_NAMESPACE: 'Not A Namespace' is not a namespace name" in (
        capsys.readouterr().err
    )


def test_render_names_the_operator_namespace_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "c.yaml"
    source.write_text(
        "apiVersion: gocdha.io/v1alpha1\nkind: GoCDHACluster\nmetadata: {name: x}\n"
        "spec: {sharedStorage: {existingClaim: rwx}}\n"
    )
    assert main(["render", "-f", str(source), "--operator-namespace", "Bad_NS"]) == 2
    assert capsys.readouterr().err.startswith("--operator-namespace: 'Bad_NS' is not a namespace")
    assert main(["render", "-f", str(source), "--operator-namespace", "ops"]) == 0
    assert "kubernetes.io/metadata.name: ops" in capsys.readouterr().out
