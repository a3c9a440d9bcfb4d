from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.builders import BuildInputs
from gocd_ha_operator.rules.topology import Topology

BASE_BODY: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": "ci", "namespace": "build", "uid": "u-1", "generation": 1},
    "spec": {"sharedStorage": {"size": "10Gi", "storageClassName": "nfs"}},
}

#: Fixed credentials: builders are pure, so tests pass them in like the reconciler does.
CREDENTIALS = ClusterCredentials(
    superuser_password="su-secret-1",
    replication_password="rep-secret-2",
    gocd_password="gocd-secret-3",
    operator_password="op-secret-4",
    bc_token="gocdha = bc-secret-5\n",
)


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@pytest.fixture
def body() -> Callable[..., dict[str, Any]]:
    def make(spec: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
        result = deep_merge(BASE_BODY, {"spec": spec or {}})
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
