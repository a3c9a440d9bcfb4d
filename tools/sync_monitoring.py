#!/usr/bin/env python3
"""Write the shipped alert rules and Grafana dashboard from their one source.

The source is ``gocd_ha_operator.controller.monitoring`` (built from the metric-name constants the
operator exports). This script is the only writer of:

* ``manifests/prometheus/gocdha-rules.yaml`` — a plain Prometheus rule file;
* ``manifests/prometheus/gocdha-dashboard.json`` — the dashboard for a Grafana without the chart;
* ``charts/gocd-ha-operator/files/`` — the same two files, which the chart's PrometheusRule and
  dashboard ConfigMap templates embed (Helm can read files only inside the chart).

``tests/monitoring/test_rules.py`` fails when a copy is stale. Usage::

    python tools/sync_monitoring.py           # rewrite every copy
    python tools/sync_monitoring.py --check   # exit 1 when a copy is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from gocd_ha_operator.controller.monitoring import dashboard_json, rules_yaml

ROOT: Final = Path(__file__).resolve().parent.parent
RULES_NAME: Final = "gocdha-rules.yaml"
DASHBOARD_NAME: Final = "gocdha-dashboard.json"
DIRECTORIES: Final = (
    ROOT / "manifests" / "prometheus",
    ROOT / "charts" / "gocd-ha-operator" / "files",
)


def expected() -> dict[Path, str]:
    """Every generated file and the content it must have."""
    contents = {RULES_NAME: rules_yaml(), DASHBOARD_NAME: dashboard_json()}
    return {directory / name: text for directory in DIRECTORIES for name, text in contents.items()}


def stale() -> list[Path]:
    return [
        path
        for path, text in expected().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale copies")
    args = parser.parse_args()
    if args.check:
        paths = stale()
        for path in paths:
            print(f"stale: {path.relative_to(ROOT)} (run `make monitoring`)", file=sys.stderr)
        return 1 if paths else 0
    for path, text in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
