"""One factory for ``GoCDHACluster`` bodies in tests and benchmarks, starting from ``examples/``.

Tests used to write their own dicts, each a little different. Here a body is an example from
``examples/`` (what users copy, so it is known to be valid) with overrides deep-merged on top:

    cluster_body("cold-cluster.yaml", name="ci", namespace="build", spec={"failover": {...}})

Most tests want a smaller spec than an example's; :class:`Replace` swaps a subtree instead of
merging into it (``spec=Replace(MINIMAL_SPEC)``), and :data:`DELETE` removes a key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from gocd_ha_operator.api.credentials import ClusterCredentials

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLES: Final = ROOT / "examples"
DEFAULT_EXAMPLE: Final = "cold-cluster.yaml"

#: The smallest valid spec: the only required field is the shared RWX volume.
MINIMAL_SPEC: Final[dict[str, Any]] = {
    "sharedStorage": {"size": "10Gi", "storageClassName": "nfs"},
}

#: Fixed credentials: builders are pure, so tests pass them in like the reconciler does.
CREDENTIALS: Final = ClusterCredentials(
    superuser_password="su-secret-1",
    replication_password="rep-secret-2",
    gocd_password="gocd-secret-3",
    operator_password="op-secret-4",
    bc_token="gocdha = bc-secret-5\n",
)


@dataclass(frozen=True)
class Replace:
    """An override value that replaces the subtree under its key instead of merging into it."""

    value: Any


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


#: An override value that removes its key.
DELETE: Final = _Delete()


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged in: mappings recursively, anything else replaced; never
    modifies either argument. :class:`Replace` and :data:`DELETE` are honoured at any depth."""
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            result.pop(key, None)
        elif isinstance(value, Replace):
            result[key] = copy.deepcopy(value.value)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = deep_merge({}, value) if isinstance(value, dict) else copy.deepcopy(value)
    return result


def example_body(example: str = DEFAULT_EXAMPLE) -> dict[str, Any]:
    """The parsed ``examples/<example>``."""
    document = yaml.safe_load((EXAMPLES / example).read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"examples/{example} is not one mapping"
    return document


def cluster_body(
    example: str = DEFAULT_EXAMPLE,
    *,
    name: str | None = None,
    namespace: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """``examples/<example>`` with ``metadata.name``/``namespace`` set when given and the
    top-level ``overrides`` (``metadata=``, ``spec=``, ``status=``) deep-merged on top."""
    body = example_body(example)
    metadata: dict[str, Any] = {}
    if name is not None:
        metadata["name"] = name
    if namespace is not None:
        metadata["namespace"] = namespace
    body = deep_merge(body, {"metadata": metadata})
    return deep_merge(body, overrides)
