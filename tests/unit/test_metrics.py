"""The operator's metrics, derived from status: values, promotion events, removal, the endpoint."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.controller import metrics as m
from gocd_ha_operator.controller.metrics import (
    BindAddressError,
    OperatorMetrics,
    parse_bind_address,
)

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
SPEC: dict[str, Any] = {"failover": {"maxLagBytes": 4096}}


def healthy(**overrides: Any) -> GoCDHAClusterStatus:
    raw: dict[str, Any] = {
        "primary": "a",
        "standby": "b",
        "sides": {
            "a": {
                "role": "primary",
                "postgres": {"reachable": True, "inRecovery": False, "timeline": 1},
                "gocd": {"replicas": 1, "healthy": True},
            },
            "b": {
                "role": "standby",
                "postgres": {"reachable": True, "inRecovery": True, "timeline": 1},
                "gocd": {"replicas": 0},
            },
        },
        "replication": {
            "state": "Streaming",
            "lagBytes": 1234,
            "lagSeconds": 0.5,
            "lastArchivedTime": "2027-01-15T07:59:00Z",
            "archiveFailures": 2,
        },
        "configSync": {"synced": True, "lastSyncTime": "2027-01-15T07:59:30Z"},
        "conditions": [
            {
                "type": "FailoverPossible",
                "status": "True",
                "reason": "StandbyReady",
                "lastTransitionTime": "2027-01-15T07:00:00Z",
            }
        ],
    }
    raw.update(overrides)
    return GoCDHAClusterStatus.model_validate(raw)


class Clock:
    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> OperatorMetrics:
    return OperatorMetrics(wall_clock=lambda: clock.wall, monotonic=lambda: clock.mono)


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return value


def test_gauges_follow_the_status(metrics: OperatorMetrics) -> None:
    metrics.record_status("build", "ci", healthy(), SPEC)
    c = {"namespace": "build", "cluster": "ci"}
    assert sample(metrics, m.SIDE_ROLE, **c, side="a", role="primary") == 1
    assert sample(metrics, m.SIDE_ROLE, **c, side="b", role="standby") == 1
    assert sample(metrics, m.SIDE_ROLE, **c, side="b", role="primary") is None
    assert sample(metrics, m.REPLICATION_LAG_BYTES, **c, side="b") == 1234
    assert sample(metrics, m.REPLICATION_LAG_SECONDS, **c, side="b") == 0.5
    assert sample(metrics, m.REPLICATION_STREAMING, **c, side="b") == 1
    assert sample(metrics, m.WAL_LAST_ARCHIVED_AGE, **c, side="a") == 60
    assert sample(metrics, m.WAL_ARCHIVE_FAILURES + "_total", **c, side="a") == 2
    assert sample(metrics, m.CONFIG_SYNCED, **c) == 1
    assert sample(metrics, m.CONFIG_SYNC_AGE, **c) == 30
    assert sample(metrics, m.FAILOVER_POSSIBLE, **c) == 1
    assert sample(metrics, m.FAILOVER_POSSIBLE_INFO, **c, reason="StandbyReady") == 1
    assert sample(metrics, m.FAILOVER_MAX_LAG_BYTES, **c) == 4096
    assert sample(metrics, m.POSTGRES_TIMELINE, **c, side="a") == 1
    assert sample(metrics, m.GOCD_SERVER_UP, **c, side="a") == 1
    assert sample(metrics, m.GOCD_SERVER_UP, **c, side="b") is None  # stopped by design


def test_ages_are_computed_when_scraped(metrics: OperatorMetrics, clock: Clock) -> None:
    metrics.record_status("build", "ci", healthy(), SPEC)
    clock.advance(90)
    labels = {"namespace": "build", "cluster": "ci", "side": "a"}
    assert sample(metrics, m.WAL_LAST_ARCHIVED_AGE, **labels) == 150


def promotion(step: str | None, result: str, **extra: Any) -> dict[str, Any]:
    return {
        "token": "t1",
        "type": "Switchover",
        "trigger": "Annotation",
        "step": step,
        "fromSide": "a",
        "toSide": "b",
        "startedAt": "2027-01-15T08:00:00Z",
        "result": result,
        **extra,
    }


def test_a_promotion_is_counted_once_with_its_step_durations(
    metrics: OperatorMetrics, clock: Clock
) -> None:
    c = {"namespace": "build", "cluster": "ci"}
    metrics.record_status("build", "ci", healthy(), SPEC)
    metrics.promotion_requested("build", "ci", "t1")
    clock.advance(0.5)
    steps = ["Fencing", "CatchingUp", "StoppingOldPrimary", "Promoting", "SwitchingRoles"]
    for index, step in enumerate(steps):
        metrics.record_status("build", "ci", healthy(promotion=promotion(step, "InProgress")), SPEC)
        clock.advance(index + 1.0)
    metrics.record_status(
        "build", "ci", healthy(promotion=promotion("Rejoining", "InProgress")), SPEC
    )
    assert sample(metrics, m.PROMOTION_REQUEST_TO_WRITABLE + "_count", **c, type="Switchover") == 1
    assert sample(metrics, m.PROMOTION_REQUEST_TO_WRITABLE + "_sum", **c, type="Switchover") == 15.5
    clock.advance(7)
    done = promotion("Done", "Succeeded", finishedAt="2027-01-15T08:00:23Z")
    final = healthy(promotion=done, history=[done])
    metrics.record_status("build", "ci", final, SPEC)
    metrics.record_status("build", "ci", final, SPEC)  # the next observation: nothing new
    labels = {**c, "type": "Switchover", "result": "Succeeded"}
    assert sample(metrics, m.PROMOTIONS + "_total", **labels) == 1
    assert sample(metrics, m.PROMOTION_DURATION + "_sum", **labels) == 22
    for index, step in enumerate(steps):
        assert sample(metrics, m.PROMOTION_STEP_DURATION + "_sum", **c, step=step) == index + 1
    assert sample(metrics, m.PROMOTION_STEP_DURATION + "_sum", **c, step="Rejoining") == 7
    assert sample(metrics, m.PROMOTION_STEP_DURATION + "_count", **c, step="Done") is None


def test_history_from_before_this_process_is_not_counted_again(metrics: OperatorMetrics) -> None:
    old = promotion("Done", "Succeeded", finishedAt="2027-01-15T08:00:23Z")
    refused = {**promotion(None, "Refused"), "token": "t2", "type": None}
    metrics.record_status("build", "ci", healthy(history=[old]), SPEC)
    metrics.record_status("build", "ci", healthy(history=[refused, old]), SPEC)
    c = {"namespace": "build", "cluster": "ci"}
    assert sample(metrics, m.PROMOTIONS + "_total", **c, type="Switchover", result="Succeeded") == 0
    assert sample(metrics, m.PROMOTIONS + "_total", **c, type="Unknown", result="Refused") == 1


def test_forget_removes_every_series_of_the_cluster(metrics: OperatorMetrics) -> None:
    done = promotion("Done", "Succeeded", finishedAt="2027-01-15T08:00:23Z")
    metrics.record_status("build", "other", healthy(), SPEC)
    metrics.record_status("build", "ci", healthy(), SPEC)
    metrics.record_status("build", "ci", healthy(history=[done]), SPEC)
    metrics.reconcile_finished("build", "ci", 0.2, "TemporaryError")
    text = exposition(metrics)
    assert 'cluster="ci"' in text
    metrics.forget("build", "ci")
    text = exposition(metrics)
    assert 'cluster="ci"' not in text, [x for x in text.splitlines() if 'cluster="ci"' in x]
    assert 'cluster="other"' in text


def exposition(metrics: OperatorMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_every_exposed_name_is_declared_and_follows_the_conventions(
    metrics: OperatorMetrics,
) -> None:
    done = promotion("Done", "Succeeded", finishedAt="2027-01-15T08:00:23Z")
    metrics.record_status("build", "ci", healthy(), SPEC)
    metrics.record_status(
        "build", "ci", healthy(promotion=promotion("Fencing", "InProgress")), SPEC
    )
    metrics.record_status("build", "ci", healthy(promotion=done, history=[done]), SPEC)
    metrics.reconcile_finished("build", "ci", 0.2, "TemporaryError")
    metrics.api_error("PATCH", 500)
    metrics.api_error("GET", 404)  # an answer (absent), not an error
    names = set()
    for family in text_string_to_metric_families(exposition(metrics)):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            names.add(s.name)
            assert s.name.startswith(m.PREFIX)
    assert names <= m.exported_names(), names - m.exported_names()
    assert m.exported_names() - names == set(), "every declared metric appears in this scenario"
    assert sample(metrics, m.KUBERNETES_API_ERRORS + "_total", method="PATCH", code="500") == 1
    assert sample(metrics, m.KUBERNETES_API_ERRORS + "_total", method="GET", code="404") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [(":8081", ("0.0.0.0", 8081)), ("127.0.0.1:9000", ("127.0.0.1", 9000)), ("0", None)],
)
def test_bind_address(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_bind_address(text) == expected


@pytest.mark.parametrize("text", ["8081", "host:", ":http", ":70000"])
def test_bad_bind_address_is_refused(text: str) -> None:
    with pytest.raises(BindAddressError, match="--metrics-bind-address"):
        parse_bind_address(text)


def test_served_over_http(metrics: OperatorMetrics) -> None:
    metrics.record_status("build", "ci", healthy(), SPEC)
    host, port = metrics.serve(("127.0.0.1", 0))
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        metrics.stop_serving()
    assert 'gocdha_replication_lag_bytes{cluster="ci",namespace="build",side="b"} 1234.0' in text


def test_a_promotion_taken_over_after_a_restart_is_timed_from_its_timestamps(
    metrics: OperatorMetrics, clock: Clock
) -> None:
    """This process first sees the promotion at Promoting: that step's start and the annotation
    are unknown here, so neither is timed; the total comes from startedAt/finishedAt."""
    c = {"namespace": "build", "cluster": "ci"}
    metrics.record_status(
        "build", "ci", healthy(promotion=promotion("Promoting", "InProgress")), SPEC
    )
    clock.advance(2)
    metrics.record_status(
        "build", "ci", healthy(promotion=promotion("SwitchingRoles", "InProgress")), SPEC
    )
    clock.advance(3)
    metrics.record_status(
        "build", "ci", healthy(promotion=promotion("Rejoining", "InProgress")), SPEC
    )
    done = promotion("Done", "Succeeded", finishedAt="2027-01-15T08:00:41Z")
    metrics.record_status("build", "ci", healthy(promotion=done, history=[done]), SPEC)
    assert sample(metrics, m.PROMOTION_STEP_DURATION + "_count", **c, step="Promoting") is None
    assert sample(metrics, m.PROMOTION_STEP_DURATION + "_sum", **c, step="SwitchingRoles") == 3
    assert (
        sample(metrics, m.PROMOTION_REQUEST_TO_WRITABLE + "_count", **c, type="Switchover") is None
    )
    labels = {**c, "type": "Switchover", "result": "Succeeded"}
    assert sample(metrics, m.PROMOTION_DURATION + "_sum", **labels) == 41
    assert sample(metrics, m.PROMOTIONS + "_total", **labels) == 1


def test_a_failure_inside_the_metrics_never_reaches_the_caller(
    metrics: OperatorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    """record_status is called in the supervisor's status write: it must not raise."""
    metrics.record_status("build", "ci", None, SPEC)  # type: ignore[arg-type]
    assert "updating the metrics failed" in caplog.text
    metrics.record_status("build", "ci", healthy(), SPEC)
    assert sample(metrics, m.FAILOVER_MAX_LAG_BYTES, namespace="build", cluster="ci") == 4096
