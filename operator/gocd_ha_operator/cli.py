"""The ``gocd-ha-operator`` console script.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only maps names to modules, so a subcommand's imports (kopf, psycopg, aiohttp) are paid
only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final

from gocd_ha_operator import __version__

#: subcommand name -> (module, one-line help)
SUBCOMMANDS: Final[dict[str, tuple[str, str]]] = {
    "render": ("gocd_ha_operator.render", "print every child of a GoCDHACluster as YAML"),
    "crd": (
        "gocd_ha_operator.crdgen",
        "print the CustomResourceDefinition generated from the model",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gocd-ha-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args._module.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
