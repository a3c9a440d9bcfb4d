"""The cross-field rules, one by one: each rejects what it is about and accepts its neighbour.

``parse_cluster`` runs them all (``test_models.py`` covers the messages users see); here each
rule is called alone, so a rule that stops firing, or fires for another rule's case, fails its
own test.
"""

from __future__ import annotations

from typing import Any

import pytest

from gocd_ha_operator.api import validation
from gocd_ha_operator.api.spec import GoCDHAClusterSpec
from gocd_ha_operator.api.validation import CROSS_FIELD_RULES, Problem, cross_field_problems

SHARED: dict[str, Any] = {"size": "10Gi", "storageClassName": "nfs"}
ADDON: dict[str, Any] = {"url": "https://example.org/bc.jar", "sha256": "0" * 64}


def spec(gocd: dict[str, Any] | None = None, **rest: Any) -> GoCDHAClusterSpec:
    """A spec that passed pydantic only: the cross-field rules have not run on it."""
    return GoCDHAClusterSpec.model_validate({"sharedStorage": SHARED, "gocd": gocd or {}, **rest})


def paths(problems: list[Problem]) -> list[str]:
    return [problem.path for problem in problems]


def test_every_rule_is_registered_once() -> None:
    rules = [
        value
        for name, value in vars(validation).items()
        if callable(value)
        and not name.startswith("_")
        and getattr(value, "__module__", None) == validation.__name__
        and name not in {"cross_field_problems", "shared_volume_problems"}
        and not isinstance(value, type)
    ]
    assert sorted(rule.__name__ for rule in rules) == sorted(
        rule.__name__ for rule in CROSS_FIELD_RULES
    )
    assert len(set(CROSS_FIELD_RULES)) == len(CROSS_FIELD_RULES)


def test_cross_field_problems_concatenates_the_rules_in_order() -> None:
    bad = spec(
        {"image": "gocd/gocd-server:v19.1.0", "standbyMode": "Cold", "businessContinuity": {}},
        sharedStorage={"existingClaim": "x", "size": "1Gi"},
        postgres={"image": "postgres:12"},
    )
    assert paths(cross_field_problems(bad)) == [
        "spec.postgres.image",
        "spec.sharedStorage.existingClaim",
    ]
    assert cross_field_problems(spec()) == []


def test_standby_mode_needs_version_or_setting() -> None:
    rule = validation.standby_mode_needs_version_or_setting
    assert paths(rule(spec({"image": "gocd/gocd-server@sha256:" + "a" * 64}))) == [
        "spec.gocd.standbyMode"
    ]
    assert rule(spec({"image": "gocd/gocd-server@sha256:" + "a" * 64, "standbyMode": "Cold"})) == []
    assert rule(spec({"image": "gocd/gocd-server:v26.1.0"})) == []


def test_warm_not_after_21_2() -> None:
    rule = validation.warm_not_after_21_2
    problems = rule(spec({"image": "gocd/gocd-server:v21.3.0", "standbyMode": "Warm"}))
    assert paths(problems) == ["spec.gocd.standbyMode"]
    assert "21.3.0" in problems[0].message
    assert rule(spec({"image": "gocd/gocd-server:v21.2.0", "standbyMode": "Warm"})) == []
    assert rule(spec({"image": "gocd/gocd-server:v21.3.0", "standbyMode": "Cold"})) == []


def test_warm_needs_token_authentication() -> None:
    rule = validation.warm_needs_token_authentication
    problems = rule(spec({"image": "gocd/gocd-server:v18.7.0", "standbyMode": "Warm"}))
    assert paths(problems) == ["spec.gocd.standbyMode"]
    assert "18.8.0" in problems[0].message
    assert rule(spec({"image": "gocd/gocd-server:v18.8.0", "standbyMode": "Warm"})) == []
    assert rule(spec({"image": "gocd/gocd-server:v18.7.0", "standbyMode": "Cold"})) == []


def test_addon_only_in_warm() -> None:
    rule = validation.addon_only_in_warm
    cold = {"image": "gocd/gocd-server:v20.5.0", "standbyMode": "Cold"}
    assert paths(rule(spec({**cold, "businessContinuity": {"addon": ADDON}}))) == [
        "spec.gocd.businessContinuity.addon"
    ]
    # Warm by default from the version counts as Warm.
    assert (
        rule(spec({"image": "gocd/gocd-server:v20.5.0", "businessContinuity": {"addon": ADDON}}))
        == []
    )
    assert rule(spec(cold)) == []


def test_addon_not_with_builtin_feature() -> None:
    rule = validation.addon_not_with_builtin_feature
    problems = rule(
        spec({"image": "gocd/gocd-server:v20.6.0", "businessContinuity": {"addon": ADDON}})
    )
    assert paths(problems) == ["spec.gocd.businessContinuity.addon"]
    assert "built in" in problems[0].message
    assert (
        rule(spec({"image": "gocd/gocd-server:v20.5.0", "businessContinuity": {"addon": ADDON}}))
        == []
    )
    assert rule(spec({"image": "gocd/gocd-server:v20.6.0"})) == []


def test_addon_required_before_builtin_feature() -> None:
    rule = validation.addon_required_before_builtin_feature
    problems = rule(spec({"image": "gocd/gocd-server:v20.5.0"}))
    assert paths(problems) == ["spec.gocd.businessContinuity.addon"]
    assert "required" in problems[0].message
    assert (
        rule(spec({"image": "gocd/gocd-server:v20.5.0", "businessContinuity": {"addon": ADDON}}))
        == []
    )
    assert rule(spec({"image": "gocd/gocd-server:v20.6.0"})) == []
    assert rule(spec({"image": "gocd/gocd-server:v20.5.0", "standbyMode": "Cold"})) == []


def test_maintenance_mode_start_needs_20_9() -> None:
    rule = validation.maintenance_mode_start_needs_20_9
    old = {"image": "gocd/gocd-server:v20.8.0", "startPromotedInMaintenanceMode": True}
    assert paths(rule(spec(old))) == ["spec.gocd.startPromotedInMaintenanceMode"]
    assert rule(spec({**old, "image": "gocd/gocd-server:v20.9.0"})) == []
    assert rule(spec({**old, "startPromotedInMaintenanceMode": False})) == []


def test_postgres_major_supported() -> None:
    rule = validation.postgres_major_supported
    problems = rule(spec(postgres={"image": "postgres:12"}))
    assert paths(problems) == ["spec.postgres.image"]
    assert "13-17" in problems[0].message
    assert rule(spec(postgres={"image": "postgres:13"})) == []
    # An unversioned image cannot be judged: accepted.
    assert rule(spec(postgres={"image": "registry.example/pg@sha256:" + "b" * 64})) == []


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        ({"existingClaim": "shared", "size": "1Gi"}, ["spec.sharedStorage.existingClaim"]),
        ({"size": "1Gi"}, ["spec.sharedStorage.storageClassName"]),
        ({"storageClassName": "nfs"}, ["spec.sharedStorage.size"]),
        ({"existingClaim": "shared"}, []),
        (SHARED, []),
    ],
)
def test_shared_storage_is_claim_or_class(volume: dict[str, Any], expected: list[str]) -> None:
    assert (
        paths(validation.shared_storage_is_claim_or_class(spec(sharedStorage=volume))) == expected
    )


def test_artifacts_volume_is_claim_or_class() -> None:
    rule = validation.artifacts_volume_is_claim_or_class
    assert paths(rule(spec({"artifacts": {"size": "5Gi"}}))) == [
        "spec.gocd.artifacts.storageClassName"
    ]
    assert rule(spec({"artifacts": {"existingClaim": "artifacts"}})) == []
    assert rule(spec()) == []
