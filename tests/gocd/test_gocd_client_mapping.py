"""Pure mapping of GoCD / sync agent answers into ``configSync`` (no network, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gocd_ha_operator.gocd.client import (
    GoCDUnreachableError,
    bc_api_exposure_warning,
    config_sync_from_agent_status,
    config_sync_from_dashboard,
    config_sync_from_error,
    parse_gocd_time,
    parse_plugin_status,
)
from tests.support.standin_gocd import (
    gson_date,
    out_of_sync_dashboard,
    setup_incomplete_dashboard,
    sync_errors_dashboard,
    synced_dashboard,
)

NOW = datetime(2024, 6, 15, 12, 0, 0, tzinfo=UTC)
KEYS = {
    "mode",
    "source",
    "setupStatus",
    "lastSyncTime",
    "primaryUpdateTime",
    "files",
    "errors",
    "synced",
    "reason",
    "message",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Jun 15, 2024 11:59:30", datetime(2024, 6, 15, 11, 59, 30, tzinfo=UTC)),
        ("Jun 5, 2024 09:01:02", datetime(2024, 6, 5, 9, 1, 2, tzinfo=UTC)),
        ("Jun 15, 2024, 11:59:30 AM", datetime(2024, 6, 15, 11, 59, 30, tzinfo=UTC)),
        ("Jun 15, 2024 1:02:03\u202fPM", datetime(2024, 6, 15, 13, 2, 3, tzinfo=UTC)),
        ("Jun 15, 2024 12:00:00 AM", datetime(2024, 6, 15, 0, 0, 0, tzinfo=UTC)),
        (1718452770000, datetime(2024, 6, 15, 11, 59, 30, tzinfo=UTC)),
        ("1718452770000", datetime(2024, 6, 15, 11, 59, 30, tzinfo=UTC)),
        ("2024-06-15T11:59:30Z", datetime(2024, 6, 15, 11, 59, 30, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_parse_gocd_time(value: Any, expected: datetime | None) -> None:
    assert parse_gocd_time(value, now=NOW) == expected


def test_week_year_quirk_in_december() -> None:
    # 2024-12-30 is in week 1 of 2025: GoCD's "YYYY" printed 2025.
    now = datetime(2024, 12, 30, 10, 1, 0, tzinfo=UTC)
    printed = gson_date(datetime(2024, 12, 30, 10, 0, 0, tzinfo=UTC), week_year=2025)
    assert printed == "Dec 30, 2024 10:00:00".replace("2024", "2025")
    assert parse_gocd_time(printed, now=now) == datetime(2024, 12, 30, 10, 0, tzinfo=UTC)
    # ... and a correct December date is left alone.
    assert parse_gocd_time("Dec 30, 2024 10:00:00", now=now) == datetime(
        2024, 12, 30, 10, 0, tzinfo=UTC
    )


def test_week_year_quirk_in_january() -> None:
    now = datetime(2027, 1, 1, 0, 5, 0, tzinfo=UTC)  # a locale with week 53 of 2026
    assert parse_gocd_time("Jan 1, 2026 00:04:00", now=now) == datetime(
        2027, 1, 1, 0, 4, tzinfo=UTC
    )


@pytest.mark.parametrize("value", ["yesterday", "Foo 1, 2024 10:00:00", True, [1]])
def test_unparseable_time(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_gocd_time(value, now=NOW)


def test_parse_plugin_status() -> None:
    assert parse_plugin_status("a.jar=111, b-1.0.jar=222") == {"a.jar": "111", "b-1.0.jar": "222"}
    assert parse_plugin_status("") == {}
    assert parse_plugin_status(None) == {}


def test_dashboard_synced() -> None:
    status = config_sync_from_dashboard(
        synced_dashboard(NOW), source="http://x", now=NOW, max_age_seconds=300
    )
    assert set(status) == KEYS
    assert status["mode"] == "Warm"
    assert status["synced"] is True
    assert status["reason"] == "Synced"
    assert status["setupStatus"] == "success"
    assert status["lastSyncTime"] == "2024-06-15T11:59:30Z"
    assert status["primaryUpdateTime"] == "2024-06-15T11:50:00Z"
    names = [f["name"] for f in status["files"]]
    assert names == [
        "config/cruise-config.xml",
        "config/cipher.aes",
        "config/jetty.xml",
        "plugins/external/kubernetes-elastic-agent.jar",
        "plugins/external/yaml-config-plugin.jar",
    ]  # no go.feature.toggles: absent on both sides
    assert all(f["inSync"] and f["primaryChecksum"] for f in status["files"])


def test_dashboard_synced_but_stale() -> None:
    later = NOW + timedelta(minutes=10)
    status = config_sync_from_dashboard(
        synced_dashboard(NOW), source="http://x", now=later, max_age_seconds=300
    )
    assert (status["synced"], status["reason"]) == (False, "SyncStale")
    assert "630s old" in status["message"]


def test_dashboard_out_of_sync() -> None:
    status = config_sync_from_dashboard(
        out_of_sync_dashboard(NOW), source="http://x", now=NOW, max_age_seconds=300
    )
    assert (status["synced"], status["reason"]) == (False, "FilesDiffer")
    differing = {f["name"]: f for f in status["files"] if not f["inSync"]}
    assert set(differing) == {"config/cruise-config.xml", "plugins/external/yaml-config-plugin.jar"}
    assert differing["plugins/external/yaml-config-plugin.jar"]["standbyChecksum"] is None
    assert "2 of 5 files differ" in status["message"]


def test_dashboard_sync_errors() -> None:
    status = config_sync_from_dashboard(
        sync_errors_dashboard(NOW), source="http://x", now=NOW, max_age_seconds=300
    )
    assert (status["synced"], status["reason"]) == (False, "SyncErrors")
    assert status["errors"] and "Unable to connect to primary" in status["errors"][0]


def test_dashboard_setup_incomplete() -> None:
    status = config_sync_from_dashboard(
        setup_incomplete_dashboard(NOW), source="http://x", now=NOW, max_age_seconds=300
    )
    assert (status["synced"], status["reason"]) == (False, "SetupIncomplete")
    assert status["setupStatus"] == "incomplete"
    assert status["files"] == []


def test_dashboard_primary_error() -> None:
    payload = synced_dashboard(NOW)
    payload["primaryServerDetails"] = {"url": "http://p", "error": "Connection refused"}
    status = config_sync_from_dashboard(payload, source="http://x", now=NOW, max_age_seconds=300)
    assert (status["synced"], status["reason"]) == (False, "PrimaryUnreachable")
    assert "primary: Connection refused" in status["errors"]


def test_dashboard_unparseable_date_is_an_error_not_a_crash() -> None:
    payload = synced_dashboard(NOW)
    payload["standbyServerDetails"]["lastUpdateTime"] = "sometime"
    status = config_sync_from_dashboard(payload, source="http://x", now=NOW, max_age_seconds=300)
    assert status["synced"] is False
    assert any("lastUpdateTime" in e for e in status["errors"])


def agent_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "formatVersion": 1,
        "side": "a",
        "lastSyncTime": "2024-06-15T11:59:50Z",
        "sourceUpdateTime": "2024-06-15T11:00:00Z",
        "files": [
            {"name": "config/cruise-config.xml", "sourceSha256": "aa", "mirrorSha256": "aa"},
            {"name": "plugins/external/x.jar", "sourceSha256": "bb", "mirrorSha256": "bb"},
        ],
        "errors": [],
    }
    payload.update(overrides)
    return payload


def test_agent_status_synced() -> None:
    status = config_sync_from_agent_status(
        agent_payload(), source="http://a", now=NOW, max_age_seconds=60
    )
    assert set(status) == KEYS
    assert (status["mode"], status["synced"], status["reason"]) == ("Cold", True, "Synced")
    assert status["primaryUpdateTime"] == "2024-06-15T11:00:00Z"
    assert status["setupStatus"] is None


def test_agent_status_stale_differ_errors_never() -> None:
    stale = config_sync_from_agent_status(
        agent_payload(), source="s", now=NOW + timedelta(minutes=5), max_age_seconds=60
    )
    assert stale["reason"] == "SyncStale"
    differ = agent_payload()
    differ["files"][1]["mirrorSha256"] = "cc"
    assert (
        config_sync_from_agent_status(differ, source="s", now=NOW, max_age_seconds=60)["reason"]
        == "FilesDiffer"
    )
    errors = agent_payload(errors=["[2024-06-15T11:59:55Z] OSError: No space left on device"])
    errors["files"][1]["mirrorSha256"] = "cc"
    assert (
        config_sync_from_agent_status(errors, source="s", now=NOW, max_age_seconds=60)["reason"]
        == "SyncErrors"
    )
    never = agent_payload(lastSyncTime=None, files=[])
    result = config_sync_from_agent_status(never, source="s", now=NOW, max_age_seconds=60)
    assert (result["synced"], result["reason"]) == (False, "SyncStale")


def test_error_mapping() -> None:
    status = config_sync_from_error("Cold", "http://a/status", GoCDUnreachableError("refused"))
    assert set(status) == KEYS
    assert (status["synced"], status["reason"], status["errors"]) == (
        False,
        "Unreachable",
        ["refused"],
    )


@pytest.mark.parametrize(
    ("version", "warns"),
    [
        ((20, 5, 0), False),
        ((20, 6, 0), True),
        ((21, 2, 0), True),
        ((21, 2, 9), True),
        ((21, 3, 0), False),
        ((26, 1, 0), False),
        ((18, 8, 0), False),
    ],
)
def test_bc_api_exposure_warning(version: tuple[int, int, int], warns: bool) -> None:
    message = bc_api_exposure_warning(version)
    assert (message is not None) == warns
    if message:
        assert "GHSA-f8j3-9pqx-h88g" in message
        assert "/go/add-on/business-continuity/" in message
