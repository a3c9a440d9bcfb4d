"""The chart's monitoring objects: off by default, and when on, the same rules and dashboard as
the generated files, scraping the port the operator serves its metrics on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gocd_ha_operator.controller.monitoring import dashboard, rules_document
from tests.support.delivery import RELEASE, ROOT, by_kind, helm_template, one

MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
ALL_ON = [
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.grafanaDashboard.enabled=true",
]


def operator_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's own Service (the webhook has another)."""
    (service,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == RELEASE]
    return service


def test_monitoring_objects_are_off_by_default_and_metrics_on(helm: Path) -> None:
    docs = helm_template(helm)
    assert {d["kind"] for d in docs} & MONITORING_KINDS == set()
    assert not [
        d
        for d in by_kind(docs, "ConfigMap")
        if "grafana_dashboard" in d["metadata"].get("labels", {})
    ]
    service = operator_service(docs)
    assert {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"} in service[
        "spec"
    ]["ports"]
    policy = one(docs, "NetworkPolicy")
    assert {"protocol": "TCP", "port": 8081} in policy["spec"]["ingress"][0]["ports"]


def test_metrics_off_turns_the_endpoint_off(helm: Path) -> None:
    docs = helm_template(helm, "--set", "metrics.enabled=false")
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--metrics-bind-address=0" in c["args"]
    assert "metrics" not in [p["name"] for p in c["ports"]]
    assert "metrics" not in [p["name"] for p in operator_service(docs)["spec"]["ports"]]
    policy = one(docs, "NetworkPolicy")
    assert 8081 not in [p["port"] for p in policy["spec"]["ingress"][0]["ports"]]


def test_rule_and_dashboard_match_the_generated_files(helm: Path) -> None:
    docs = helm_template(
        helm, *ALL_ON, "--set", "metrics.prometheusRule.runbookURL=https://wiki.example/rb"
    )
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == rules_document("https://wiki.example/rb")
    plain = yaml.safe_load((ROOT / "manifests/prometheus/gocdha-rules.yaml").read_text())
    assert yaml.safe_dump(rule["spec"]).replace("https://wiki.example/rb", "X") == yaml.safe_dump(
        plain
    ).replace("https://github.com/gocd-ha-operator/gocd-ha-operator/blob/main/docs/runbook.md", "X")
    (configmap,) = [
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["gocdha-dashboard.json"]) == dashboard()


def test_service_monitor_scrapes_the_metrics_port_as_the_alerted_job(helm: Path) -> None:
    docs = helm_template(helm, *ALL_ON, "--set", "metrics.serviceMonitor.labels.release=kps")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "gocd-ha-operator"} in endpoint["relabelings"]
    service = operator_service(docs)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
