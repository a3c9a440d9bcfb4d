"""The shipped alert rules and dashboard: valid for Prometheus, behaving as described, generated
from one source, naming only metrics the operator exports, each alert with a runbook section."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest
import sync_monitoring
import yaml

from gocd_ha_operator.controller import metrics as m
from gocd_ha_operator.controller.monitoring import ALERTS, RUNBOOK_URL, dashboard, rules_document

ROOT: Final = Path(__file__).resolve().parents[2]
RULES: Final = ROOT / "manifests" / "prometheus" / "gocdha-rules.yaml"
UNIT_TESTS: Final = Path(__file__).with_name("gocdha-rules.test.yaml")
RUNBOOK: Final = ROOT / "docs" / "runbook.md"
#: Series Prometheus itself provides (not the operator).
PROMETHEUS_SERIES: Final = frozenset({"up"})
METRIC_NAME: Final = re.compile(r"\b(gocdha_[a-z0-9_]+)\b")


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is not on PATH: install Debian's prometheus package (see .ci/run)"
    return found


def test_promtool_check_rules_passes() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", UNIT_TESTS.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=UNIT_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests can fail: with StandbyNotReplicating's condition inverted they do."""
    broken = RULES.read_text().replace(
        "expr: gocdha_replication_streaming == 0", "expr: gocdha_replication_streaming == 1"
    )
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = ["rules.yaml"]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool(), "test", "rules", "t.yaml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "StandbyNotReplicating" in result.stdout + result.stderr


def test_every_alert_fires_in_a_unit_test_and_is_silent_for_the_healthy_cluster() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            if case["exp_alerts"]:
                firing.add(case["alertname"])
                for alert in case["exp_alerts"]:
                    # Exactly the expected alerts are listed: "good" never appears among them.
                    assert alert["exp_labels"].get("cluster") != "good"
            else:
                silent.add(case["alertname"])
    names = {a.name for a in ALERTS}
    assert firing == names, names - firing
    # The first scenario has a healthy cluster "good" next to "bad" for every cluster alert.
    first = tests["tests"][0]
    assert any('cluster="good"' in s["series"] for s in first["input_series"])
    assert "OperatorDown" in silent


def test_generated_copies_are_up_to_date() -> None:
    assert sync_monitoring.stale() == [], "run `make monitoring`"
    assert yaml.safe_load(RULES.read_text()) == rules_document()
    chart_copy = ROOT / "charts" / "gocd-ha-operator" / "files" / "gocdha-rules.yaml"
    assert chart_copy.read_text() == RULES.read_text()


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in rules_document()["groups"] for rule in group["rules"]]


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in board["panels"] for t in panel["targets"]]


def test_every_queried_metric_is_exported() -> None:
    exported = m.exported_names()
    board = json.loads((ROOT / "manifests" / "prometheus" / "gocdha-dashboard.json").read_text())
    expressions = rule_expressions() + dashboard_expressions(board)
    queried = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert queried, "no metric found: the pattern is wrong"
    assert queried - exported == set(), "rules or panels query metrics the operator does not export"
    for expr in rule_expressions():
        bare = set(re.findall(r"\b([a-z_]+)\{", expr)) - {n for n in queried}
        assert bare <= PROMETHEUS_SERIES, bare


def test_the_cross_check_catches_a_misspelt_metric() -> None:
    assert "gocdha_replication_lag_byte" not in m.exported_names()
    found = METRIC_NAME.findall("max(gocdha_replication_lag_byte{x='1'}) > 0")
    assert found == ["gocdha_replication_lag_byte"]


def test_dashboard_has_the_panels_operators_look_for() -> None:
    titles = " ".join(p["title"].lower() for p in dashboard()["panels"])
    for word in ("role", "lag", "archiv", "sync", "promotion"):
        assert word in titles, word
    board = dashboard()
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.name)
def test_each_alert_explains_itself_and_has_a_runbook_section(alert: Any) -> None:
    rule = alert.rule(RUNBOOK_URL)
    annotations = rule["annotations"]
    assert annotations["summary"] and len(annotations["description"]) > 80
    assert "look at" in annotations["description"].lower() or "lists" in annotations["description"]
    assert annotations["runbook_url"].startswith(RUNBOOK_URL + "#")
    headings = {
        line[3:].strip().lower()
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    assert alert.anchor in headings, f"docs/runbook.md has no '## {alert.name}' section"
