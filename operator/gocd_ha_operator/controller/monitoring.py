"""The one source of the alert rules and the Grafana dashboard shipped with the operator.

Why Python and not hand-written YAML/JSON: the rules and panels query metric names, and those names
are constants in :mod:`gocd_ha_operator.controller.metrics`. Building them here from the same
constants, and generating every shipped copy (``manifests/prometheus/``, the chart's ``files/``)
with ``tools/sync_monitoring.py``, means a renamed metric cannot leave a silent alert behind:
``tests/monitoring`` fails when a copy is stale or names a metric the operator does not export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import yaml

from gocd_ha_operator.controller import metrics as m

#: Where the runbook sections live; the chart can point elsewhere (``runbookURL``).
RUNBOOK_URL: Final = (
    "https://github.com/gocd-ha-operator/gocd-ha-operator/blob/main/docs/runbook.md"
)
#: The scrape job name the OperatorDown rule expects (the ServiceMonitor sets it).
JOB: Final = "gocd-ha-operator"
GROUP_NAME: Final = "gocd-ha-operator"
CLUSTER_LABELS: Final = "namespace, cluster"
WHERE: Final = "GoCDHACluster {{ $labels.namespace }}/{{ $labels.cluster }}"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str | None
    severity: str
    summary: str
    description: str

    @property
    def anchor(self) -> str:
        """The runbook section: GitHub's anchor of a ``## Name`` heading is the lower-cased name."""
        return self.name.lower()

    def rule(self, runbook_url: str) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.duration is not None:
            rule["for"] = self.duration
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{runbook_url}#{self.anchor}",
        }
        return rule


ALERTS: Final[tuple[Alert, ...]] = (
    Alert(
        name="StandbyNotReplicating",
        expr=f"{m.REPLICATION_STREAMING} == 0",
        duration="5m",
        severity="critical",
        summary=f"The standby of {WHERE} does not stream WAL from the primary.",
        description=(
            "Side {{ $labels.side }} has not streamed from the primary for 5 minutes: a failover "
            "now would lose what it has not replayed, and after 5 minutes without streaming "
            "FailoverPossible turns False. Look at `kubectl gocdha status {{ $labels.cluster }} "
            "-n {{ $labels.namespace }}` (StandbyReplicating reason) and the standby's Postgres "
            "log (`kubectl gocdha logs {{ $labels.cluster }} --side {{ $labels.side }}`)."
        ),
    ),
    Alert(
        name="ReplicationLagHigh",
        expr=(
            f"max by ({CLUSTER_LABELS}) ({m.REPLICATION_LAG_BYTES})\n"
            f"  > on ({CLUSTER_LABELS}) {m.FAILOVER_MAX_LAG_BYTES}"
        ),
        duration="5m",
        severity="warning",
        summary=f"The standby of {WHERE} is further behind than maxLagBytes.",
        description=(
            "The standby has been {{ $value | humanize1024 }}B or more behind for 5 minutes, more "
            "than spec.failover.maxLagBytes: automatic failover and a promotion without "
            "promote-force are refused. Look at the primary's write load, the standby's disk and "
            "CPU, and the network between the two sides."
        ),
    ),
    Alert(
        name="WALArchivingFailing",
        expr=f"increase({m.WAL_ARCHIVE_FAILURES}_total[10m]) > 0",
        duration="5m",
        severity="critical",
        summary=f"WAL archiving fails on the primary of {WHERE}.",
        description=(
            "archive_command keeps failing on side {{ $labels.side }}: WAL piles up in pg_wal "
            "(the primary's disk fills) and a standby that falls behind cannot catch up from the "
            "archive. Look at the shared volume (mounted, writable, not full) and the archive "
            "errors in the primary's Postgres log."
        ),
    ),
    Alert(
        name="WALArchivingStale",
        expr=f"{m.WAL_LAST_ARCHIVED_AGE} > 1800",
        duration="5m",
        severity="warning",
        summary=f"No WAL archived for 30 minutes on the primary of {WHERE}.",
        description=(
            "Side {{ $labels.side }} last archived a WAL file {{ $value | humanizeDuration }} "
            "ago. archive_timeout is 60 s, so a GoCD server that writes anything archives every "
            "minute; look at whether the GoCD server is idle or stopped, and at "
            "pg_stat_archiver on the primary."
        ),
    ),
    Alert(
        name="ConfigNotSynced",
        expr=f"{m.CONFIG_SYNCED} == 0",
        duration="15m",
        severity="warning",
        summary=f"The standby GoCD of {WHERE} does not have the primary's configuration.",
        description=(
            "The ConfigSynced condition has been False for 15 minutes: a promoted standby would "
            "start with old config or plugins. Look at the ConfigSynced reason in "
            "`kubectl gocdha status` (FilesDiffer, SyncStale, SyncErrors, Unauthorized, "
            "TokenInvalid, CertificateRejected) and the sync agent's or standby server's log."
        ),
    ),
    Alert(
        name="FailoverNotPossible",
        expr=(
            f"({m.FAILOVER_POSSIBLE} == 0)\n"
            f"  * on ({CLUSTER_LABELS}) group_left (reason)\n"
            f"    topk by ({CLUSTER_LABELS}) (1, {m.FAILOVER_POSSIBLE_INFO})\n"
            f"  unless on ({CLUSTER_LABELS}) {m.PROMOTION_IN_PROGRESS} == 1"
        ),
        duration="10m",
        severity="critical",
        summary=f"{WHERE} could not fail over now ({{{{ $labels.reason }}}}).",
        description=(
            "FailoverPossible has been False for 10 minutes (reason {{ $labels.reason }}): if "
            "the primary failed now, the standby could not take over. `kubectl gocdha why-not "
            "{{ $labels.cluster }} -n {{ $labels.namespace }}` lists everything in the way."
        ),
    ),
    Alert(
        name="PromotionFailed",
        expr=f'increase({m.PROMOTIONS}_total{{result="Failed"}}[30m]) > 0',
        duration=None,
        severity="critical",
        summary=f"A promotion of {WHERE} failed.",
        description=(
            "A {{ $labels.type }} ended as Failed: the old primary was unfenced and serves "
            "again. Look at `kubectl gocdha history {{ $labels.cluster }} -n "
            "{{ $labels.namespace }}` (the step and the message) and the operator's Events."
        ),
    ),
    Alert(
        name="OperatorDown",
        expr=f'absent(up{{job="{JOB}"}} == 1)',
        duration="5m",
        severity="critical",
        summary="The gocd-ha-operator is not being scraped.",
        description=(
            "No gocd-ha-operator target has been up for 5 minutes: nothing observes the "
            "clusters, writes their status, or fails over. Look at the operator Deployment's "
            "pod (CrashLoopBackOff, OOMKilled, image pull) and its logs."
        ),
    ),
)


def rules_document(runbook_url: str = RUNBOOK_URL) -> dict[str, Any]:
    """The Prometheus rule file (the ``spec`` of the chart's PrometheusRule too)."""
    return {
        "groups": [
            {"name": GROUP_NAME, "rules": [alert.rule(runbook_url) for alert in ALERTS]},
        ]
    }


RULES_HEADER: Final = (
    "# Generated by tools/sync_monitoring.py from gocd_ha_operator/controller/monitoring.py.\n"
    "# Do not edit: edit the source, then run `make monitoring`.\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks, long lines unwrapped: the file
    is read by people in review, not only by Prometheus."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def rules_yaml(runbook_url: str = RUNBOOK_URL) -> str:
    body = yaml.dump(rules_document(runbook_url), Dumper=_Dumper, sort_keys=False, width=4096)
    return RULES_HEADER + body


# --- the Grafana dashboard ----------------------------------------------------------------------

SELECT: Final = 'namespace="$namespace", cluster="$cluster"'


def _panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
) -> dict[str, Any]:
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"expr": expr, "legendFormat": legend, "refId": refs[index]}
            for index, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard_panels() -> list[dict[str, Any]]:
    s = SELECT
    return [
        _panel(
            "Role per side",
            [(f"max by (side, role) ({m.SIDE_ROLE}{{{s}}})", "{{side}}: {{role}}")],
            kind="state-timeline",
            description="Which side is primary; a promotion shows as the colours swapping.",
        ),
        _panel(
            "Postgres up and timeline",
            [
                (f"{m.POSTGRES_UP}{{{s}}}", "up {{side}}"),
                (f"{m.POSTGRES_TIMELINE}{{{s}}}", "timeline {{side}}"),
            ],
        ),
        _panel(
            "Replication lag (bytes) and maxLagBytes",
            [
                (f"{m.REPLICATION_LAG_BYTES}{{{s}}}", "lag {{side}}"),
                (f"{m.FAILOVER_MAX_LAG_BYTES}{{{s}}}", "maxLagBytes"),
            ],
            unit="bytes",
        ),
        _panel(
            "Replication lag (seconds) and streaming",
            [
                (f"{m.REPLICATION_LAG_SECONDS}{{{s}}}", "lag {{side}}"),
                (f"{m.REPLICATION_STREAMING}{{{s}}}", "streaming {{side}}"),
            ],
            unit="s",
        ),
        _panel(
            "WAL archiving",
            [
                (f"{m.WAL_LAST_ARCHIVED_AGE}{{{s}}}", "since last archived {{side}}"),
                (
                    f"increase({m.WAL_ARCHIVE_FAILURES}_total{{{s}}}[10m])",
                    "failures in 10m {{side}}",
                ),
            ],
            unit="s",
        ),
        _panel(
            "Config sync",
            [
                (f"{m.CONFIG_SYNCED}{{{s}}}", "synced"),
                (f"{m.CONFIG_SYNC_AGE}{{{s}}}", "seconds since last sync"),
            ],
        ),
        _panel(
            "Failover possible",
            [
                (f"{m.FAILOVER_POSSIBLE}{{{s}}}", "possible"),
                (f"{m.FAILOVER_POSSIBLE_INFO}{{{s}}}", "{{reason}}"),
            ],
            kind="state-timeline",
        ),
        _panel(
            "Promotions",
            [
                (
                    f"sum by (type, result) (increase({m.PROMOTIONS}_total{{{s}}}[$__range]))",
                    "{{type}} {{result}}",
                ),
                (f"{m.PROMOTION_IN_PROGRESS}{{{s}}}", "in progress"),
            ],
            kind="bargauge",
        ),
        _panel(
            "Promotion durations",
            [
                (
                    f"sum by (type, result) (rate({m.PROMOTION_DURATION}_sum{{{s}}}[$__range]))"
                    f" / sum by (type, result) (rate({m.PROMOTION_DURATION}_count{{{s}}}"
                    "[$__range]))",
                    "{{type}} {{result}}",
                ),
                (
                    f"sum by (type) (rate({m.PROMOTION_REQUEST_TO_WRITABLE}_sum{{{s}}}"
                    f"[$__range])) / sum by (type) (rate({m.PROMOTION_REQUEST_TO_WRITABLE}"
                    f"_count{{{s}}}[$__range]))",
                    "request to writable {{type}}",
                ),
            ],
            unit="s",
        ),
        _panel(
            "Promotion step durations (p90)",
            [
                (
                    "histogram_quantile(0.9, sum by (step, le) "
                    f"(rate({m.PROMOTION_STEP_DURATION}_bucket{{{s}}}[$__range])))",
                    "{{step}}",
                )
            ],
            unit="s",
        ),
        _panel(
            "Operator: reconciles and API errors",
            [
                (
                    "histogram_quantile(0.95, sum by (le) "
                    f"(rate({m.RECONCILE_DURATION}_bucket{{{s}}}[5m])))",
                    "reconcile p95",
                ),
                (f"sum(rate({m.RECONCILE_ERRORS}_total{{{s}}}[5m]))", "reconcile errors/s"),
                (f"sum by (code) (rate({m.KUBERNETES_API_ERRORS}_total[5m]))", "API {{code}}"),
            ],
        ),
    ]


def dashboard() -> dict[str, Any]:
    panels = dashboard_panels()
    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)}

    def variable(name: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name},
            "refresh": 2,
        }

    return {
        "title": "GoCD HA",
        "uid": "gocdha-overview",
        "tags": ["gocd", "gocd-ha-operator"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                variable("namespace", f"label_values({m.SIDE_ROLE}, namespace)"),
                variable(
                    "cluster", f'label_values({m.SIDE_ROLE}{{namespace="$namespace"}}, cluster)'
                ),
            ]
        },
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"
