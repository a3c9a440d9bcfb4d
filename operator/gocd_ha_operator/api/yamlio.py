"""YAML in and out, the way Kubernetes users read it: keys in the order written, multi-line
strings (scripts, config files) as literal blocks rather than escaped one-liners."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


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


def load_all_yaml(text: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]
