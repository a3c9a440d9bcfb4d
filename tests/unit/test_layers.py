"""The package's layers, enforced: imports go one way, downward, and only the top reaches ``local``.

The tree is the architecture (``docs/architecture.md``, "Layers"): a newcomer who sees a
``controller`` module import ``cli``, or a builder import the controller, should get a failing
test rather than a review comment. Imports inside functions count too (a lazy import is still a
dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

PACKAGE_ROOT: Final = Path(__file__).resolve().parents[2] / "operator" / "gocd_ha_operator"
PACKAGE: Final = "gocd_ha_operator"

#: layer -> rank. A module may import its own layer and any layer of a lower rank; two layers of
#: the same rank (``postgres``, ``gocd``) may not import each other.
LAYER_RANKS: Final[dict[str, int]] = {
    "api": 0,
    "kube": 1,
    "postgres": 2,
    "gocd": 2,
    "rules": 3,
    "builders": 4,
    "guard": 4,
    "controller": 5,
    "local": 6,
    # The kubectl plugin: a client of the API only; it may not reach the emulator or kubelet.
    "plugin": 6,
    "cli": 7,
}


def layer_of(module: str) -> str | None:
    """``gocd_ha_operator.kube.apply`` -> ``kube``; the package root itself has no layer."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, importer: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every module an AST imports, absolute, with its line (relative imports resolved)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importer.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            # ``from gocd_ha_operator import api`` names a layer through the imported name.
            if module == PACKAGE:
                for alias in node.names:
                    if alias.name in LAYER_RANKS:
                        yield node.lineno, f"{PACKAGE}.{alias.name}"


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """``module name -> (source, is_package)`` in, one line per wrong import out."""
    problems: list[str] = []
    for importer, (source, is_package) in sorted(sources.items()):
        own = layer_of(importer)
        for line, imported in imported_modules(ast.parse(source), importer, is_package):
            target = layer_of(imported)
            if target is None or target == own:
                continue
            if target not in LAYER_RANKS:
                problems.append(f"{importer}:{line} imports {imported}: unknown layer {target!r}")
                continue
            if own is None:
                # The package root imports nothing of its layers (it holds only __version__).
                problems.append(f"{importer}:{line} imports {imported}: the root imports no layer")
            elif own not in LAYER_RANKS:
                problems.append(f"{importer}: module outside every layer ({own!r})")
            elif LAYER_RANKS[target] >= LAYER_RANKS[own]:
                problems.append(
                    f"{importer}:{line} imports {imported}: layer {own!r} may not import "
                    f"{target!r} (imports go downward: {' < '.join(LAYER_RANKS)})"
                )
    return problems


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
    }


def test_every_module_belongs_to_a_layer() -> None:
    strays = [
        name for name in package_sources() if name != PACKAGE and layer_of(name) not in LAYER_RANKS
    ]
    assert strays == [], f"modules outside every layer (put them in one of {list(LAYER_RANKS)})"


def test_imports_go_downward_only() -> None:
    assert violations(package_sources()) == []


def test_every_layer_says_what_it_owns_and_may_import() -> None:
    for layer in LAYER_RANKS:
        init = PACKAGE_ROOT / layer / "__init__.py"
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring, f"{layer}/__init__.py has no docstring"
        assert "import" in docstring, f"{layer}/__init__.py does not say what it may import"


@pytest.mark.parametrize(
    ("importer", "source", "wrong"),
    [
        # A lower layer reaching up: the builders may not know the controller.
        (
            "gocd_ha_operator.builders.gocd",
            "from gocd_ha_operator.controller.reconcile import reconcile_children\n",
            "'builders' may not import 'controller'",
        ),
        # A lazy import inside a function is still a dependency.
        (
            "gocd_ha_operator.api.spec",
            "def f():\n    from gocd_ha_operator.postgres import config\n",
            "'api' may not import 'postgres'",
        ),
        # The emulator and the local kubelet never reach the operator proper.
        (
            "gocd_ha_operator.controller.handlers",
            "import gocd_ha_operator.local.emulator\n",
            "'controller' may not import 'local'",
        ),
        # Siblings of one rank stay apart.
        (
            "gocd_ha_operator.gocd.client",
            "from gocd_ha_operator import postgres\n",
            "'gocd' may not import 'postgres'",
        ),
        # Relative imports are resolved before they are judged.
        (
            "gocd_ha_operator.kube.apply",
            "from ..rules import promotion\n",
            "'kube' may not import 'rules'",
        ),
    ],
)
def test_a_wrong_import_is_reported(importer: str, source: str, wrong: str) -> None:
    problems = violations({importer: (source, False)})
    assert len(problems) == 1 and wrong in problems[0], problems


def test_a_downward_import_is_accepted() -> None:
    source = "from gocd_ha_operator.api.spec import GoCDHACluster\nfrom . import names\n"
    assert violations({"gocd_ha_operator.kube.labels": (source, False)}) == []
