"""YAML in and out, the way Kubernetes users read it: keys in the order written, multi-line
strings (scripts, config files) as literal blocks rather than escaped one-liners."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import yaml

#: Deepest nesting a document may have. A GoCDHACluster is about 8 levels deep; PyYAML and every
#: consumer recurse, so thousands of levels would end in a RecursionError instead of a message.
MAX_DEPTH: Final = 64
#: Most nodes a document may expand to: aliases can make a small file huge ("billion laughs").
MAX_NODES: Final = 100_000


class YamlShapeError(ValueError):
    """The YAML is well formed but nested too deeply or too large once its aliases expand."""


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def dump_all_yaml(documents: Iterable[Any]) -> str:
    return yaml.dump_all(
        list(documents), Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )


def _depth_of_flow(text: str) -> int:
    """Deepest nesting of the token stream, counted without building (or recursing into) it."""
    depth = deepest = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(
            token,
            yaml.FlowSequenceStartToken
            | yaml.FlowMappingStartToken
            | yaml.BlockMappingStartToken
            | yaml.BlockSequenceStartToken
            | yaml.BlockEntryToken,
        ):
            if isinstance(token, yaml.BlockEntryToken):
                continue
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return deepest
        elif isinstance(
            token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken | yaml.BlockEndToken
        ):
            depth -= 1
    return deepest


def _expanded_size(document: Any) -> int:
    """Nodes of ``document`` with every alias expanded, computed once per shared node."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = (
            [*node.keys(), *node.values()]
            if isinstance(node, dict)
            else list(node)
            if isinstance(node, list)
            else []
        )
        if children_done or not children:
            size = 1 + sum(sizes.get(id(child), 1) for child in children)
            sizes[id(node)] = min(size, MAX_NODES + 1)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(document)]


def load_all_yaml(text: str) -> list[Any]:
    """Every non-empty document of ``text``.

    Raises ``yaml.YAMLError`` for malformed YAML and :class:`YamlShapeError` for YAML nested
    deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_NODES` once aliases expand.
    """
    depth = _depth_of_flow(text)
    if depth > MAX_DEPTH:
        raise YamlShapeError(f"nested more than {MAX_DEPTH} levels deep")
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    for document in documents:
        if _expanded_size(document) > MAX_NODES:
            raise YamlShapeError(f"expands to more than {MAX_NODES} values (YAML aliases)")
    return documents
