"""Rendering of the Postgres configuration shipped in the ``<name>-postgres`` ConfigMap.

Pure functions: resource settings in, file text out. The ConfigMap builder calls them and the
Postgres tests call them too, so the text a test runs against is the text a cluster gets.

The same text must work inside a container (paths under ``/opt/gocdha`` and ``/shared``) and
outside one (tests, a developer's laptop). Therefore nothing in it is a path: the archive,
restore and cleanup commands refer to ``"${GOCDHA_SCRIPTS_DIR}"`` and ``"${GOCDHA_ARCHIVE_DIR}"``.
Postgres runs those commands through ``/bin/sh`` with the postmaster's environment, and the
instance entrypoint exports both variables (and puts ``GOCDHA_PG_BINDIR`` first on ``PATH`` so
``pg_archivecleanup`` is found) before it execs ``postgres``.

Per-instance settings (port, sockets, ``hba_file``, ``primary_conninfo``, ``primary_slot_name``)
are not rendered here: the entrypoint writes them at every start from its environment, because
they differ between the two sides while this file is shared by both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

from gocd_ha_operator.api.constants import (
    GOCD_DB_USER,
    OPERATOR_DB_USER,
    PG_CONFIG_REVISION_SETTING,
    REPLICATION_USER,
    SIDES,
    SLOT_PREFIX,
    SUPERUSER_NAME,
)
from gocd_ha_operator.api.postgres_parameters import parameter_problems, quote_value

#: WAL kept on the primary for a standby without relying on the slot (research §3.2: CNPG 512MB).
WAL_KEEP_SIZE: Final = "512MB"
#: Upper bound of WAL a replication slot may pin: a standby gone for long must not fill the disk.
#: Past it the slot is invalidated and the standby catches up from the archive instead.
MAX_SLOT_WAL_KEEP_SIZE: Final = "8GB"
#: Archive-only RPO bound when streaming is down: a partly filled segment is archived after this.
ARCHIVE_TIMEOUT: Final = "60s"
#: Oldest TLS version a client may use (docs/architecture.md §17). The certificate files are
#: per instance (under its socket directory), so the entrypoint writes ``ssl_cert_file``,
#: ``ssl_key_file`` and ``ssl_ca_file``.
SSL_MIN_PROTOCOL_VERSION: Final = "TLSv1.2"
#: Seconds an archive or restore command may take before it is killed and retried by Postgres
#: (a hung NFS mount must not wedge the archiver forever).
ARCHIVE_COMMAND_TIMEOUT_SECONDS: Final = 120
RESTORE_COMMAND_TIMEOUT_SECONDS: Final = 60


def application_name(side: str) -> str:
    """The ``application_name`` a standby of ``side`` streams under (also its slot's name)."""
    return f"{SLOT_PREFIX}{side}"


def _validate_user_parameters(parameters: Mapping[str, str]) -> list[tuple[str, str]]:
    """The same checks as the resource model (a second line of defence for direct callers)."""
    problems = parameter_problems(parameters)
    if problems:
        key, message = problems[0]
        raise ValueError(f"postgres parameter {key!r}: {message}")
    return sorted(parameters.items(), key=lambda item: item[0].lower())


def synchronous_standby_names() -> str:
    """Names that make a commit wait for the standby, whichever side it is.

    Listing both sides' ``application_name`` lets the setting survive a role flip unchanged; the
    primary never connects to itself, so only the current standby can satisfy it. ``FIRST 1``
    (priority) rather than ``ANY 1`` (quorum): with one standby they wait for the same thing, and
    ``pg_stat_replication.sync_state`` then says ``sync``, which is what users check.
    """
    names = ", ".join(application_name(side) for side in SIDES)
    return f"FIRST 1 ({names})"


def render_postgresql_conf(*, parameters: Mapping[str, str], synchronous: bool) -> str:
    """The postgresql.conf include shared by both sides, user ``parameters`` appended last.

    Raises ``ValueError`` naming the offending key when a user parameter is owned by the
    operator, is not a valid setting name, or has a value that cannot be written safely.
    """
    user_settings = _validate_user_parameters(parameters)
    archive_command = (
        f"timeout {ARCHIVE_COMMAND_TIMEOUT_SECONDS} "
        'bash "${GOCDHA_SCRIPTS_DIR}/archive-wal.sh" "%p" "%f"'
    )
    restore_command = (
        f"timeout {RESTORE_COMMAND_TIMEOUT_SECONDS} "
        'bash "${GOCDHA_SCRIPTS_DIR}/restore-wal.sh" "%f" "%p"'
    )
    # Not plain pg_archivecleanup: WAL a kept backup needs stays (cleanup-wal.sh).
    cleanup_command = 'bash "${GOCDHA_SCRIPTS_DIR}/cleanup-wal.sh" "%r"'
    owned: list[tuple[str, str]] = [
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("wal_log_hints", "on"),
        ("full_page_writes", "on"),
        ("wal_keep_size", WAL_KEEP_SIZE),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("max_slot_wal_keep_size", MAX_SLOT_WAL_KEEP_SIZE),
        ("password_encryption", "scram-sha-256"),
        ("archive_mode", "on"),
        ("archive_timeout", ARCHIVE_TIMEOUT),
        ("archive_command", archive_command),
        ("restore_command", restore_command),
        ("archive_cleanup_command", cleanup_command),
        ("recovery_target_timeline", "latest"),
        ("restart_after_crash", "off"),
        ("logging_collector", "off"),
        ("log_destination", "stderr"),
        ("synchronous_standby_names", synchronous_standby_names() if synchronous else ""),
        # TLS by default (§17): pg_hba.conf admits TCP connections over TLS only.
        ("ssl", "on"),
        ("ssl_min_protocol_version", SSL_MIN_PROTOCOL_VERSION),
    ]
    lines = [
        "# Rendered by gocd-ha-operator; edit spec.postgres of the GoCDHACluster, not this file.",
        "# Commands below expand GOCDHA_SCRIPTS_DIR and GOCDHA_ARCHIVE_DIR from the environment",
        "# the instance entrypoint exports.",
    ]
    lines += [f"{key} = {quote_value(value)}" for key, value in owned]
    if user_settings:
        lines.append("# spec.postgres.parameters")
        lines += [f"{key} = {quote_value(value)}" for key, value in user_settings]
    body = "\n".join(lines) + "\n"
    return f"{body}{PG_CONFIG_REVISION_SETTING} = {quote_value(config_revision(body))}\n"


def config_revision(text: str) -> str:
    """A short hash naming one rendered configuration (docs/architecture.md §16)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def loaded_revision(conf: str) -> str | None:
    """The revision written at the end of a rendered ``postgresql.conf`` (``None``: none)."""
    prefix = f"{PG_CONFIG_REVISION_SETTING} = '"
    for line in reversed(conf.splitlines()):
        if line.startswith(prefix) and line.endswith("'"):
            return line[len(prefix) : -1]
    return None


def render_pg_hba(*, database: str) -> str:
    """pg_hba.conf for both sides: scram-sha-256 for every connection, nothing else allowed;
    every TCP connection over TLS (``hostssl``: a plain one matches no line and is refused).

    - the superuser only over the local socket (the entrypoint's bootstrap);
    - ``gocdha_replication`` for streaming and ``pg_basebackup`` (replication connections);
    - ``gocdha_operator`` to ``postgres`` for observation, checkpoint, promotion, slots and as the
      ``pg_rewind`` source connection;
    - ``gocd`` to its own database only.
    Postgres' first matching line wins and an unmatched connection is rejected.
    """
    if not database or any(ch.isspace() or ch in '",#' for ch in database):
        raise ValueError(f"database name {database!r} cannot be used in pg_hba.conf")
    rows = [
        ("local", "all", SUPERUSER_NAME, "", "scram-sha-256"),
        ("local", "postgres", OPERATOR_DB_USER, "", "scram-sha-256"),
        ("local", database, GOCD_DB_USER, "", "scram-sha-256"),
        ("hostssl", "replication", REPLICATION_USER, "all", "scram-sha-256"),
        ("hostssl", "postgres", OPERATOR_DB_USER, "all", "scram-sha-256"),
        ("hostssl", database, GOCD_DB_USER, "all", "scram-sha-256"),
    ]
    lines = [
        "# Rendered by gocd-ha-operator. TYPE DATABASE USER ADDRESS METHOD",
        "# Anything not listed here is rejected.",
    ]
    lines += [
        " ".join(part for part in (kind, db, user, address, method) if part)
        for kind, db, user, address, method in rows
    ]
    return "\n".join(lines) + "\n"
