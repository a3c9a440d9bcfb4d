"""What ``spec.postgres.parameters`` may hold: owned and refused parameters, value types, quoting.

Part of the resource model because validation needs it (a parameter the operator owns, or one that
runs code or escapes the instance, is refused when the resource is parsed, and every value is
checked against its type), while ``postgres.config`` renders the accepted ones into
``postgresql.conf``.

The type table (:data:`PARAMETERS`) covers the commonly tuned parameters of PostgreSQL 15 (and
holds for 13-17): their type, unit and bounds as ``pg_settings`` reports them. A value is checked
the way the server parses it (booleans, integers with memory or time units, reals, enums), so a
typo is refused when the resource is applied instead of stopping Postgres at its next start.

Names not in the table:

* a dotted name (``auto_explain.log_min_duration``) is an extension's setting; Postgres accepts it
  as a placeholder, so it passes through as a string;
* any other name is refused: Postgres refuses to start with an unrecognised parameter in
  ``postgresql.conf``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final, Literal

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
        # Which configuration an instance has loaded (docs/architecture.md §16).
        "gocdha.config_revision",
        "gocdha.raised_settings",
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


#: Parameters refused although the operator does not set them: each would run code chosen by the
#: resource's author inside the database server, read files the operator does not manage, weaken
#: authentication, or break the promotion protocol. Name -> why (shown in the error).
REFUSED_PARAMETERS: Final[Mapping[str, str]] = {
    "ssl_passphrase_command": "runs a shell command in the server",
    "ssl_passphrase_command_supports_reload": "belongs to ssl_passphrase_command",
    "dynamic_library_path": "makes the server load libraries from other places",
    "session_preload_libraries": "loads shared libraries into every session",
    "local_preload_libraries": "loads shared libraries into every session",
    "jit_provider": "loads a shared library",
    "archive_library": "loads a shared library (archiving is the operator's)",
    "recovery_min_apply_delay": (
        "a delayed standby is not caught up when promoted (switchover waits, failover loses data)"
    ),
    "wal_receiver_create_temp_slot": "the operator manages the replication slots",
    "db_user_namespace": "changes how user names authenticate (the operator's logins break)",
    "krb_server_keyfile": "names a file the operator does not manage",
    "unix_socket_group": "the entrypoint writes the socket settings",
    "fsync": "off corrupts the database on a crash, and a corrupt primary cannot be failed over",
    "allow_system_table_mods": "a developer option that can corrupt the catalog",
    "ignore_system_indexes": "a developer option",
    "zero_damaged_pages": "destroys data silently",
    "ignore_checksum_failure": "hides corruption",
    "ignore_invalid_pages": "hides corruption during recovery",
}
#: Every ``ssl*`` parameter is refused: TLS (and its key and certificate files) is not configured
#: through ``spec.postgres.parameters``.
REFUSED_PREFIXES: Final = ("ssl",)

#: ``shared_preload_libraries`` is the one library-loading parameter allowed, and only with
#: modules that ship with the official postgres image and run no user-supplied code.
PRELOADABLE_LIBRARIES: Final = frozenset({"pg_stat_statements", "auto_explain", "pg_prewarm"})

INT64_MAX: Final = 2**63 - 1
INT32_MAX: Final = 2**31 - 1

Kind = Literal["bool", "integer", "real", "enum", "string"]

#: Units the server accepts, in bytes / milliseconds.
MEMORY_UNITS: Final[Mapping[str, int]] = {
    "B": 1,
    "kB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "TB": 1024**4,
}
TIME_UNITS: Final[Mapping[str, Decimal]] = {
    "us": Decimal("0.001"),
    "ms": Decimal(1),
    "s": Decimal(1000),
    "min": Decimal(60_000),
    "h": Decimal(3_600_000),
    "d": Decimal(86_400_000),
}
#: A parameter's own unit (as in ``pg_settings.unit``), in bytes or milliseconds.
BASE_UNITS: Final[Mapping[str, tuple[Literal["memory", "time"], Decimal]]] = {
    "B": ("memory", Decimal(1)),
    "kB": ("memory", Decimal(1024)),
    "8kB": ("memory", Decimal(8192)),
    "MB": ("memory", Decimal(1024**2)),
    "us": ("time", Decimal("0.001")),
    "ms": ("time", Decimal(1)),
    "s": ("time", Decimal(1000)),
    "min": ("time", Decimal(60_000)),
}
_NUMBER: Final = re.compile(
    r"^\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$"
)
_HEX: Final = re.compile(r"^\s*[-+]?0[xX][0-9a-fA-F]+\s*$")
_BOOLEANS: Final = frozenset({"on", "off", "true", "false", "yes", "no", "1", "0"})
MAX_VALUE_LENGTH: Final = 4096


@dataclass(frozen=True)
class Parameter:
    """Type, unit and bounds of one parameter (bounds in the parameter's own unit)."""

    kind: Kind
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    #: PostgreSQL majors that have the parameter (the server refuses to start with an unknown one).
    since: int = 13
    until: int | None = None

    def in_major(self, major: int) -> str | None:
        """Why the parameter does not exist in PostgreSQL ``major``; ``None`` when it does."""
        if major < self.since:
            return f"not a parameter of PostgreSQL {major} (added in {self.since})"
        if self.until is not None and major > self.until:
            return f"not a parameter of PostgreSQL {major} (removed in {self.until + 1})"
        return None

    def allowed(self) -> str:
        """What the error message says is allowed."""
        if self.kind == "bool":
            return "on or off (also true/false, yes/no, 1/0)"
        if self.kind == "enum":
            return "one of " + ", ".join(self.choices)
        if self.kind == "string":
            return f"a string of at most {MAX_VALUE_LENGTH} characters"
        low = _format_bound(self.minimum)
        high = _format_bound(self.maximum)
        unit = self.unit or ""
        kind = "an integer" if self.kind == "integer" else "a number"
        text = f"{kind} from {low}{unit} to {high}{unit}"
        if unit in BASE_UNITS:
            family = BASE_UNITS[unit][0]
            units = ", ".join(MEMORY_UNITS if family == "memory" else TIME_UNITS)
            text += f" (a bare number is in {unit}; units: {units})"
        return text


def _format_bound(value: float | None) -> str:
    if value is None:
        return "?"
    if float(value).is_integer():
        return str(int(value))
    return repr(value)


def _b(since: int = 13) -> Parameter:
    return Parameter("bool", since=since)


def _i(minimum: int, maximum: int, unit: str | None = None, *, since: int = 13) -> Parameter:
    return Parameter("integer", unit, minimum, maximum, since=since)


def _r(minimum: float, maximum: float, unit: str | None = None) -> Parameter:
    return Parameter("real", unit, minimum, maximum)


def _e(*choices: str, since: int = 13, until: int | None = None) -> Parameter:
    return Parameter("enum", choices=choices, since=since, until=until)


def _s() -> Parameter:
    return Parameter("string")


_I = INT32_MAX
_LEVELS: Final = (
    "debug5",
    "debug4",
    "debug3",
    "debug2",
    "debug1",
    "info",
    "notice",
    "warning",
    "error",
    "log",
    "fatal",
    "panic",
)
_CLIENT_LEVELS: Final = ("debug5", "debug4", "debug3", "debug2", "debug1", "log", "notice")

#: The known parameters a user may set (PostgreSQL 15, ``pg_settings``). Owned and refused ones are
#: not listed here; they are checked before this table.
PARAMETERS: Final[Mapping[str, Parameter]] = {
    # Connections.
    "max_connections": _i(1, 262143),
    "superuser_reserved_connections": _i(0, 262143),
    "authentication_timeout": _i(1, 600, "s"),
    "tcp_keepalives_idle": _i(0, _I, "s"),
    "tcp_keepalives_interval": _i(0, _I, "s"),
    "tcp_keepalives_count": _i(0, _I),
    "tcp_user_timeout": _i(0, _I, "ms"),
    "client_connection_check_interval": _i(0, _I, "ms", since=14),
    # Memory.
    "shared_buffers": _i(16, 1073741823, "8kB"),
    "huge_pages": _e("off", "on", "try"),
    "huge_page_size": _i(0, _I, "kB", since=14),
    "temp_buffers": _i(100, 1073741823, "8kB"),
    "max_prepared_transactions": _i(0, 262143),
    "work_mem": _i(64, _I, "kB"),
    "hash_mem_multiplier": _r(1, 1000),
    "maintenance_work_mem": _i(1024, _I, "kB"),
    "autovacuum_work_mem": _i(-1, _I, "kB"),
    "logical_decoding_work_mem": _i(64, _I, "kB"),
    "max_stack_depth": _i(100, _I, "kB"),
    "shared_memory_type": _e("mmap", "sysv"),
    "dynamic_shared_memory_type": _e("posix", "sysv", "mmap"),
    "min_dynamic_shared_memory": _i(0, _I, "MB", since=14),
    "temp_file_limit": _i(-1, _I, "kB"),
    "max_files_per_process": _i(64, _I),
    "effective_cache_size": _i(1, _I, "8kB"),
    # Cost-based vacuum delay and background writer.
    "vacuum_cost_delay": _r(0, 100, "ms"),
    "vacuum_cost_page_hit": _i(0, 10000),
    "vacuum_cost_page_miss": _i(0, 10000),
    "vacuum_cost_page_dirty": _i(0, 10000),
    "vacuum_cost_limit": _i(1, 10000),
    "bgwriter_delay": _i(10, 10000, "ms"),
    "bgwriter_lru_maxpages": _i(0, 1073741823),
    "bgwriter_lru_multiplier": _r(0, 10),
    "bgwriter_flush_after": _i(0, 256, "8kB"),
    "backend_flush_after": _i(0, 256, "8kB"),
    "effective_io_concurrency": _i(0, 1000),
    "maintenance_io_concurrency": _i(0, 1000),
    "io_combine_limit": _i(1, 32, "8kB", since=17),
    "max_worker_processes": _i(0, 262143),
    "max_parallel_workers_per_gather": _i(0, 1024),
    "max_parallel_maintenance_workers": _i(0, 1024),
    "max_parallel_workers": _i(0, 1024),
    "parallel_leader_participation": _b(),
    "old_snapshot_threshold": Parameter("integer", "min", -1, 86400, until=16),
    # WAL (the operator owns wal_level, archiving, full_page_writes, wal_log_hints, sizes kept).
    "synchronous_commit": _e("local", "remote_write", "remote_apply", "on", "off"),
    "wal_sync_method": _e("fsync", "fdatasync", "open_sync", "open_datasync"),
    "wal_compression": _e("pglz", "lz4", "zstd", "on", "off", since=15),
    "wal_init_zero": _b(),
    "wal_recycle": _b(),
    "wal_buffers": _i(-1, 262143, "8kB"),
    "wal_writer_delay": _i(1, 10000, "ms"),
    "wal_writer_flush_after": _i(0, _I, "8kB"),
    "wal_skip_threshold": _i(0, _I, "kB"),
    "commit_delay": _i(0, 100000),
    "commit_siblings": _i(0, 1000),
    "checkpoint_timeout": _i(30, 86400, "s"),
    "checkpoint_completion_target": _r(0, 1),
    "checkpoint_flush_after": _i(0, 256, "8kB"),
    "checkpoint_warning": _i(0, _I, "s"),
    "max_wal_size": _i(2, _I, "MB"),
    "min_wal_size": _i(2, _I, "MB"),
    "recovery_prefetch": _e("off", "on", "try", since=15),
    "wal_decode_buffer_size": _i(65536, 1073741823, "B", since=15),
    "track_commit_timestamp": _b(),
    # Replication tuning that does not change the topology.
    "wal_sender_timeout": _i(0, _I, "ms"),
    "max_standby_archive_delay": _i(-1, _I, "ms"),
    "max_standby_streaming_delay": _i(-1, _I, "ms"),
    "wal_receiver_status_interval": _i(0, 2147483, "s"),
    "hot_standby_feedback": _b(),
    "wal_receiver_timeout": _i(0, _I, "ms"),
    "wal_retrieve_retry_interval": _i(1, _I, "ms"),
    "max_logical_replication_workers": _i(0, 262143),
    "max_sync_workers_per_subscription": _i(0, 262143),
    # Query planning.
    "enable_async_append": _b(since=14),
    "enable_bitmapscan": _b(),
    "enable_gathermerge": _b(),
    "enable_hashagg": _b(),
    "enable_hashjoin": _b(),
    "enable_incremental_sort": _b(),
    "enable_indexscan": _b(),
    "enable_indexonlyscan": _b(),
    "enable_material": _b(),
    "enable_memoize": _b(since=14),
    "enable_mergejoin": _b(),
    "enable_nestloop": _b(),
    "enable_parallel_append": _b(),
    "enable_parallel_hash": _b(),
    "enable_partition_pruning": _b(),
    "enable_partitionwise_join": _b(),
    "enable_partitionwise_aggregate": _b(),
    "enable_seqscan": _b(),
    "enable_sort": _b(),
    "enable_tidscan": _b(),
    "seq_page_cost": _r(0, 1.79769e308),
    "random_page_cost": _r(0, 1.79769e308),
    "cpu_tuple_cost": _r(0, 1.79769e308),
    "cpu_index_tuple_cost": _r(0, 1.79769e308),
    "cpu_operator_cost": _r(0, 1.79769e308),
    "parallel_setup_cost": _r(0, 1.79769e308),
    "parallel_tuple_cost": _r(0, 1.79769e308),
    "min_parallel_table_scan_size": _i(0, 715827882, "8kB"),
    "min_parallel_index_scan_size": _i(0, 715827882, "8kB"),
    "jit": _b(),
    "jit_above_cost": _r(-1, 1.79769e308),
    "jit_inline_above_cost": _r(-1, 1.79769e308),
    "jit_optimize_above_cost": _r(-1, 1.79769e308),
    "geqo": _b(),
    "geqo_threshold": _i(2, _I),
    "geqo_effort": _i(1, 10),
    "geqo_pool_size": _i(0, _I),
    "geqo_generations": _i(0, _I),
    "geqo_selection_bias": _r(1.5, 2),
    "geqo_seed": _r(0, 1),
    "default_statistics_target": _i(1, 10000),
    "constraint_exclusion": _e("partition", "on", "off"),
    "cursor_tuple_fraction": _r(0, 1),
    "from_collapse_limit": _i(1, _I),
    "join_collapse_limit": _i(1, _I),
    "plan_cache_mode": _e("auto", "force_generic_plan", "force_custom_plan"),
    "force_parallel_mode": _e("off", "on", "regress", until=15),
    "debug_parallel_query": _e("off", "on", "regress", since=16),
    # Logging (to stderr; the operator owns the destination and the collector).
    "log_min_messages": _e(*_LEVELS),
    "log_min_error_statement": _e(*_LEVELS),
    "log_min_duration_statement": _i(-1, _I, "ms"),
    "log_min_duration_sample": _i(-1, _I, "ms"),
    "log_statement_sample_rate": _r(0, 1),
    "log_transaction_sample_rate": _r(0, 1),
    "log_startup_progress_interval": _i(0, _I, "ms", since=15),
    "log_autovacuum_min_duration": _i(-1, _I, "ms"),
    "log_checkpoints": _b(),
    "log_connections": _b(),
    "log_disconnections": _b(),
    "log_duration": _b(),
    "log_error_verbosity": _e("terse", "default", "verbose"),
    "log_hostname": _b(),
    "log_line_prefix": _s(),
    "log_lock_waits": _b(),
    "log_recovery_conflict_waits": _b(since=14),
    "log_parameter_max_length": _i(-1, 1073741823, "B"),
    "log_parameter_max_length_on_error": _i(-1, 1073741823, "B"),
    "log_statement": _e("none", "ddl", "mod", "all"),
    "log_replication_commands": _b(),
    "log_temp_files": _i(-1, _I, "kB"),
    "log_timezone": _s(),
    "cluster_name": _s(),
    "update_process_title": _b(),
    # Statistics.
    "track_activities": _b(),
    "track_activity_query_size": _i(100, 1048576, "B"),
    "track_counts": _b(),
    "track_io_timing": _b(),
    "track_wal_io_timing": _b(since=14),
    "track_functions": _e("none", "pl", "all"),
    "stats_fetch_consistency": _e("none", "cache", "snapshot", since=15),
    "compute_query_id": _e("auto", "regress", "on", "off", since=14),
    # Autovacuum.
    "autovacuum": _b(),
    "autovacuum_max_workers": _i(1, 262143),
    "autovacuum_naptime": _i(1, 2147483, "s"),
    "autovacuum_vacuum_threshold": _i(0, _I),
    "autovacuum_vacuum_insert_threshold": _i(-1, _I),
    "autovacuum_analyze_threshold": _i(0, _I),
    "autovacuum_vacuum_scale_factor": _r(0, 100),
    "autovacuum_vacuum_insert_scale_factor": _r(0, 100),
    "autovacuum_analyze_scale_factor": _r(0, 100),
    "autovacuum_freeze_max_age": _i(100000, 2000000000),
    "autovacuum_multixact_freeze_max_age": _i(10000, 2000000000),
    "autovacuum_vacuum_cost_delay": _r(-1, 100, "ms"),
    "autovacuum_vacuum_cost_limit": _i(-1, 10000),
    # Client connection defaults.
    "client_min_messages": _e(*_CLIENT_LEVELS, "warning", "error"),
    "search_path": _s(),
    "row_security": _b(),
    "default_table_access_method": _s(),
    "default_tablespace": _s(),
    "default_toast_compression": _e("pglz", "lz4", since=14),
    "temp_tablespaces": _s(),
    "check_function_bodies": _b(),
    "default_transaction_isolation": _e(
        "serializable", "repeatable read", "read committed", "read uncommitted"
    ),
    "default_transaction_read_only": _b(),
    "default_transaction_deferrable": _b(),
    "statement_timeout": _i(0, _I, "ms"),
    "lock_timeout": _i(0, _I, "ms"),
    "idle_in_transaction_session_timeout": _i(0, _I, "ms"),
    "idle_session_timeout": _i(0, _I, "ms", since=14),
    "transaction_timeout": _i(0, _I, "ms", since=17),
    "vacuum_freeze_table_age": _i(0, 2000000000),
    "vacuum_freeze_min_age": _i(0, 1000000000),
    "vacuum_failsafe_age": _i(0, 2100000000, since=14),
    "vacuum_multixact_freeze_table_age": _i(0, 2000000000),
    "vacuum_multixact_freeze_min_age": _i(0, 1000000000),
    "vacuum_multixact_failsafe_age": _i(0, 2100000000, since=14),
    "vacuum_buffer_usage_limit": _i(0, 16777216, "kB", since=16),
    "bytea_output": _e("escape", "hex"),
    "xmlbinary": _e("base64", "hex"),
    "xmloption": _e("content", "document"),
    "gin_pending_list_limit": _i(64, _I, "kB"),
    "gin_fuzzy_search_limit": _i(0, _I),
    "datestyle": _s(),
    "intervalstyle": _e("postgres", "postgres_verbose", "sql_standard", "iso_8601"),
    "timezone": _s(),
    "extra_float_digits": _i(-15, 3),
    "client_encoding": _s(),
    "lc_messages": _s(),
    "lc_monetary": _s(),
    "lc_numeric": _s(),
    "lc_time": _s(),
    "default_text_search_config": _s(),
    # Locks.
    "deadlock_timeout": _i(1, _I, "ms"),
    "max_locks_per_transaction": _i(10, _I),
    "max_pred_locks_per_transaction": _i(10, _I),
    "max_pred_locks_per_relation": _i(-_I - 1, _I),
    "max_pred_locks_per_page": _i(0, _I),
    # Compatibility.
    "array_nulls": _b(),
    "backslash_quote": _e("safe_encoding", "on", "off"),
    "escape_string_warning": _b(),
    "lo_compat_privileges": _b(),
    "quote_all_identifiers": _b(),
    "standard_conforming_strings": _b(),
    "synchronize_seqscans": _b(),
    "transform_null_equals": _b(),
    # Error handling.
    "exit_on_error": _b(),
    "data_sync_retry": _b(),
    # Libraries: only the vetted contrib modules (see PRELOADABLE_LIBRARIES).
    "shared_preload_libraries": _s(),
}


def _refusal(name: str) -> str | None:
    if name in OWNED_PARAMETERS:
        return (
            "managed by the operator (replication, archiving, layout, authentication, logging) "
            "and cannot be set here"
        )
    reason = REFUSED_PARAMETERS.get(name)
    if reason is not None:
        return f"refused: {reason}"
    if name.startswith(REFUSED_PREFIXES):
        return "refused: TLS settings and their key and certificate files are not set here"
    return None


def _shown(value: str) -> str:
    """A value as quoted in a message: bounded, so a hostile value cannot flood a status."""
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _number(value: str, parameter: Parameter) -> Decimal | str:
    """The value in the parameter's unit, or why it is not a valid number of that parameter."""
    if _HEX.match(value) and parameter.kind == "integer" and parameter.unit is None:
        return Decimal(int(value.strip(), 16))
    match = _NUMBER.match(value)
    if match is None:
        return f"{_shown(value)} is not a number"
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        return f"{_shown(value)} is not a number"
    if not number.is_finite() or abs(number.adjusted()) > 40:
        return f"{_shown(value)} is out of range"
    unit = match.group(2)
    if unit:
        if parameter.unit is None or parameter.unit not in BASE_UNITS:
            return f"{_shown(value)} has a unit, but this parameter takes none"
        family, base = BASE_UNITS[parameter.unit]
        table: Mapping[str, Decimal | int] = MEMORY_UNITS if family == "memory" else TIME_UNITS
        if unit not in table:
            allowed = ", ".join(table)
            return f"unit {unit!r} is not valid here (units are case-sensitive: {allowed})"
        number = number * Decimal(table[unit]) / base
    return number


def check_value(name: str, value: str) -> str | None:
    """Why ``value`` is not valid for the known parameter ``name``; ``None`` when it is."""
    parameter = PARAMETERS[name]
    if parameter.kind == "string":
        if name == "shared_preload_libraries":
            return _preload_problem(value)
        return None
    if parameter.kind == "bool":
        if value.strip().lower() in _BOOLEANS:
            return None
        return f"{_shown(value)} is not a boolean; allowed: {parameter.allowed()}"
    if parameter.kind == "enum":
        if value.strip().lower() in parameter.choices:
            return None
        return f"{_shown(value)} is not allowed; allowed: {parameter.allowed()}"
    number = _number(value, parameter)
    if isinstance(number, str):
        return f"{number}; allowed: {parameter.allowed()}"
    if parameter.kind == "integer":
        number = number.to_integral_value()
    low, high = parameter.minimum, parameter.maximum
    if (low is not None and number < Decimal(repr(low))) or (
        high is not None and number > Decimal(repr(high))
    ):
        return f"{_shown(value)} is out of range; allowed: {parameter.allowed()}"
    if parameter.kind == "real" and not math.isfinite(float(number)):
        return f"{_shown(value)} is out of range; allowed: {parameter.allowed()}"
    return None


def _preload_problem(value: str) -> str | None:
    libraries = [item.strip().strip('"') for item in value.split(",") if item.strip()]
    other = sorted(set(libraries) - PRELOADABLE_LIBRARIES)
    if other:
        allowed = ", ".join(sorted(PRELOADABLE_LIBRARIES))
        return (
            f"{', '.join(_shown(o) for o in other)} cannot be preloaded: a preloaded library "
            f"runs code in every server process; allowed: {allowed}"
        )
    return None


def parameter_problems(
    parameters: Mapping[str, object], *, major: int | None = None
) -> list[tuple[str, str]]:
    """``(name, what is wrong)`` for every parameter that may not be set as given.

    ``major``: the PostgreSQL major version of the image, when its tag says one; a parameter the
    version does not have is refused (the server would not start). Without it, the version range
    is not checked.
    """
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for key, value in parameters.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", key):
            problems.append((key, "not a postgresql.conf parameter name"))
            continue
        name = key.lower()
        if name in seen:
            problems.append((key, f"names the same setting as {seen[name]!r}"))
            continue
        seen[name] = key
        refusal = _refusal(name)
        if refusal is not None:
            problems.append((key, refusal))
            continue
        if not isinstance(value, str):
            problems.append((key, "must be a string"))
            continue
        if len(value) > MAX_VALUE_LENGTH:
            problems.append((key, f"longer than {MAX_VALUE_LENGTH} characters"))
            continue
        try:
            quote_value(value)
        except ValueError as exc:
            problems.append((key, str(exc)))
            continue
        if name in PARAMETERS:
            problem = (
                PARAMETERS[name].in_major(major) if major is not None else None
            ) or check_value(name, value)
            if problem is not None:
                problems.append((key, problem))
        elif "." not in name:
            problems.append(
                (
                    key,
                    "unknown parameter: Postgres would refuse to start with it (the table "
                    "covers the PostgreSQL 15 parameters that may be tuned; an extension's "
                    "setting has a dotted name such as auto_explain.log_min_duration)",
                )
            )
    return problems


def synchronous_problem(parameters: Mapping[str, str], *, synchronous: bool) -> str | None:
    """With ``spec.postgres.synchronous`` a commit must wait for the standby."""
    value = next((v for k, v in parameters.items() if k.lower() == "synchronous_commit"), None)
    if synchronous and value is not None and value.strip().lower() in {"off", "local"}:
        return (
            f"{_shown(value)} would not wait for the standby although spec.postgres.synchronous "
            "is true; allowed: on, remote_write, remote_apply"
        )
    return None
