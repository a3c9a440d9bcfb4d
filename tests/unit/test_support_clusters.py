"""The test cluster factory: examples in, overrides merged, replaced or deleted."""

from __future__ import annotations

from gocd_ha_operator.api.spec import parse_cluster
from tests.support.clusters import (
    DELETE,
    EXAMPLES,
    MINIMAL_SPEC,
    Replace,
    cluster_body,
    deep_merge,
    example_body,
)


def test_every_example_is_a_valid_body() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        parse_cluster(cluster_body(path.name))


def test_name_namespace_and_spec_overrides_merge_into_the_example() -> None:
    body = cluster_body(name="x", namespace="ns", spec={"postgres": {"synchronous": True}})
    assert body["metadata"] == {"name": "x", "namespace": "ns"}
    assert body["spec"]["postgres"] == {
        "image": "postgres:17",
        "storage": {"size": "50Gi"},
        "synchronous": True,
    }
    assert body["spec"]["gocd"] == example_body()["spec"]["gocd"]


def test_replace_and_delete() -> None:
    body = cluster_body(
        metadata=Replace({"name": "only"}), spec=Replace(MINIMAL_SPEC), status=DELETE
    )
    assert body["metadata"] == {"name": "only"}
    assert body["spec"] == MINIMAL_SPEC
    assert "status" not in body
    body["spec"]["sharedStorage"]["size"] = "1Gi"
    assert MINIMAL_SPEC["sharedStorage"]["size"] == "10Gi", "the constant was aliased"


def test_deep_merge_copies_and_recurses() -> None:
    base = {"a": {"b": 1, "c": [1]}}
    merged = deep_merge(base, {"a": {"b": 2, "d": {"e": DELETE}}})
    assert merged == {"a": {"b": 2, "c": [1], "d": {}}}
    merged["a"]["c"].append(2)
    assert base == {"a": {"b": 1, "c": [1]}}
