"""The ``gocd-ha-operator`` console script.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only maps names to modules, so a subcommand's imports (kopf, psycopg, aiohttp) are paid
only by the subcommand that needs them. A subcommand whose optional extra is not installed (``demo``
needs kmock, which the operator image leaves out) says how to install it instead of a traceback.
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
    "run": ("gocd_ha_operator.cli.run", "run the operator (kopf, standalone)"),
    "demo": (
        "gocd_ha_operator.local.demo",
        "the operator on this machine: real local Postgres, replication, a promotion",
    ),
    "drill": (
        "gocd_ha_operator.local.drill",
        "a disaster-recovery drill on this machine: back up, recover into a scratch cluster, "
        "print RPO and RTO",
    ),
    "render": ("gocd_ha_operator.cli.render", "print every child of a GoCDHACluster as YAML"),
    "crd": (
        "gocd_ha_operator.api.crd",
        "print the CustomResourceDefinition generated from the model",
    ),
    "sync-agent": (
        "gocd_ha_operator.gocd.sync_agent",
        "Cold mode: mirror the primary GoCD's config and plugins to the shared volume",
    ),
    "restore": (
        "gocd_ha_operator.gocd.restore",
        "Cold mode: restore the mirrored GoCD files before a server starts as primary",
    ),
    "instance-guard": (
        "gocd_ha_operator.guard.instance",
        "the Postgres pod's sidecar: renew the primary Lease, stop Postgres when it cannot",
    ),
    "install-addon": (
        "gocd_ha_operator.gocd.addon",
        "Warm mode, GoCD <= 20.5: install the business-continuity add-on jar, checksum verified",
    ),
}


#: subcommand -> (extra, the top-level module that extra provides)
OPTIONAL_EXTRAS: Final[dict[str, tuple[str, str]]] = {
    "demo": ("demo", "kmock"),
    "drill": ("demo", "kmock"),
}
#: Exit status when a subcommand cannot run because its extra is missing (as for a usage error).
EXIT_MISSING_EXTRA: Final = 2


def missing_extra(command: str) -> str | None:
    """One line saying how to install ``command``'s extra when it is missing, else ``None``."""
    if command not in OPTIONAL_EXTRAS:
        return None
    extra, module_name = OPTIONAL_EXTRAS[command]
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name != module_name:
            raise
        return (
            f"gocd-ha-operator {command} needs the optional {module_name} package: "
            f"pip install 'gocd-ha-operator[{extra}]'"
        )
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported (all of them when ``None``)."""
    parser = argparse.ArgumentParser(
        prog="gocd-ha-operator",
        description="A GoCD server with a replicated standby, promoted by one annotation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if (command is None and missing_extra(name) is None) or name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    problem = missing_extra(command) if command is not None else None
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_MISSING_EXTRA
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(arguments)
    result: int = args._module.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
