"""What ``spec.postgres.parameters`` may hold: the parameters the operator owns and value quoting.

Part of the resource model because validation needs it (a parameter the operator owns is refused
when the resource is parsed), while ``postgres.config`` renders the accepted ones into
``postgresql.conf``.
"""

from __future__ import annotations

from typing import Final

#: Settings the operator decides. A user parameter naming one of these is refused, because
#: changing it would break replication, archiving, fencing or the instance layout.
OWNED_PARAMETERS: Final[frozenset[str]] = frozenset(
    {
        # Layout and access: written per instance by the entrypoint.
        "listen_addresses",
        "port",
        "unix_socket_directories",
        "unix_socket_permissions",
        "data_directory",
        "config_file",
        "hba_file",
        "ident_file",
        "external_pid_file",
        "include",
        "include_dir",
        "include_if_exists",
        "password_encryption",
        # Replication and rewind.
        "wal_level",
        "hot_standby",
        "wal_log_hints",
        "full_page_writes",
        "wal_keep_size",
        "max_wal_senders",
        "max_replication_slots",
        "max_slot_wal_keep_size",
        "primary_conninfo",
        "primary_slot_name",
        "synchronous_standby_names",
        "recovery_target_timeline",
        "recovery_target",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_xid",
        "recovery_target_action",
        "recovery_target_inclusive",
        "promote_trigger_file",
        # Archiving.
        "archive_mode",
        "archive_command",
        "archive_library",
        "archive_timeout",
        "restore_command",
        "archive_cleanup_command",
        "recovery_end_command",
        # Fencing: a crashed postmaster must take the container down so the entrypoint decides
        # the role again instead of Postgres restarting itself in place.
        "restart_after_crash",
        # Logs go to the container's stderr.
        "logging_collector",
        "log_destination",
    }
)

_FORBIDDEN_VALUE_CHARACTERS: Final = frozenset("\n\r\x00")


def quote_value(value: str) -> str:
    """Quote ``value`` as a postgresql.conf string literal.

    Every parameter type accepts a quoted value, so quoting always is both correct and safe: a
    user value can never end the line early or smuggle in a second setting. Inside the quotes
    Postgres treats backslash as an escape and a doubled quote as a quote.
    """
    if any(ch in _FORBIDDEN_VALUE_CHARACTERS for ch in value):
        raise ValueError("a postgresql.conf value cannot contain a line break or NUL character")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
