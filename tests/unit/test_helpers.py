"""Small pure helpers: labels, owner references, conditions, endpoints, credentials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gocd_ha_operator.api.conditions import get_condition, rfc3339, set_condition
from gocd_ha_operator.api.credentials import (
    ClusterCredentials,
    decode_secret_value,
    encode_secret_data,
)
from gocd_ha_operator.kube.endpoints import Endpoint, EndpointConfigError, parse_overrides, resolve
from gocd_ha_operator.kube.labels import object_labels, owner_reference, selector_labels, with_owner
from tests.support.clusters import DELETE, Replace, cluster_body

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
OWNER = cluster_body(metadata=Replace({"name": "ci", "uid": "123"}), spec=DELETE)


def test_selector_labels_are_a_subset_of_object_labels() -> None:
    selector = selector_labels("ci", "postgres", "a")
    labels = object_labels("ci", "postgres", "a", "primary")
    assert selector.items() <= labels.items()
    assert "gocdha.io/role" not in selector
    assert labels["gocdha.io/role"] == "primary"
    assert labels["app.kubernetes.io/managed-by"] == "gocd-ha-operator"


def test_owner_reference_is_a_controller_reference() -> None:
    assert owner_reference(OWNER) == {
        "apiVersion": "gocdha.io/v1alpha1",
        "kind": "GoCDHACluster",
        "name": "ci",
        "uid": "123",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_owner_reference_needs_a_uid() -> None:
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        owner_reference({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n"}})


def test_with_owner_keeps_other_owners_and_is_idempotent() -> None:
    child = {"metadata": {"name": "c", "ownerReferences": [{"uid": "other"}]}}
    once = with_owner(child, OWNER)
    twice = with_owner(once, OWNER)
    assert once == twice
    assert [r["uid"] for r in twice["metadata"]["ownerReferences"]] == ["other", "123"]
    assert child["metadata"]["ownerReferences"] == [{"uid": "other"}]


def test_condition_is_added_with_a_transition() -> None:
    conditions, transition = set_condition(
        [],
        type="Ready",
        status="False",
        reason="Creating",
        message="m",
        observed_generation=1,
        now=NOW,
    )
    assert transition is not None and transition.old_status is None
    assert conditions[0].last_transition_time == "2026-11-25T12:00:00Z"


def test_transition_time_moves_only_when_status_flips() -> None:
    conditions, _ = set_condition(
        [], type="Ready", status="False", reason="A", message="", observed_generation=1, now=NOW
    )
    later = NOW + timedelta(minutes=5)
    same, transition = set_condition(
        conditions,
        type="Ready",
        status="False",
        reason="B",
        message="new",
        observed_generation=2,
        now=later,
    )
    assert transition is None
    assert same[0].last_transition_time == "2026-11-25T12:00:00Z"
    assert (same[0].reason, same[0].message, same[0].observed_generation) == ("B", "new", 2)
    flipped, transition = set_condition(
        same,
        type="Ready",
        status="True",
        reason="Ready",
        message="",
        observed_generation=2,
        now=later,
    )
    assert transition is not None and transition.old_status == "False"
    assert flipped[0].last_transition_time == "2026-11-25T12:05:00Z"


def test_one_entry_per_type_and_order_is_kept() -> None:
    conditions, _ = set_condition(
        [], type="A", status="True", reason="R", message="", observed_generation=1, now=NOW
    )
    conditions, _ = set_condition(
        conditions, type="B", status="True", reason="R", message="", observed_generation=1, now=NOW
    )
    conditions, _ = set_condition(
        conditions, type="A", status="False", reason="R", message="", observed_generation=1, now=NOW
    )
    assert [c.type for c in conditions] == ["A", "B"]
    changed = get_condition(conditions, "A")
    assert changed is not None and changed.status == "False"
    assert get_condition(conditions, "C") is None


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == "2026-01-02T03:04:05Z"


def test_endpoints_default_to_service_dns() -> None:
    assert resolve("ns", "ci-pg-a", 5432, {}) == Endpoint("ci-pg-a.ns.svc", 5432)


def test_endpoint_overrides() -> None:
    overrides = parse_overrides('{"ns/ci-pg-a:5432": "127.0.0.1:15432"}')
    assert resolve("ns", "ci-pg-a", 5432, overrides) == Endpoint("127.0.0.1", 15432)
    assert resolve("ns", "ci-pg-b", 5432, overrides) == Endpoint("ci-pg-b.ns.svc", 5432)


def test_endpoints_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOCDHA_ENDPOINTS", '{"ns/svc:80": "[::1]:8080"}')
    assert resolve("ns", "svc", 80) == Endpoint("::1", 8080)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"ns/svc:80": 5}', "must be a string"),
        ('{"svc:80": "h:1"}', "'<ns>/<svc>:<port>'"),
        ('{"ns/svc:80": "nohost"}', "'<host>:<port>'"),
        ('{"ns/svc:80": "h:99999"}', "'<host>:<port>'"),
    ],
)
def test_bad_endpoint_overrides_are_named(raw: str, fragment: str) -> None:
    with pytest.raises(EndpointConfigError, match="GOCDHA_ENDPOINTS") as excinfo:
        parse_overrides(raw)
    assert fragment in str(excinfo.value)


def test_generated_credentials_are_random_and_never_shown() -> None:
    first, second = ClusterCredentials.generate(), ClusterCredentials.generate()
    assert first != second
    assert len(first.superuser_password) >= 40
    assert first.bc_token.startswith("gocdha = ")
    for value in first.values():
        assert value not in repr(first) and value not in str(first)


def test_secret_data_round_trip() -> None:
    secret = {"data": encode_secret_data({"password": "p@ss"})}
    assert decode_secret_value(secret, "password") == "p@ss"
    assert decode_secret_value({"stringData": {"k": "v"}}, "k") == "v"
    assert decode_secret_value(secret, "missing") is None
