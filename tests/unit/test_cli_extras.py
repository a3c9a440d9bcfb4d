"""``demo`` needs the optional ``demo`` extra (kmock); without it the CLI says how to install it."""

from __future__ import annotations

import sys

import pytest

from gocd_ha_operator.cli import main as cli


@pytest.fixture
def without_kmock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import kmock`` fails as if the package were not installed (a None entry in sys.modules
    makes the import raise ModuleNotFoundError naming it)."""
    monkeypatch.setitem(sys.modules, "kmock", None)
    # A demo module imported earlier in this process would hide the missing package.
    for name in [m for m in sys.modules if m.startswith("gocd_ha_operator.local")]:
        monkeypatch.delitem(sys.modules, name)


def test_demo_without_kmock_exits_2_with_the_install_command(
    without_kmock: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "pip install 'gocd-ha-operator[demo]'" in lines[0]
    assert "kmock" in lines[0]


def test_help_still_lists_demo_without_kmock(
    without_kmock: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_other_commands_run_without_kmock(
    without_kmock: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["crd"]) == 0
    assert "CustomResourceDefinition" in capsys.readouterr().out


def test_no_message_when_kmock_is_installed() -> None:
    pytest.importorskip("kmock")
    assert cli.missing_extra("demo") is None
    assert cli.missing_extra("render") is None
