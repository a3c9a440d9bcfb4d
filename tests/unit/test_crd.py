"""The CRD is generated from the model: drift, structure, printer columns, defaults and CEL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from celpy.adapter import json_to_cel

from gocd_ha_operator.api.crd import build_crd, render_crd_yaml, render_reference_markdown
from gocd_ha_operator.api.spec import GoCDHAClusterSpec, parse_cluster

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "gocdhaclusters.gocdha.io.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_committed_crd_matches_the_model() -> None:
    assert CRD_FILE.read_text() == render_crd_yaml(), (
        "crds/gocdhaclusters.gocdha.io.yaml is out of date: run `make crd`"
    )


def test_committed_api_reference_matches_the_model() -> None:
    reference = (ROOT / "docs" / "api-reference.md").read_text()
    assert reference == render_reference_markdown(), (
        "docs/api-reference.md is out of date: run `make crd`"
    )
    assert "`spec.failover.maxLagBytes`" in reference


def test_names_scope_and_subresources(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "gocdhaclusters.gocdha.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["gocdha"]
    assert spec["names"]["categories"] == ["gocd"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns)[:4] == ["Primary", "Ready", "Lag", "Synced"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Synced"]["jsonPath"] == '.status.conditions[?(@.type=="ConfigSynced")].status'
    assert columns["Age"]["type"] == "date"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, node in _walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "type" in node, f"{path} has no type"
        assert "$ref" not in node and "title" not in node, path
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            assert node["default"] is not None, path


def test_spec_fields_are_described_for_kubectl_explain(schema: dict[str, Any]) -> None:
    undocumented = [
        path
        for path, node in _walk(schema["properties"]["spec"])
        if path.count(".") >= 1
        and "description" not in node
        and not path.endswith("{}")
        and not path.endswith("[]")
    ]
    assert undocumented == []


def test_schema_defaults_equal_the_model_defaults(schema: dict[str, Any]) -> None:
    """What the API server fills in is exactly what the model assumes when a field is absent."""
    minimal = {"sharedStorage": {"size": "1Gi", "storageClassName": "nfs"}}
    defaulted = _apply_schema_defaults(schema["properties"]["spec"], minimal)
    from_model = GoCDHAClusterSpec.model_validate(minimal).to_api()
    assert defaulted == from_model


def _apply_schema_defaults(node: dict[str, Any], value: Any) -> Any:
    if node.get("type") != "object" or not isinstance(value, dict) or "properties" not in node:
        return value
    result = dict(value)
    for key, prop in node["properties"].items():
        if key not in result and "default" in prop:
            result[key] = prop["default"]
        if key in result:
            result[key] = _apply_schema_defaults(prop, result[key])
    return result


def test_conditions_are_a_map_keyed_by_type(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {
        "type",
        "status",
        "lastTransitionTime",
        "reason",
    }


def test_status_schema_has_no_defaults(schema: dict[str, Any]) -> None:
    assert all("default" not in node for _, node in _walk(schema["properties"]["status"]))


def test_no_plain_credential_fields(schema: dict[str, Any]) -> None:
    for path, _node in _walk(schema["properties"]["spec"]):
        leaf = path.rsplit(".", 1)[-1].lower()
        assert "password" not in leaf and leaf not in ("token", "secret"), path


def _rules(schema: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    return {
        path: node["x-kubernetes-validations"]
        for path, node in _walk(schema)
        if "x-kubernetes-validations" in node
    }


def _evaluate(rule: str, new: Any, old: Any = None) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(rule))
    activation = {"self": json_to_cel(new)}
    if old is not None:
        activation["oldSelf"] = json_to_cel(old)
    return bool(program.evaluate(activation))


def _rule(schema: dict[str, Any], path: str, fragment: str) -> str:
    rules = _rules(schema)[path]
    return next(r["rule"] for r in rules if fragment in r["message"])


def test_every_cel_rule_has_a_message(schema: dict[str, Any]) -> None:
    rules = _rules(schema)
    assert rules
    for path, entries in rules.items():
        for entry in entries:
            assert entry["message"], path


def test_cel_shared_storage_alternatives(schema: dict[str, Any]) -> None:
    rule = _rule(schema, ".spec.sharedStorage", "either existingClaim")
    assert _evaluate(rule, {"existingClaim": "x"})
    assert _evaluate(rule, {"size": "1Gi", "storageClassName": "nfs"})
    assert not _evaluate(rule, {"existingClaim": "x", "size": "1Gi"})
    assert not _evaluate(rule, {"size": "1Gi"})
    assert not _evaluate(rule, {})


def test_cel_immutable_fields(schema: dict[str, Any]) -> None:
    database = _rule(schema, ".spec.postgres.database", "immutable")
    assert _evaluate(database, "gocd", "gocd")
    assert not _evaluate(database, "other", "gocd")
    storage = _rule(schema, ".spec.postgres.storage", "immutable")
    assert not _evaluate(storage, {"size": "30Gi"}, {"size": "20Gi"})
    klass = _rule(schema, ".spec.gocd.storage", "storageClassName is immutable")
    assert _evaluate(
        klass, {"size": "1Gi", "storageClassName": "a"}, {"size": "1Gi", "storageClassName": "a"}
    )
    assert _evaluate(klass, {"size": "2Gi", "storageClassName": "a"}, {"size": "1Gi"})
    assert not _evaluate(
        klass, {"size": "1Gi", "storageClassName": "b"}, {"size": "1Gi", "storageClassName": "a"}
    )
    assert not _evaluate(klass, {"size": "1Gi"}, {"size": "1Gi", "storageClassName": "a"})
    shared = _rule(schema, ".spec.sharedStorage", "storageClassName is immutable")
    assert _evaluate(shared, {"existingClaim": "x"}, {"size": "1Gi", "storageClassName": "nfs"})
    assert not _evaluate(
        shared,
        {"size": "1Gi", "storageClassName": "other"},
        {"size": "1Gi", "storageClassName": "nfs"},
    )


def test_cel_addon_only_in_warm_mode(schema: dict[str, Any]) -> None:
    rule = _rule(schema, ".spec.gocd", "addon")
    addon = {"addon": {"url": "https://x", "sha256": "a" * 64}}
    assert _evaluate(rule, {"standbyMode": "Warm", "businessContinuity": addon})
    assert not _evaluate(rule, {"standbyMode": "Cold", "businessContinuity": addon})
    assert _evaluate(rule, {"standbyMode": "Cold", "businessContinuity": {}})


def test_cel_name_length(schema: dict[str, Any]) -> None:
    rule = schema["x-kubernetes-validations"][0]["rule"]
    assert _evaluate(rule, {"metadata": {"name": "c" * 40}})
    assert not _evaluate(rule, {"metadata": {"name": "c" * 41}})


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_examples_validate_against_the_crd_and_the_model(
    schema: dict[str, Any], example: Path
) -> None:
    document = yaml.safe_load(example.read_text())
    jsonschema.validate(document["spec"], schema["properties"]["spec"])
    parse_cluster(document)


def test_the_crd_schema_rejects_what_the_model_rejects(schema: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gocd": {"standbyMode": "Hot"}}, schema["properties"]["spec"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"failover": {"primaryUnavailableSeconds": 1}}, schema["properties"]["spec"]
        )
