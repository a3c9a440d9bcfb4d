"""Generate the ``GoCDHACluster`` CRD from the pydantic models.

pydantic's JSON Schema is close to, but not, a Kubernetes *structural* schema. This module turns
one into the other: ``$ref``s inlined, ``anyOf [X, null]`` collapsed to ``X``, titles and
``additionalProperties: false`` dropped (Kubernetes prunes and kubectl refuses unknown fields),
and defaults made explicit — including ``default: {}`` for nested objects whose fields all have
defaults, so the API server fills in a complete spec. Status fields carry no defaults: status is
written by the operator only.

``crds/gocdhaclusters.gocdha.io.yaml`` is this module's output; a test fails when they differ.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import types
import typing
from typing import Any, Final

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gocd_ha_operator.api.constants import (
    CATEGORY,
    CRD_NAME,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    VERSION,
)
from gocd_ha_operator.api.spec import MAX_NAME_LENGTH, GoCDHAClusterSpec
from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.api.yamlio import dump_yaml

_DROPPED_KEYS: Final = frozenset({"title", "additionalProperties"})

PRINTER_COLUMNS: Final[list[dict[str, Any]]] = [
    {
        "name": "Primary",
        "type": "string",
        "jsonPath": ".status.primary",
        "description": "The side that is primary now.",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "The cluster is serving and protected by a replicating standby.",
    },
    {
        "name": "Lag",
        "type": "integer",
        "jsonPath": ".status.replication.lagBytes",
        "description": "WAL bytes the standby has not replayed yet.",
    },
    {
        "name": "Synced",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="ConfigSynced")].status',
        "description": "The standby has the primary GoCD server's config and plugins.",
    },
    {
        "name": "Mode",
        "type": "string",
        "jsonPath": ".status.standbyMode",
        "priority": 1,
        "description": "Standby mode: Warm or Cold.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
        "description": "Why the cluster is or is not ready.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref``s and collapse pydantic's idioms into structural-schema form."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **siblings}, defs)
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        non_null = [option for option in any_of if option != {"type": "null"}]
        if len(non_null) == 1 and len(non_null) < len(any_of):
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            merged = {**non_null[0], **merged}
            return _resolve(merged, defs)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":
            result[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        else:
            result[key] = _resolve(value, defs)
    if result.get("type") == "object" and "additionalProperties" in node:
        extra = node["additionalProperties"]
        if isinstance(extra, dict):
            result["additionalProperties"] = _resolve(extra, defs)
    return result


def _model_in(annotation: Any) -> type[BaseModel] | None:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _default_of(model: type[BaseModel], info: FieldInfo) -> tuple[bool, Any]:
    """Whether the field has a non-null default, and that default in wire form."""
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.is_required() or info.default is None:
        return False, None
    else:
        value = info.default
    if isinstance(value, BaseModel):
        dumped = value.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            implicit = type(value)().model_dump(by_alias=True, mode="json", exclude_none=True)
        except ValueError:
            implicit = None
        # All nested fields default themselves: {} lets the API server fill them in.
        return True, {} if dumped == implicit else dumped
    return True, value


def _apply_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    properties = schema.get("properties", {})
    for name, info in model.model_fields.items():
        alias = info.alias or name
        prop = properties.get(alias)
        if prop is None:
            continue
        has_default, value = _default_of(model, info)
        if has_default:
            prop["default"] = value
        nested = _model_in(info.annotation)
        if nested is not None and prop.get("type") == "object":
            _apply_defaults(prop, nested)


def _strip_defaults(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip_defaults(item) for item in node]
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    return node


def structural_schema(model: type[BaseModel], *, with_defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    schema = _strip_defaults(schema)
    if with_defaults:
        _apply_defaults(schema, model)
    return schema


def build_crd() -> dict[str, Any]:
    spec_schema = structural_schema(GoCDHAClusterSpec, with_defaults=True)
    status_schema = structural_schema(GoCDHAClusterStatus, with_defaults=False)
    root = {
        "type": "object",
        "description": (
            "A GoCD server with a replicated standby: a primary and a standby Postgres with "
            "streaming replication and a shared WAL archive, two GoCD servers, and a Service "
            "that always points at the primary. Promote the standby with "
            "`kubectl annotate gocdha <name> gocdha.io/promote=<token> --overwrite`."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters: "
                "children append suffixes to it",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "gocd-ha-operator",
                "app.kubernetes.io/part-of": "gocd-ha",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER: Final = (
    "# Generated by `gocd-ha-operator crd` from operator/gocd_ha_operator/api/spec.py and\n"
    "# status.py.\n"
    "# Do not edit: change the model and run `make crd`.\n"
)


def render_crd_yaml() -> str:
    return HEADER + dump_yaml(build_crd())


def _reference_rows(node: dict[str, Any], path: str) -> list[str]:
    rows: list[str] = []
    for name, prop in node.get("properties", {}).items():
        field_path = f"{path}.{name}"
        kind = "int-or-string" if prop.get("x-kubernetes-int-or-string") else prop.get("type", "")
        if kind == "array" and isinstance(prop.get("items"), dict):
            kind = f"[]{prop['items'].get('type', '')}"
        if "enum" in prop:
            kind += " (" + " \\| ".join(prop["enum"]) + ")"
        default = ""
        if "default" in prop and prop["default"] not in ({}, []):
            default = f"`{json.dumps(prop['default'])}`"
        description = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{field_path}` | {kind} | {default} | {description} |")
        if prop.get("type") == "object":
            rows += _reference_rows(prop, field_path)
        elif isinstance(prop.get("items"), dict) and prop["items"].get("type") == "object":
            rows += _reference_rows(prop["items"], f"{field_path}[]")
    return rows


def render_reference_markdown() -> str:
    """``docs/api-reference.md``: the spec and status fields, from the same schema as the CRD."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    header = ["| field | type | default | description |", "|---|---|---|---|"]
    lines = [
        "<!-- Generated by `gocd-ha-operator crd --reference`; do not edit (run `make crd`). -->",
        "# GoCDHACluster API reference (gocdha.io/v1alpha1)",
        "",
        "Cross-field rules (standby mode against the GoCD version, the shared volume's",
        "alternatives, owned Postgres parameters) are described in [resource.md](resource.md).",
        "",
        "## spec",
        "",
        *header,
        *_reference_rows(schema["properties"]["spec"], "spec"),
        "",
        "## status (written by the operator)",
        "",
        *header,
        *_reference_rows(schema["properties"]["status"], "status"),
        "",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", help="write to this file instead of standard output", default=None
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="print the Markdown API reference instead of the CRD",
    )


def run(args: argparse.Namespace) -> int:
    text = render_reference_markdown() if args.reference else render_crd_yaml()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0
