"""What the plugin prints, computed from a GoCDHACluster object alone (pure, tested without I/O).

Everything shown is what the operator wrote in status; the plugin never second-guesses it. The
one judgement made here is which conditions are "not fine" (each condition has one good status)
and the list of obstacles to a failover, which restates the operator's own rules
(``rules.promotion``) for a reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.spec import FailoverSpec
from gocd_ha_operator.api.status import (
    Condition,
    GoCDHAClusterStatus,
    PromotionStatus,
    SideStatus,
)

#: The status each condition has when all is well; anything else is shown as "not fine".
GOOD_STATUS: Final[dict[str, str]] = {
    cond.READY: "True",
    cond.PRIMARY_AVAILABLE: "True",
    cond.STANDBY_REPLICATING: "True",
    cond.CONFIG_SYNCED: "True",
    cond.FAILOVER_POSSIBLE: "True",
    cond.PROMOTING: "False",
    cond.DEGRADED: "False",
    "BusinessContinuityAPIExposed": "False",
    cond.BACKUP_HEALTHY: "True",
}
#: Promoting=False reasons that are news, not noise.
BAD_PROMOTING_REASONS: Final = frozenset({"PromotionFailed", "PromotionRefused"})
RECENT_STREAMING_SECONDS: Final = 300.0


@dataclass(frozen=True)
class ClusterView:
    """A GoCDHACluster as the plugin reads it: name, raw spec, parsed status."""

    namespace: str
    name: str
    spec: dict[str, Any]
    status: GoCDHAClusterStatus
    annotations: dict[str, str]

    @classmethod
    def of(cls, body: dict[str, Any]) -> ClusterView:
        meta = body.get("metadata") or {}
        try:
            status = GoCDHAClusterStatus.model_validate(body.get("status") or {})
        except ValueError:
            status = GoCDHAClusterStatus()
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            spec=dict(body.get("spec") or {}),
            status=status,
            annotations=dict(meta.get("annotations") or {}),
        )

    @property
    def failover(self) -> FailoverSpec:
        try:
            return FailoverSpec.model_validate(self.spec.get("failover") or {})
        except ValueError:
            return FailoverSpec()

    def condition(self, type_: str) -> Condition | None:
        return cond.get_condition(self.status.conditions, type_)


def human_bytes(value: int | None) -> str:
    if value is None:
        return "unknown"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - the loop always returns


def ago(timestamp: str | None, now: datetime) -> str:
    if timestamp is None:
        return "never"
    try:
        seconds = (now - cond.parse_rfc3339(timestamp)).total_seconds()
    except ValueError:
        return timestamp
    if seconds < 120:
        return f"{timestamp} ({int(seconds)}s ago)"
    if seconds < 7200:
        return f"{timestamp} ({int(seconds // 60)}m ago)"
    return f"{timestamp} ({seconds / 3600:.1f}h ago)"


#: Longest message shown on the one-screen status (``-o yaml`` has them whole).
MESSAGE_WIDTH: Final = 160


def one_line(text: str | None, width: int = MESSAGE_WIDTH) -> str:
    """Messages carry driver output with newlines and tabs; a screen line holds one sentence."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def not_fine(view: ClusterView) -> list[Condition]:
    """Conditions that are not at their good status (plus a failed or refused last request)."""
    found = []
    for c in view.status.conditions:
        good = GOOD_STATUS.get(c.type)
        if c.type == cond.PROMOTING and c.status == "False":
            if c.reason in BAD_PROMOTING_REASONS:
                found.append(c)
            continue
        if good is not None and c.status != good:
            found.append(c)
    return found


def _postgres(side: SideStatus | None) -> str:
    if side is None or side.postgres.reachable is None:
        return "not observed"
    pg = side.postgres
    if not pg.reachable:
        return "unreachable"
    return "up, in recovery" if pg.in_recovery else "up, writable"


def _gocd(side: SideStatus | None) -> str:
    if side is None or side.gocd.replicas is None:
        return "not observed"
    if side.gocd.replicas == 0:
        return "stopped"
    if side.gocd.healthy is None:
        return "starting"
    return "healthy" if side.gocd.healthy else "unhealthy"


def describe_promotion(p: PromotionStatus) -> str:
    if p.token is None:
        return "none"
    kind = p.type or "Promotion"
    moved = f"{p.from_side}->{p.to_side}" if p.from_side and p.to_side else ""
    parts = [f"{kind} {moved}".strip(), p.result or "?"]
    if p.result == "InProgress" and p.step:
        parts.append(f"at step {p.step}")
    detail = [f"token {p.token}"]
    if p.started_at:
        detail.append(f"started {p.started_at}")
    if p.finished_at:
        detail.append(f"finished {p.finished_at}")
    if p.rpo_bytes is not None:
        detail.append(f"RPO {p.rpo_bytes} bytes")
    if p.promote_seconds is not None:
        detail.append(f"pg_promote {p.promote_seconds}s")
    text = " ".join(parts) + f" ({', '.join(detail)})"
    if p.message and p.result in ("Failed", "Refused"):
        text += f": {p.message}"
    return text


def status_screen(view: ClusterView, now: datetime) -> str:
    """One screen: both sides, replication, archive, sync, failover, last promotion, problems."""
    s = view.status
    ready = view.condition(cond.READY)
    head = f"GoCDHACluster {view.namespace}/{view.name}"
    if ready is not None:
        head += f"   Ready={ready.status} ({ready.reason})"
    head += f"   standby mode {s.standby_mode or '?'}   GoCD {s.gocd_version or '?'}"
    sides = {"a": s.sides.a, "b": s.sides.b}

    def row(label: str, cell: Callable[[SideStatus | None], str]) -> tuple[str, str, str]:
        return label, cell(sides["a"]), cell(sides["b"])

    rows = [
        ("", "SIDE A", "SIDE B"),
        row("role", lambda side: side.role if side and side.role else "?"),
        row("postgres", _postgres),
        row(
            "timeline",
            lambda side: (
                str(side.postgres.timeline) if side and side.postgres.timeline is not None else "-"
            ),
        ),
        row("lsn", lambda side: (side.postgres.lsn or "-") if side else "-"),
        row("gocd server", _gocd),
    ]
    lines = [head, ""]
    lines += [f"  {a:<16}{b:<22}{c}".rstrip() for a, b, c in rows]
    r = s.replication
    lines.append("")
    lag = f"lag {human_bytes(r.lag_bytes)}"
    if r.lag_seconds is not None:
        lag += f" / {r.lag_seconds:g}s"
    slot = (
        f", slot {'active' if r.slot_active else 'inactive'} ({r.slot_wal_status})"
        if r.slot_active is not None
        else ""
    )
    lines.append(f"  {'replication':<16}{r.state or 'not observed'}, {lag}{slot}")
    failures = r.archive_failures if r.archive_failures is not None else "?"
    lines.append(
        f"  {'wal archive':<16}last {r.last_archived_wal or '-'} at "
        f"{ago(r.last_archived_time, now)}, {failures} failures"
    )
    synced = view.condition(cond.CONFIG_SYNCED)
    sync_text = f"{synced.status} ({synced.reason})" if synced else "not observed"
    lines.append(
        f"  {'config sync':<16}{sync_text}, last sync {ago(s.config_sync.last_sync_time, now)}"
    )
    possible = view.condition(cond.FAILOVER_POSSIBLE)
    if possible is None:
        failover_text = "not observed"
    else:
        word = "possible" if possible.status == "True" else "NOT possible"
        failover_text = f"{word} ({possible.reason}): {one_line(possible.message)}"
    lines.append(f"  {'failover':<16}{failover_text}")
    last = s.history[0] if s.history else None
    shown = s.promotion if s.promotion.result == "InProgress" or last is None else last
    lines.append(f"  {'last promotion':<16}{describe_promotion(shown)}")
    problems = not_fine(view)
    lines.append("")
    if problems:
        lines.append("  not fine:")
        for c in problems:
            lines.append(f"    {c.type}={c.status} ({c.reason}): {one_line(c.message)}")
    else:
        lines.append("  all conditions fine")
    return "\n".join(lines)


def why_not(view: ClusterView, now: datetime) -> list[str]:
    """Everything that would stop a failover now, one line each (empty: nothing would)."""
    s = view.status
    failover = view.failover
    reasons: list[str] = []
    if s.promotion.result == "InProgress":
        reasons.append(
            f"a promotion is running (token {s.promotion.token!r}, step {s.promotion.step})"
        )
    standby_side = s.standby or "b"
    standby = s.sides.b if standby_side == "b" else s.sides.a
    if standby is None or standby.postgres.reachable is None:
        reasons.append(f"the standby (side {standby_side}) has not been observed yet")
    elif not standby.postgres.reachable:
        reasons.append(
            f"the standby (side {standby_side}) cannot be reached: "
            f"{one_line(standby.postgres.message)}"
        )
    elif not standby.postgres.in_recovery:
        reasons.append(f"side {standby_side} is not in recovery: it is not a standby")
    streamed = s.replication.last_streaming_time
    if streamed is None:
        reasons.append("the standby has never been seen streaming from the primary")
    else:
        seconds = (now - cond.parse_rfc3339(streamed)).total_seconds()
        if seconds > RECENT_STREAMING_SECONDS:
            reasons.append(
                f"the standby last streamed {int(seconds)}s ago (more than "
                f"{int(RECENT_STREAMING_SECONDS)}s): it may miss recent commits"
            )
    lag = s.replication.lag_bytes
    if lag is not None and lag > failover.max_lag_bytes:
        reasons.append(
            f"lag {lag} bytes exceeds maxLagBytes {failover.max_lag_bytes} "
            "(only `promote --force` would promote, losing up to that much)"
        )
    possible = view.condition(cond.FAILOVER_POSSIBLE)
    if possible is not None and possible.status != "True":
        line = (
            f"FailoverPossible={possible.status} ({possible.reason}): {one_line(possible.message)}"
        )
        if not any(possible.message in r for r in reasons):
            reasons.append(line)
    if failover.mode != "Automatic":
        reasons.append(
            "automatic failover is off (spec.failover.mode Manual): only an annotation promotes"
        )
    last = s.history[0] if s.history else None
    if last is not None and last.finished_at is not None and last.result != "Refused":
        since = (now - cond.parse_rfc3339(last.finished_at)).total_seconds()
        if since < failover.cooldown_seconds:
            reasons.append(
                f"cooldown: the last promotion finished {int(since)}s ago; automatic failover "
                f"waits {failover.cooldown_seconds}s"
            )
    return reasons


def history_table(view: ClusterView) -> str:
    entries = view.status.history
    if not entries:
        return f"GoCDHACluster {view.namespace}/{view.name}: no promotion yet"
    header = ("STARTED", "TYPE", "FROM", "TO", "RESULT", "TRIGGER", "RPO", "TOKEN", "MESSAGE")
    rows = [header]
    for p in entries:
        rows.append(
            (
                p.started_at or "-",
                p.type or "-",
                p.from_side or "-",
                p.to_side or "-",
                p.result or "-",
                p.trigger or "-",
                "-" if p.rpo_bytes is None else f"{p.rpo_bytes}B",
                p.token or "-",
                p.message or "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    ).rstrip()
