"""The chart's value documentation: the `# --` comments of values.yaml are the descriptions of
values.schema.json and the values table of the chart's README (tools/chart_values.py writes both),
and every key of the schema has a description."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import chart_values
import pytest

from tests.support.delivery import CHART


def test_schema_and_readme_are_in_sync_with_values_yaml() -> None:
    assert chart_values.main(["--check"]) == 0, "run: python tools/chart_values.py"


def test_every_schema_key_has_a_description() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if not sub.get("description"):
                missing.append(f"{path}{key}")
            walk(sub, f"{path}{key}.")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[].")

    walk(schema, "")
    for name, definition in schema["definitions"].items():
        if not definition.get("description"):
            missing.append(f"definitions.{name}")
        walk(definition, f"definitions.{name}.")
    assert missing == []


def test_every_documented_value_is_a_row_of_the_readme_table() -> None:
    _, docs = chart_values.value_comments((CHART / "values.yaml").read_text(encoding="utf-8"))
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    table = readme.split(chart_values.TABLE_START)[1].split(chart_values.TABLE_END)[0]
    assert {"crds.enabled", "crds.keep", "rbac.aggregateClusterRoles"} <= set(docs)
    for path in docs:
        assert f"| `{path}` |" in table, path


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    copy = tmp_path / CHART.name
    shutil.copytree(CHART, copy)
    return copy


def test_a_changed_comment_makes_both_files_stale(chart_copy: Path) -> None:
    values = chart_copy / "values.yaml"
    values.write_text(
        values.read_text().replace("# -- Image pull policy.", "# -- How kubelet pulls it.")
    )
    args = ["--chart", str(chart_copy)]
    assert chart_values.main([*args, "--check"]) == 1
    assert chart_values.main(args) == 0
    assert chart_values.main([*args, "--check"]) == 0
    schema = json.loads((chart_copy / "values.schema.json").read_text())
    assert schema["properties"]["image"]["properties"]["pullPolicy"]["description"] == (
        "How kubelet pulls it."
    )
    assert "| `image.pullPolicy` |" in (chart_copy / "README.md").read_text()
    assert "How kubelet pulls it." in (chart_copy / "README.md").read_text()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # A value the schema describes, without a comment.
        (("  # -- Image pull policy.\n", ""), "image.pullPolicy has no `# --` comment"),
        # A documented value the schema does not know.
        (("logFormat: json\n", "logFormat: json\n# -- Stray.\nstray: 1\n"), "stray is documented"),
    ],
)
def test_undocumented_or_unknown_values_are_errors(
    chart_copy: Path, edit: tuple[str, str], message: str
) -> None:
    values = chart_copy / "values.yaml"
    text = values.read_text()
    assert edit[0] in text
    values.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(chart_values.ValuesDocError, match=message):
        chart_values.rendered(chart_copy)


def test_a_schema_only_key_needs_a_written_description(chart_copy: Path) -> None:
    path = chart_copy / "values.schema.json"
    schema = json.loads(path.read_text())
    del schema["properties"]["securityContext"]["properties"]["privileged"]["description"]
    path.write_text(json.dumps(schema))
    with pytest.raises(chart_values.ValuesDocError, match=r"securityContext\.privileged"):
        chart_values.rendered(chart_copy)


def test_comment_parsing() -> None:
    text = (
        "# File header, not a value's comment.\n\n"
        "# -- Parent.\n"
        "top:\n"
        "  # A plain comment line before the doc comment.\n"
        "  # -- First line\n"
        "  # continues here.\n"
        "  leaf: 1\n"
        "  undocumented: 2\n"
        "list:\n"
        "  - name: not-a-key\n"
    )
    paths, docs = chart_values.value_comments(text)
    assert paths == ["top", "top.leaf", "top.undocumented", "list"]
    assert {p: d.description for p, d in docs.items()} == {
        "top": "Parent.",
        "top.leaf": "First line continues here.",
    }
