"""Unit tests of the rendered postgresql.conf include and pg_hba.conf (pure, no Postgres)."""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from gocd_ha_operator.local.process import find_pg_bindir
from gocd_ha_operator.postgres import config as pgconfig
from tests.support.pg import unavailable_reason


def settings(text: str) -> dict[str, str]:
    """key -> raw value of every setting line (comments skipped)."""
    result = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, sep, value = line.partition(" = ")
        assert sep, f"not a setting line: {line!r}"
        result[key] = value
    return result


def test_replication_settings_are_the_modern_ones() -> None:
    conf = settings(pgconfig.render_postgresql_conf(parameters={}, synchronous=False))
    assert conf["wal_level"] == "'replica'"
    assert conf["hot_standby"] == "'on'"
    assert conf["wal_log_hints"] == "'on'"
    assert conf["archive_mode"] == "'on'"
    assert conf["recovery_target_timeline"] == "'latest'"
    assert conf["password_encryption"] == "'scram-sha-256'"
    assert conf["restart_after_crash"] == "'off'"
    assert conf["wal_keep_size"] == "'512MB'"
    assert "max_slot_wal_keep_size" in conf
    assert conf["synchronous_standby_names"] == "''"
    # The legacy recipe's settings must not come back.
    for legacy in ("wal_keep_segments", "standby_mode", "trigger_file", "promote_trigger_file"):
        assert legacy not in conf
    # Commands refer to the environment, never to a container path.
    assert '"${GOCDHA_SCRIPTS_DIR}/archive-wal.sh" "%p" "%f"' in conf["archive_command"]
    assert '"${GOCDHA_SCRIPTS_DIR}/restore-wal.sh" "%f" "%p"' in conf["restore_command"]
    # The archive cleanup keeps what a kept backup needs: cleanup-wal.sh, not pg_archivecleanup.
    assert conf["archive_cleanup_command"] == '\'bash "${GOCDHA_SCRIPTS_DIR}/cleanup-wal.sh" "%r"\''
    assert "/shared" not in "".join(conf.values())
    assert "/opt/gocdha" not in "".join(conf.values())


def test_synchronous_covers_both_sides() -> None:
    conf = settings(pgconfig.render_postgresql_conf(parameters={}, synchronous=True))
    assert conf["synchronous_standby_names"] == "'FIRST 1 (gocdha_a, gocdha_b)'"


def test_user_parameters_are_appended_quoted_and_sorted() -> None:
    text = pgconfig.render_postgresql_conf(
        parameters={"work_mem": "64MB", "max_connections": "200", "search_path": "'$user', x\\y"},
        synchronous=False,
    )
    lines = text.splitlines()
    user = lines[lines.index("# spec.postgres.parameters") + 1 : -1]
    assert user == [
        "max_connections = '200'",
        "search_path = '''$user'', x\\\\y'",
        "work_mem = '64MB'",
    ]
    # Last: the revision of everything above it (docs/architecture.md §16).
    above = "".join(f"{line}\n" for line in lines[:-1])
    assert lines[-1] == f"gocdha.config_revision = '{pgconfig.config_revision(above)}'"
    assert pgconfig.loaded_revision(text) == pgconfig.config_revision(above)


@pytest.mark.parametrize(
    "key", ["archive_command", "ARCHIVE_MODE", "primary_conninfo", "include", "hba_file", "port"]
)
def test_owned_parameter_is_refused_naming_it(key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        pgconfig.render_postgresql_conf(parameters={key: "x"}, synchronous=False)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"work mem": "1"}, "not a postgresql.conf parameter name"),
        ({"work_mem = 1\narchive_mode": "off"}, "not a postgresql.conf parameter name"),
        ({"work_mem": "1MB\narchive_mode = off"}, "line break"),
        ({"work_mem": "1MB", "WORK_MEM": "2MB"}, "names the same setting"),
    ],
)
def test_bad_user_parameters_are_refused(parameters: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pgconfig.render_postgresql_conf(parameters=parameters, synchronous=False)


def test_extension_style_parameter_names_are_allowed() -> None:
    text = pgconfig.render_postgresql_conf(
        parameters={"auto_explain.log_min_duration": "5s"}, synchronous=False
    )
    assert "auto_explain.log_min_duration = '5s'" in text


def test_pg_hba_is_scram_only_and_limits_replication() -> None:
    hba = pgconfig.render_pg_hba(database="gocd")
    rows = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert rows
    assert all(row[-1] == "scram-sha-256" for row in rows)
    replication = [row for row in rows if row[1] == "replication"]
    # Every TCP line is hostssl: a connection without TLS matches none (§17).
    assert replication == [["hostssl", "replication", "gocdha_replication", "all", "scram-sha-256"]]
    assert {row[0] for row in rows} == {"local", "hostssl"}
    # The superuser is not reachable over the network.
    assert all(row[0] == "local" for row in rows if row[2] == "postgres")
    assert ["hostssl", "gocd", "gocd", "all", "scram-sha-256"] in rows
    assert ["hostssl", "postgres", "gocdha_operator", "all", "scram-sha-256"] in rows
    with pytest.raises(ValueError):
        pgconfig.render_pg_hba(database="bad name")


def test_rendered_conf_is_accepted_by_postgres() -> None:
    """``postgres -C`` parses the file the way the server will; a quoting slip fails here."""
    if unavailable_reason():
        pytest.skip(str(unavailable_reason()))
    bindir = find_pg_bindir()
    directory = Path(tempfile.mkdtemp(prefix="gocdha-conf-", dir="/tmp"))
    conf = directory / "postgresql.conf"
    conf.write_text(
        pgconfig.render_postgresql_conf(
            parameters={"search_path": "'$user', public", "work_mem": "8MB"}, synchronous=True
        )
    )
    conf.chmod(0o644)
    directory.chmod(0o755)
    try:
        check_settings(bindir, directory)
    finally:
        shutil.rmtree(directory)


def check_settings(bindir: Path | None, directory: Path) -> None:
    runuser = ["runuser", "-u", "postgres", "--"]
    for name, expected in [
        ("synchronous_standby_names", "FIRST 1 (gocdha_a, gocdha_b)"),
        ("search_path", "'$user', public"),
        ("archive_cleanup_command", 'bash "${GOCDHA_SCRIPTS_DIR}/cleanup-wal.sh" "%r"'),
    ]:
        shown = subprocess.run(
            [*runuser, f"{bindir}/postgres", "-D", str(directory), "-C", name],
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert shown == expected
