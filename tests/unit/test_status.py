"""``status_patch``: the JSON merge patch the handlers and the supervisor write the status with."""

from __future__ import annotations

from gocd_ha_operator.api.status import GoCDHAClusterStatus, status_patch


def test_unchanged_status_gives_an_empty_patch() -> None:
    status = {"primary": "a", "replication": {"state": "Streaming", "lagBytes": 0}}
    assert status_patch(status, dict(status)) == {}


def test_only_changed_nested_keys_are_sent() -> None:
    old = {"primary": "a", "replication": {"state": "Streaming", "lagBytes": 0}}
    new = {"primary": "a", "replication": {"state": "Streaming", "lagBytes": 42}}
    assert status_patch(old, new) == {"replication": {"lagBytes": 42}}


def test_removed_keys_are_nulled_and_new_keys_added() -> None:
    old = {"primary": "a", "promotion": {"token": "t1", "step": "Done"}}
    new = {"standby": "b", "promotion": {"token": "t1"}}
    assert status_patch(old, new) == {
        "primary": None,
        "standby": "b",
        "promotion": {"step": None},
    }


def test_a_mapping_replacing_a_scalar_is_sent_whole() -> None:
    assert status_patch({"sides": None}, {"sides": {"a": {"role": "primary"}}}) == {
        "sides": {"a": {"role": "primary"}}
    }


def test_patch_of_model_output_round_trips() -> None:
    old = GoCDHAClusterStatus().to_api()
    new = GoCDHAClusterStatus(primary="b", standby="a").to_api()
    patch = status_patch(old, new)
    assert patch == {"primary": "b", "standby": "a"}
    merged = {**old, **patch}
    assert GoCDHAClusterStatus.model_validate(merged).primary == "b"
