"""Primary + standby from the project's own entrypoint on loopback: replication, lag, archive."""

import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from gocd_ha_operator.postgres.client import format_lsn, parse_lsn
from tests.support.pg import PgCluster, PgInstance, streaming, wait_until

pytestmark = pytest.mark.postgres


def count_rows(instance: PgInstance, table: str = "pipelines") -> int:
    """Rows in ``table``; -1 while the table has not been replayed yet."""
    with instance.connect("gocd") as conn:
        try:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        except psycopg.errors.UndefinedTable:
            return -1
        assert row is not None
        return int(row[0])


def processes_of_postgres_user() -> list[str]:
    """Command lines of every process (the secrets check reads them all)."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return lines


def test_fresh_pair_replicates_and_keeps_secrets_out_of_logs(cluster: PgCluster) -> None:
    primary, standby = cluster.start_pair()

    with primary.gocd_connect() as conn:
        conn.execute("CREATE TABLE pipelines (id serial PRIMARY KEY, name citext)")
        conn.execute("INSERT INTO pipelines (name) SELECT 'p' || g FROM generate_series(1, 500) g")
        # pgcrypto is installed for GoCD without making gocd a superuser.
        digest = conn.execute("SELECT encode(digest('x', 'sha256'), 'hex')").fetchone()
        assert digest is not None
        is_superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'gocd'")
        assert is_superuser.fetchone() == (False,)

    wait_until(lambda: count_rows(standby) == 500, timeout=30, what="rows on the standby")
    assert standby.in_recovery()
    assert not primary.in_recovery()
    assert (standby.pgdata / "standby.signal").exists()
    slot = primary.query("SELECT active FROM pg_replication_slots WHERE slot_name = 'gocdha_b'")
    assert slot is True
    assert primary.query("SELECT datcollate FROM pg_database WHERE datname = 'gocd'") == "C"
    assert primary.query("SHOW data_checksums") == "on"

    # No password in any log, conf file or process command line. The walreceiver's passfile is
    # the one place the replication password is written (mode 0600).
    secrets = [cluster.passwords.superuser, cluster.passwords.replication]
    secrets += [cluster.passwords.operator, cluster.passwords.gocd]
    texts = [primary.log_text(), standby.log_text(), *processes_of_postgres_user()]
    for instance in (primary, standby):
        for name in ("postgresql.conf", "postgresql.auto.conf", "gocdha.conf"):
            texts.append((instance.pgdata / name).read_text())
    for text in texts:
        for secret in secrets:
            assert secret not in text
    passfile = standby.socket_dir / ".gocdha-replication.pgpass"
    assert oct(passfile.stat().st_mode & 0o777) == "0o600"
    assert not list(standby.socket_dir.glob(".gocdha-entrypoint.*"))
    conninfo = standby.query("SHOW primary_conninfo")
    assert "application_name=gocdha_b" in conninfo
    assert "password" not in conninfo


def test_role_primary_on_a_standby_dir_starts_in_recovery(cluster: PgCluster) -> None:
    """Fencing: a restart with the role flipped never promotes; only pg_promote() does."""
    primary, standby = cluster.start_pair()
    standby.stop()
    standby.start("primary")
    assert standby.in_recovery()
    assert "waiting for pg_promote" in standby.log_text()
    wait_until(lambda: streaming(primary, "b"), timeout=30, what="standby streaming again")


async def test_lag_reported_by_pgclient_matches_reality(cluster: PgCluster) -> None:
    primary, standby = cluster.start_pair()
    with primary.connect("gocd") as conn:
        conn.execute("CREATE TABLE payload (id int, filler text)")
    wait_until(lambda: count_rows(standby, "payload") == 0, timeout=10, what="table replayed")
    standby.query("SELECT pg_wal_replay_pause()")
    wait_until(
        lambda: standby.query("SELECT pg_get_wal_replay_pause_state()") == "paused",
        timeout=10,
        what="replay paused",
    )
    paused_at = parse_lsn(standby.query("SELECT pg_last_wal_replay_lsn()::text"))

    with primary.connect("gocd") as conn:
        conn.execute(
            "INSERT INTO payload SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"
        )
    written_to = parse_lsn(primary.query("SELECT pg_current_wal_lsn()::text"))
    written = written_to - paused_at
    assert written > 4_000_000

    wait_until(
        lambda: parse_lsn(standby.query("SELECT pg_last_wal_receive_lsn()::text")) >= written_to,
        timeout=30,
        what="standby receiving everything",
    )
    time.sleep(1.1)
    on_standby = await standby.client().observe()
    on_primary = await primary.client().observe()

    assert on_standby.reachable and on_standby.in_recovery and on_standby.role == "standby"
    assert on_standby.replayed_lsn == paused_at
    assert on_standby.lag_bytes is not None
    # Everything written since the pause, plus at most a little WAL the server writes itself.
    assert written <= on_standby.lag_bytes <= written + 256 * 1024, (
        f"lag {on_standby.lag_bytes} vs written {written} ({format_lsn(paused_at)}..)"
    )
    assert on_standby.lag_seconds is not None and on_standby.lag_seconds >= 1.0
    assert on_standby.wal_receiver_status == "streaming"

    assert on_primary.role == "primary" and on_primary.timeline == 1
    rows = {row.application_name: row for row in on_primary.replication}
    assert set(rows) == {"gocdha_b"}
    row = rows["gocdha_b"]
    assert row.state == "streaming"
    assert row.replay_lsn == paused_at
    assert row.replay_lag_bytes is not None and row.replay_lag_bytes >= written
    assert [s.slot_name for s in on_primary.slots] == ["gocdha_b"]
    assert on_primary.slots[0].active and on_primary.slots[0].wal_status in {"reserved", "extended"}

    standby.query("SELECT pg_wal_replay_resume()")
    caught_up = await standby.client().wait_for_replay(written_to, timeout=30)
    assert caught_up >= written_to
    after = await standby.client().observe()
    assert after.lag_bytes == 0
    assert after.lag_seconds == 0.0


def test_standby_catches_up_from_archive_when_streaming_is_cut(cluster: PgCluster) -> None:
    primary, standby = cluster.start_pair()
    with primary.connect("gocd") as conn:
        conn.execute("CREATE TABLE pipelines (id int)")
    wait_until(
        lambda: standby.query("SELECT count(*) FROM pg_stat_wal_receiver") == 1,
        timeout=10,
        what="walreceiver",
    )

    # Cut streaming and keep it cut: the replication role may not log in, and its walsender is
    # terminated. The archive on the shared volume is now the only way WAL reaches the standby.
    primary.query("ALTER ROLE gocdha_replication NOLOGIN")
    primary.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication "
        "WHERE application_name = 'gocdha_b'"
    )
    wait_until(lambda: not streaming(primary, "b"), timeout=10, what="streaming to stop")
    log_offset = len(standby.log_text())

    with primary.connect("gocd") as conn:
        conn.execute("INSERT INTO pipelines SELECT generate_series(1, 1000)")
        conn.execute("SELECT pg_switch_wal()")
    wait_until(lambda: count_rows(standby) == 1000, timeout=60, what="rows via the archive")
    assert not streaming(primary, "b")
    assert "from archive" in standby.log_text()[log_offset:]

    primary.query("ALTER ROLE gocdha_replication LOGIN")
    wait_until(lambda: streaming(primary, "b"), timeout=30, what="streaming to resume")
    with primary.connect("gocd") as conn:
        conn.execute("INSERT INTO pipelines SELECT generate_series(1, 10)")
    wait_until(lambda: count_rows(standby) == 1010, timeout=30, what="rows via streaming")


def test_two_primaries_on_one_archive_is_split_brain(cluster: PgCluster) -> None:
    first = cluster.a
    first.start("primary")
    first.stop()
    # A copy of the same data dir started as a second primary: same timeline, same WAL names.
    subprocess.run(["cp", "-a", str(first.pgdata), str(cluster.b.pgdata)], check=True)
    second = cluster.b
    first.start("primary")
    second.start("primary")

    first.query("CREATE TABLE t (who text)")
    first.query("INSERT INTO t VALUES ('first')")
    segment = first.query("SELECT pg_walfile_name(pg_current_wal_lsn())")
    first.query("SELECT pg_switch_wal()")
    wait_until((cluster.archive_dir / segment).exists, timeout=30, what="first archived")
    archived = (cluster.archive_dir / segment).read_bytes()

    second.query("CREATE TABLE t (who text, other int)")
    second.query("INSERT INTO t VALUES ('second', 2)")
    assert second.query("SELECT pg_walfile_name(pg_current_wal_lsn())") == segment
    second.query("SELECT pg_switch_wal()")

    def failed() -> bool:
        return bool(second.query("SELECT failed_count FROM pg_stat_archiver"))

    wait_until(failed, timeout=30, what="the second archiver to fail")
    wait_until(lambda: "split brain" in second.log_text(), timeout=10, what="split brain log")
    line = next(ln for ln in second.log_text().splitlines() if "split brain" in ln)
    assert segment in line
    assert (cluster.archive_dir / segment).read_bytes() == archived
    assert "split brain" not in first.log_text()
