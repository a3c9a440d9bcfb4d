"""Fixtures of the unit tests: cluster bodies and build inputs (helpers live in tests/support)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.builders import BuildInputs
from gocd_ha_operator.rules.topology import Topology
from tests.support.clusters import CREDENTIALS, MINIMAL_SPEC, Replace, cluster_body, deep_merge


@pytest.fixture
def body() -> Callable[..., dict[str, Any]]:
    """A minimal ``ci`` cluster in ``build``; ``spec`` and top-level keys are deep-merged in."""

    def make(spec: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
        base = cluster_body(
            name="ci",
            namespace="build",
            metadata={"uid": "u-1", "generation": 1},
            spec=Replace(MINIMAL_SPEC),
        )
        result = deep_merge(base, {"spec": spec or {}})
        return deep_merge(result, top)

    return make


@pytest.fixture
def inputs(body: Callable[..., dict[str, Any]]) -> Callable[..., BuildInputs]:
    def make(
        spec: dict[str, Any] | None = None, primary: str = "a", fenced: frozenset[str] = frozenset()
    ) -> BuildInputs:
        cluster: GoCDHACluster = parse_cluster(body(spec))
        return BuildInputs(
            cluster=cluster,
            topology=Topology(primary=primary, fenced=fenced),  # type: ignore[arg-type]
            credentials=CREDENTIALS,
            operator_image="registry.example/gocd-ha-operator:test",
        )

    return make
