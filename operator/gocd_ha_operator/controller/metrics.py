"""Prometheus metrics of the operator, derived from the status it writes.

Why from status: the status is what the operator concluded from one observation (one connection
per instance, every ``--observe-interval``). Deriving every gauge from that object means the
metrics and ``kubectl get gocdha`` can never disagree, and no second set of connections is made to
Postgres or GoCD. ``StatusWriter.update`` (the one status writer of the supervisor and the
promotion runner) calls :meth:`OperatorMetrics.record_status` with each status concluded (written
or unchanged); promotion counters and histograms are derived from how
``status.promotion`` and ``status.history`` move between two such calls.

Gauges are produced at scrape time from the last status of each cluster (so ages such as "seconds
since the last archived WAL" are exact when scraped, not as old as the last observation); a
deleted cluster's snapshot and every labelled counter and histogram series of it are removed by
:meth:`OperatorMetrics.forget`.

Each operator (production, a test, the demo) owns one :class:`OperatorMetrics` with its own
registry: several operators in one process (the tests) never share series.

Naming follows Prometheus conventions: the ``gocdha_`` prefix, base units in the name
(``_seconds``, ``_bytes``), ``_total`` for counters, labels ``namespace``, ``cluster``, ``side``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, ParamSpec

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import SIDES
from gocd_ha_operator.api.spec import FailoverSpec
from gocd_ha_operator.api.status import GoCDHAClusterStatus, PromotionStatus

PREFIX: Final = "gocdha_"

# --- metric names (every rule and dashboard panel must use only these; a test checks it) --------
SIDE_ROLE: Final = "gocdha_side_role"
POSTGRES_UP: Final = "gocdha_postgres_up"
POSTGRES_IN_RECOVERY: Final = "gocdha_postgres_in_recovery"
POSTGRES_TIMELINE: Final = "gocdha_postgres_timeline"
GOCD_SERVER_UP: Final = "gocdha_gocd_server_up"
REPLICATION_STREAMING: Final = "gocdha_replication_streaming"
REPLICATION_LAG_BYTES: Final = "gocdha_replication_lag_bytes"
REPLICATION_LAG_SECONDS: Final = "gocdha_replication_lag_seconds"
WAL_LAST_ARCHIVED_AGE: Final = "gocdha_wal_last_archived_age_seconds"
WAL_ARCHIVE_FAILURES: Final = "gocdha_wal_archive_failures"  # exposed with the _total suffix
CONFIG_SYNCED: Final = "gocdha_config_synced"
CONFIG_SYNC_AGE: Final = "gocdha_config_sync_age_seconds"
FAILOVER_POSSIBLE: Final = "gocdha_failover_possible"
FAILOVER_POSSIBLE_INFO: Final = "gocdha_failover_possible_info"
FAILOVER_MAX_LAG_BYTES: Final = "gocdha_failover_max_lag_bytes"
CONDITION: Final = "gocdha_condition"
PROMOTION_IN_PROGRESS: Final = "gocdha_promotion_in_progress"
PROMOTIONS: Final = "gocdha_promotions"  # exposed with the _total suffix
PROMOTION_DURATION: Final = "gocdha_promotion_duration_seconds"
PROMOTION_STEP_DURATION: Final = "gocdha_promotion_step_duration_seconds"
PROMOTION_REQUEST_TO_WRITABLE: Final = "gocdha_promotion_request_to_writable_seconds"
RECONCILE_DURATION: Final = "gocdha_reconcile_duration_seconds"
RECONCILE_ERRORS: Final = "gocdha_reconcile_errors"  # exposed with the _total suffix
KUBERNETES_API_ERRORS: Final = "gocdha_kubernetes_api_errors"  # exposed with the _total suffix

#: Promotions take seconds to a couple of minutes (catch-up waits up to 120 s).
PROMOTION_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STEP_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RECONCILE_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Steps after which the new primary takes writes through the Services (roles have switched).
WRITABLE_STEPS: Final = frozenset({"Rejoining", "Done"})
#: API answers the client treats as results, not failures (absent on get, exists on create).
EXPECTED_API_STATUSES: Final = frozenset({404, 409})
#: (type, result) of the promotion counters created at 0 for every cluster.
INITIAL_PROMOTION_LABELS: Final = (
    ("Switchover", "Succeeded"),
    ("Switchover", "Failed"),
    ("Failover", "Succeeded"),
    ("Failover", "Failed"),
    ("Unknown", "Refused"),
)
#: The step every promotion starts with (``rules.promotion.started``).
FIRST_STEP: Final = "Fencing"
#: Non-terminal promotion result.
IN_PROGRESS: Final = "InProgress"

ClusterKey = tuple[str, str]
logger = logging.getLogger(__name__)
_P = ParamSpec("_P")


def never_raises(method: Callable[_P, None]) -> Callable[_P, None]:
    """The metrics are called from the supervisor, the reconcile and the API client: a bug here
    must cost a metric, never a status write, a promotion step or the real API error."""

    @functools.wraps(method)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            logger.exception("updating the metrics failed (%s); the operator goes on", method)

    return guarded


Family = GaugeMetricFamily | CounterMetricFamily


def exported_names() -> frozenset[str]:
    """Every series name the operator exposes (histograms with their ``_bucket``/``_sum``/
    ``_count``, counters with ``_total``): what alert rules and dashboards may query."""
    gauges = {
        SIDE_ROLE,
        POSTGRES_UP,
        POSTGRES_IN_RECOVERY,
        POSTGRES_TIMELINE,
        GOCD_SERVER_UP,
        REPLICATION_STREAMING,
        REPLICATION_LAG_BYTES,
        REPLICATION_LAG_SECONDS,
        WAL_LAST_ARCHIVED_AGE,
        CONFIG_SYNCED,
        CONFIG_SYNC_AGE,
        FAILOVER_POSSIBLE,
        FAILOVER_POSSIBLE_INFO,
        FAILOVER_MAX_LAG_BYTES,
        CONDITION,
        PROMOTION_IN_PROGRESS,
    }
    counters = {WAL_ARCHIVE_FAILURES, PROMOTIONS, RECONCILE_ERRORS, KUBERNETES_API_ERRORS}
    histograms = {
        PROMOTION_DURATION,
        PROMOTION_STEP_DURATION,
        PROMOTION_REQUEST_TO_WRITABLE,
        RECONCILE_DURATION,
    }
    names = set(gauges) | {f"{c}_total" for c in counters}
    for h in histograms:
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return frozenset(names)


class BindAddressError(ValueError):
    """``--metrics-bind-address`` is not ``0``, ``:PORT`` or ``HOST:PORT``."""


def parse_bind_address(text: str) -> tuple[str, int] | None:
    """``":8081"`` -> ``("0.0.0.0", 8081)``; ``"127.0.0.1:9000"``; ``"0"`` -> ``None`` (off).

    The same syntax as controller-runtime's ``--metrics-bind-address``, which operators' users
    know from other operators."""
    text = text.strip()
    if text == "0":
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise BindAddressError(
            f"--metrics-bind-address {text!r}: expected ':PORT', 'HOST:PORT' or '0' (off)"
        )
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise BindAddressError(f"--metrics-bind-address {text!r}: port out of range")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - a metrics port is meant to be scraped
    return host, port


def _parse_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return cond.parse_rfc3339(value).timestamp()
    except ValueError:
        return None


def _history_key(entry: PromotionStatus) -> tuple[str | None, str | None, str | None]:
    return entry.token, entry.started_at, entry.result


@dataclass
class _Snapshot:
    """The last status seen for one cluster, and the bookkeeping derived from its history."""

    status: GoCDHAClusterStatus
    max_lag_bytes: int
    seen_history: set[tuple[str | None, str | None, str | None]] = field(default_factory=set)
    #: (token, step, monotonic start or None when it began before this process) of the promotion
    #: step running now.
    step: tuple[str | None, str, float | None] | None = None
    #: token -> monotonic time its promotion started, or None when it started before this process.
    promotion_started: dict[str | None, float | None] = field(default_factory=dict)
    writable_recorded: set[str | None] = field(default_factory=set)


class OperatorMetrics:
    """The operator's metrics: one registry, fed from status, served on its own port."""

    def __init__(
        self,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._wall = wall_clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._snapshots: dict[ClusterKey, _Snapshot] = {}
        #: (namespace, cluster, token) -> wall time the annotation was seen.
        self._requests: dict[tuple[str, str, str], float] = {}
        #: label tuples of every labelled series per cluster, for forget().
        self._series: dict[ClusterKey, set[tuple[Any, tuple[str, ...]]]] = {}
        cluster = ("namespace", "cluster")
        r = self.registry
        self.promotions = Counter(
            PROMOTIONS,
            "Promotions that ended, by type (Switchover, Failover) and result "
            "(Succeeded, Failed, Refused).",
            [*cluster, "type", "result"],
            registry=r,
        )
        self.promotion_duration = Histogram(
            PROMOTION_DURATION,
            "Time from a promotion's start to its end (Succeeded or Failed).",
            [*cluster, "type", "result"],
            buckets=PROMOTION_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            PROMOTION_STEP_DURATION,
            "Time each promotion step took (as seen by this operator process).",
            [*cluster, "step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.request_to_writable = Histogram(
            PROMOTION_REQUEST_TO_WRITABLE,
            "Time from the promotion request (annotation, or the automatic failover decision) "
            "until the new primary takes writes through the Services.",
            [*cluster, "type"],
            buckets=PROMOTION_BUCKETS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            RECONCILE_DURATION,
            "Time one reconcile of a GoCDHACluster's children took.",
            list(cluster),
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            RECONCILE_ERRORS,
            "Reconciles that ended in an error (retried), by error.",
            [*cluster, "error"],
            registry=r,
        )
        self.api_errors = Counter(
            KUBERNETES_API_ERRORS,
            "Kubernetes API requests of the operator that failed, by method and HTTP status "
            "(0: no answer).",
            ["method", "code"],
            registry=r,
        )
        r.register(_StatusCollector(self))
        self.served_at: tuple[str, int] | None = None
        self._server: Any = None

    # --- feeding ------------------------------------------------------------------------------

    def _track(self, key: ClusterKey, metric: Any, labels: tuple[str, ...]) -> Any:
        self._series.setdefault(key, set()).add((metric, labels))
        return metric.labels(*labels)

    @never_raises
    def promotion_requested(self, namespace: str, name: str, token: str) -> None:
        """The promotion annotation changed: the clock of "request to writable" starts here."""
        with self._lock:
            self._requests[(namespace, name, token)] = self._wall()

    @never_raises
    def record_status(
        self, namespace: str, name: str, status: GoCDHAClusterStatus, spec: Mapping[str, Any]
    ) -> None:
        """Take in the status just computed for a cluster (``spec``: the resource's raw spec)."""
        try:
            max_lag = FailoverSpec.model_validate(spec.get("failover") or {}).max_lag_bytes
        except ValueError:
            max_lag = FailoverSpec().max_lag_bytes
        key = (namespace, name)
        with self._lock:
            snapshot = self._snapshots.get(key)
            if snapshot is None:
                # Promotions that ended before this process saw the cluster are not counted again.
                snapshot = _Snapshot(status=status, max_lag_bytes=max_lag)
                snapshot.seen_history = {_history_key(h) for h in status.history}
                self._snapshots[key] = snapshot
                # Counters exist at 0 from the start, so increase() sees the first promotion.
                for labels in INITIAL_PROMOTION_LABELS:
                    self._track(key, self.promotions, (*key, *labels))
            snapshot.status = status
            snapshot.max_lag_bytes = max_lag
            self._derive_promotion_events(key, snapshot, status)

    def _derive_promotion_events(
        self, key: ClusterKey, snapshot: _Snapshot, status: GoCDHAClusterStatus
    ) -> None:
        now = self._monotonic()
        p = status.promotion
        running = p.result == IN_PROGRESS
        first_sighting = running and p.token not in snapshot.promotion_started
        if first_sighting:
            # Seen from its first step: timed here. Seen later (this process took over a running
            # promotion after a restart): no monotonic start; its timestamps are used instead.
            snapshot.promotion_started[p.token] = now if p.step == FIRST_STEP else None
        # Step durations: a step ends when the next one is recorded or the promotion ends.
        current = snapshot.step
        if current is not None and (
            not running or current[0] != p.token or current[1] != (p.step or "")
        ):
            began_step = current[2]
            if current[0] == p.token and began_step is not None:
                self._track(key, self.step_duration, (*key, current[1])).observe(now - began_step)
            snapshot.step = None
        if running and p.step and snapshot.step is None:
            # The first step seen of a resumed promotion began before this process: not timed.
            untimed = first_sighting and p.step != FIRST_STEP
            snapshot.step = (p.token, p.step, None if untimed else now)
        # Request to writable: the roles have switched (the step after SwitchingRoles began).
        reached = (running and p.step in WRITABLE_STEPS) or p.result == "Succeeded"
        if p.token is not None and reached and p.token not in snapshot.writable_recorded:
            snapshot.writable_recorded.add(p.token)
            requested = self._requests.pop((*key, p.token), None)
            if requested is None:
                requested = _parse_time(p.started_at)
            if requested is not None and snapshot.promotion_started.get(p.token) is not None:
                self._track(key, self.request_to_writable, (*key, p.type or "Unknown")).observe(
                    max(0.0, self._wall() - requested)
                )
        # Ended promotions (Succeeded, Failed, Refused) appear in history exactly once.
        for entry in status.history:
            history_key = _history_key(entry)
            if history_key in snapshot.seen_history:
                continue
            snapshot.seen_history.add(history_key)
            labels = (*key, entry.type or "Unknown", entry.result or "Unknown")
            self._track(key, self.promotions, labels).inc()
            if entry.result in ("Succeeded", "Failed"):
                began = snapshot.promotion_started.pop(entry.token, None)
                if began is not None:
                    seconds: float | None = now - began
                else:
                    start, end = _parse_time(entry.started_at), _parse_time(entry.finished_at)
                    seconds = end - start if start is not None and end is not None else None
                if seconds is not None:
                    self._track(key, self.promotion_duration, labels).observe(max(0.0, seconds))

    @never_raises
    def reconcile_finished(
        self, namespace: str, name: str, seconds: float, error: str | None
    ) -> None:
        key = (namespace, name)
        with self._lock:
            self._track(key, self.reconcile_duration, key).observe(seconds)
            if error is not None:
                self._track(key, self.reconcile_errors, (*key, error)).inc()

    @never_raises
    def api_error(self, method: str, code: int) -> None:
        """A request of the operator's Kubernetes client failed (hooked into ``KubeClient``)."""
        if code in EXPECTED_API_STATUSES:
            return
        self.api_errors.labels(method, str(code)).inc()

    @never_raises
    def forget(self, namespace: str, name: str) -> None:
        """The cluster is gone: drop its snapshot and every labelled series that names it."""
        key = (namespace, name)
        with self._lock:
            self._snapshots.pop(key, None)
            for metric, labels in self._series.pop(key, set()):
                metric.remove(*labels)
            for request in [r for r in self._requests if r[:2] == key]:
                del self._requests[request]

    # --- reading (scrape time) ----------------------------------------------------------------

    def snapshots(self) -> list[tuple[ClusterKey, GoCDHAClusterStatus, int]]:
        with self._lock:
            return [(k, s.status, s.max_lag_bytes) for k, s in sorted(self._snapshots.items())]

    def now(self) -> float:
        return self._wall()

    # --- serving ------------------------------------------------------------------------------

    def serve(self, address: tuple[str, int]) -> tuple[str, int]:
        """Serve ``/metrics`` on ``address`` (port 0: any free port); returns where it listens."""
        from prometheus_client import start_http_server  # noqa: PLC0415

        server, _thread = start_http_server(address[1], address[0], registry=self.registry)
        self._server = server
        host, port = server.server_address[:2]
        self.served_at = (str(host), int(port))
        return self.served_at

    def stop_serving(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        self.served_at = None


def _bool(value: bool | None) -> float | None:
    return None if value is None else (1.0 if value else 0.0)


class _StatusCollector(Collector):
    """Gauges computed at scrape time from each cluster's last status."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        now = self.metrics.now()
        for key, status, max_lag in self.metrics.snapshots():
            _fill(families, key, status, max_lag, now)
        return iter(families.values())

    @staticmethod
    def _families() -> dict[str, Family]:
        c = ["namespace", "cluster"]
        s = [*c, "side"]

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        return {
            SIDE_ROLE: gauge(SIDE_ROLE, "1 for the role each side has now.", [*s, "role"]),
            POSTGRES_UP: gauge(POSTGRES_UP, "The side's Postgres answered the operator.", s),
            POSTGRES_IN_RECOVERY: gauge(
                POSTGRES_IN_RECOVERY, "The side's Postgres is in recovery (a standby).", s
            ),
            POSTGRES_TIMELINE: gauge(POSTGRES_TIMELINE, "The side's Postgres timeline.", s),
            GOCD_SERVER_UP: gauge(
                GOCD_SERVER_UP, "The side's GoCD server answered its health check (running).", s
            ),
            REPLICATION_STREAMING: gauge(
                REPLICATION_STREAMING, "The standby streams WAL from the primary.", s
            ),
            REPLICATION_LAG_BYTES: gauge(
                REPLICATION_LAG_BYTES, "WAL bytes the standby has not replayed yet.", s
            ),
            REPLICATION_LAG_SECONDS: gauge(
                REPLICATION_LAG_SECONDS, "Replay delay of the standby.", s
            ),
            WAL_LAST_ARCHIVED_AGE: gauge(
                WAL_LAST_ARCHIVED_AGE, "Seconds since the primary last archived a WAL file.", s
            ),
            WAL_ARCHIVE_FAILURES: CounterMetricFamily(
                WAL_ARCHIVE_FAILURES,
                "Failed WAL archive attempts (pg_stat_archiver.failed_count).",
                labels=s,
            ),
            CONFIG_SYNCED: gauge(
                CONFIG_SYNCED, "The standby has the primary's GoCD config, synced recently.", c
            ),
            CONFIG_SYNC_AGE: gauge(CONFIG_SYNC_AGE, "Seconds since the last config sync.", c),
            FAILOVER_POSSIBLE: gauge(
                FAILOVER_POSSIBLE, "A promotion now would succeed within maxLagBytes.", c
            ),
            FAILOVER_POSSIBLE_INFO: gauge(
                FAILOVER_POSSIBLE_INFO, "The FailoverPossible condition's reason.", [*c, "reason"]
            ),
            FAILOVER_MAX_LAG_BYTES: gauge(FAILOVER_MAX_LAG_BYTES, "spec.failover.maxLagBytes.", c),
            CONDITION: gauge(
                CONDITION, "1 for each condition's current status.", [*c, "condition", "status"]
            ),
            PROMOTION_IN_PROGRESS: gauge(PROMOTION_IN_PROGRESS, "A promotion is running.", c),
        }


def _fill(
    families: dict[str, Family],
    key: ClusterKey,
    status: GoCDHAClusterStatus,
    max_lag: int,
    now: float,
) -> None:
    def put(metric: str, value: float | None, *extra: str) -> None:
        if value is not None:
            families[metric].add_metric([*key, *extra], value)

    for side in SIDES:
        side_status = getattr(status.sides, side)
        if side_status is None:
            continue
        if side_status.role is not None:
            put(SIDE_ROLE, 1.0, side, side_status.role)
        pg = side_status.postgres
        put(POSTGRES_UP, _bool(pg.reachable), side)
        put(POSTGRES_IN_RECOVERY, _bool(pg.in_recovery), side)
        put(POSTGRES_TIMELINE, None if pg.timeline is None else float(pg.timeline), side)
        if side_status.gocd.replicas:
            put(GOCD_SERVER_UP, 1.0 if side_status.gocd.healthy else 0.0, side)
    replication = status.replication
    if status.standby is not None and replication.state is not None:
        standby = status.standby
        put(REPLICATION_STREAMING, 1.0 if replication.state == "Streaming" else 0.0, standby)
        lag_bytes = replication.lag_bytes
        put(REPLICATION_LAG_BYTES, None if lag_bytes is None else float(lag_bytes), standby)
        put(REPLICATION_LAG_SECONDS, replication.lag_seconds, standby)
    if status.primary is not None:
        primary = status.primary
        archived = _parse_time(replication.last_archived_time)
        put(WAL_LAST_ARCHIVED_AGE, None if archived is None else max(0.0, now - archived), primary)
        failures = replication.archive_failures
        put(WAL_ARCHIVE_FAILURES, None if failures is None else float(failures), primary)
    sync = status.config_sync
    put(CONFIG_SYNCED, _bool(sync.synced))
    synced_at = _parse_time(sync.last_sync_time)
    put(CONFIG_SYNC_AGE, None if synced_at is None else max(0.0, now - synced_at))
    possible = cond.get_condition(status.conditions, cond.FAILOVER_POSSIBLE)
    if possible is not None and possible.status != "Unknown":
        put(FAILOVER_POSSIBLE, 1.0 if possible.status == "True" else 0.0)
        put(FAILOVER_POSSIBLE_INFO, 1.0, possible.reason)
    put(FAILOVER_MAX_LAG_BYTES, float(max_lag))
    for condition in status.conditions:
        put(CONDITION, 1.0, condition.type, condition.status)
    put(PROMOTION_IN_PROGRESS, 1.0 if status.promotion.result == IN_PROGRESS else 0.0)
