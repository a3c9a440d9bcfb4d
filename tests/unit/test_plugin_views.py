"""The plugin's pure views: which conditions are "not fine", message flattening, sizes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.plugin.views import (
    GOOD_STATUS,
    ClusterView,
    human_bytes,
    not_fine,
    one_line,
    why_not,
)

NOW = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC)


def view(conditions: list[tuple[str, str, str]], **status: Any) -> ClusterView:
    return ClusterView.of(
        {
            "metadata": {"name": "ci", "namespace": "build"},
            "spec": {"failover": {"mode": "Automatic", "cooldownSeconds": 600}},
            "status": {
                "conditions": [
                    {
                        "type": t,
                        "status": s,
                        "reason": r,
                        "message": r,
                        "lastTransitionTime": "2027-01-15T07:00:00Z",
                    }
                    for t, s, r in conditions
                ],
                **status,
            },
        }
    )


def test_not_fine_knows_each_conditions_good_status() -> None:
    v = view(
        [
            ("Ready", "True", "Protected"),
            ("Degraded", "True", "ConfigNotSynced"),
            ("Promoting", "False", "Idle"),
            ("FailoverPossible", "Unknown", "Initializing"),
            ("BusinessContinuityAPIExposed", "True", "UnauthenticatedSyncAPI"),
            ("BackupHealthy", "False", "BackupFailed"),
        ]
    )
    assert [c.type for c in not_fine(v)] == [
        "Degraded",
        "FailoverPossible",
        "BusinessContinuityAPIExposed",
        "BackupHealthy",
    ]
    failed = view([("Promoting", "False", "PromotionFailed")])
    assert [c.reason for c in not_fine(failed)] == ["PromotionFailed"]


def test_messages_are_one_line_and_bounded() -> None:
    assert one_line("connection refused\n\tIs the server running?") == (
        "connection refused Is the server running?"
    )
    long = one_line("x" * 500)
    assert len(long) == 160 and long.endswith("…")
    assert one_line(None) == ""


def test_human_bytes() -> None:
    assert [human_bytes(v) for v in (None, 0, 1023, 1024, 16 * 1024 * 1024)] == [
        "unknown",
        "0 B",
        "1023 B",
        "1.0 KiB",
        "16.0 MiB",
    ]


def test_why_not_on_a_ready_automatic_pair_is_empty_and_cooldown_counts() -> None:
    sides = {
        "a": {"role": "primary", "postgres": {"reachable": True, "inRecovery": False}},
        "b": {"role": "standby", "postgres": {"reachable": True, "inRecovery": True}},
    }
    ready = view(
        [("FailoverPossible", "True", "StandbyReady")],
        primary="a",
        standby="b",
        sides=sides,
        replication={"lagBytes": 0, "lastStreamingTime": "2027-01-15T07:59:50Z"},
    )
    assert why_not(ready, NOW) == []
    recent = view(
        [("FailoverPossible", "True", "StandbyReady")],
        primary="a",
        standby="b",
        sides=sides,
        replication={"lagBytes": 0, "lastStreamingTime": "2027-01-15T07:59:50Z"},
        history=[{"token": "t", "result": "Succeeded", "finishedAt": "2027-01-15T07:58:00Z"}],
    )
    assert why_not(recent, NOW) == [
        "cooldown: the last promotion finished 120s ago; automatic failover waits 600s"
    ]


def test_every_condition_type_has_a_good_status() -> None:
    """A new condition must be classified, or `status` would never call it "not fine"."""
    missing = set(cond.CONDITION_TYPES) - set(GOOD_STATUS)
    assert missing == set()
