"""TEMPORARY placeholder with the agreed API; replaced by the Postgres data-path change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

OWNED_PARAMETERS: Final[frozenset[str]] = frozenset(
    {
        "listen_addresses",
        "port",
        "wal_level",
        "archive_mode",
        "archive_command",
        "restore_command",
        "primary_conninfo",
        "primary_slot_name",
        "hba_file",
        "password_encryption",
    }
)


def render_postgresql_conf(*, parameters: Mapping[str, str], synchronous: bool) -> str:
    lines = ["wal_level = replica"]
    lines += [f"{k} = '{v}'" for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def render_pg_hba(*, database: str) -> str:
    return f"host {database} gocd all scram-sha-256\n"
