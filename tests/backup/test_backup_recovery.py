"""Backups and point-in-time recovery on real Postgres: backup.sh, recover.sh and cleanup-wal.sh.

What a user checks after a restore: which acknowledged rows are there, which are not, and whether
GoCD's files are the ones from that time. Every backup here is taken from the streaming standby
while a writer commits on the primary, as the backup Job does.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gocd_ha_operator.controller.backup import finished_backup
from tests.support.pg import (
    LOOPBACK,
    OS_USER,
    SCRIPTS_DIR,
    PgCluster,
    PgInstance,
    available_pg_cluster,
    pg_cluster,
    wait_until,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with available_pg_cluster() as created:
        yield created


def as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *command] if os.geteuid() == 0 else command


def owned_dir(cluster: PgCluster, name: str) -> Path:
    path = cluster.root / name
    path.mkdir(parents=True, exist_ok=True)
    cluster.give_to_postgres(path)
    return path


def run_script(
    script: str, env: dict[str, str], *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(
        as_postgres(["bash", str(SCRIPTS_DIR / script)]),
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )


def take_backup(
    cluster: PgCluster, source: PgInstance, backup_dir: Path, name: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "GOCDHA_BACKUP_DIR": str(backup_dir),
        # As the Job does: TLS verified against the instance Service's name (§17).
        "GOCDHA_BACKUP_HOST": source.server_name,
        "GOCDHA_BACKUP_HOSTADDR": LOOPBACK,
        "GOCDHA_TLS_CA_FILE": str(cluster.ca_file),
        "GOCDHA_BACKUP_PORT": str(source.port),
        "GOCDHA_REPLICATION_PASSWORD_FILE": str(cluster.password_file("replication")),
        "GOCDHA_BACKUP_NAME": name,
        "GOCDHA_ARCHIVE_DIR": str(cluster.archive_dir),
        "GOCDHA_PG_BINDIR": str(cluster.bindir),
        **extra,
    }
    return run_script("backup.sh", env)


def recover(
    cluster: PgCluster, backup_dir: Path, pgdata: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "GOCDHA_BACKUP_DIR": str(backup_dir),
        "PGDATA": str(pgdata),
        "GOCDHA_SCRIPTS_DIR": str(cluster.config_dir),
        "GOCDHA_RECOVERY_ARCHIVE_DIR": str(cluster.archive_dir),
        "GOCDHA_PG_BINDIR": str(cluster.bindir),
        **extra,
    }
    return run_script("recover.sh", env)


class Recovered:
    """A restored data dir started on its own port, archiving to its own (new) archive."""

    def __init__(self, cluster: PgCluster, pgdata: Path) -> None:
        self.cluster = cluster
        self.pgdata = pgdata
        self.port = free_port()
        self.socket_dir = owned_dir(cluster, f"restore/{pgdata.name}-run")
        self.archive_dir = owned_dir(cluster, f"restore/{pgdata.name}-wal")
        self.log = pgdata.parent / f"{pgdata.name}.log"

    def env(self) -> dict[str, str]:
        return {
            "PATH": _path(self.cluster),
            "GOCDHA_SCRIPTS_DIR": str(self.cluster.config_dir),
            "GOCDHA_ARCHIVE_DIR": str(self.archive_dir),
            "GOCDHA_PG_BINDIR": str(self.cluster.bindir),
        }

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} "
            f"-c unix_socket_directories={self.socket_dir}"
        )
        result = subprocess.run(
            as_postgres(
                [
                    str(self.cluster.bindir / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    "120",
                    "-o",
                    options,
                    "start",
                ]
            ),
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        assert result.returncode == 0, result.stderr + self.log_text()
        wait_until(lambda: not self.in_recovery(), timeout=120, what="recovered instance promoted")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            user="gocd",
            password=self.cluster.passwords.gocd,
            dbname=self.cluster.database,
            autocommit=True,
            connect_timeout=5,
        )

    def in_recovery(self) -> bool:
        try:
            with self.connect() as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.OperationalError:
            return True
        assert row is not None
        return bool(row[0])

    def batches(self) -> dict[int, set[int]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT batch, id FROM builds").fetchall()
        found: dict[int, set[int]] = {}
        for batch, ident in rows:
            found.setdefault(batch, set()).add(ident)
        return found

    def stop(self) -> None:
        subprocess.run(
            as_postgres(
                [
                    str(self.cluster.bindir / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ]
            ),
            env=self.env(),
            capture_output=True,
            check=False,
            cwd="/",
        )


class Writer:
    """Commits numbered rows of one batch on the primary until stopped; keeps the acknowledged."""

    def __init__(self, primary: PgInstance, batch: int) -> None:
        self.primary = primary
        self.batch = batch
        self.acknowledged: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.primary.gocd_connect() as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "INSERT INTO builds (batch) VALUES (%s) RETURNING id", (self.batch,)
                ).fetchone()
                assert row is not None
                self.acknowledged.add(int(row[0]))

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def archive_everything(primary: PgInstance, cluster: PgCluster) -> None:
    """Switch to a new WAL segment and wait until the finished one is in the archive."""
    segment = primary.query("SELECT pg_walfile_name(pg_current_wal_lsn())")
    primary.query("SELECT pg_switch_wal()")
    wait_until(lambda: segment in cluster.archived_files(), timeout=60, what=f"{segment} archived")


def create_table(primary: PgInstance) -> None:
    with primary.gocd_connect() as conn:
        conn.execute(
            "CREATE TABLE builds (id bigserial PRIMARY KEY, batch int NOT NULL, "
            "at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )


def write_gocd_files(directory: Path, version: str) -> None:
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "cruise-config.xml").write_text(f"<cruise version='{version}'/>\n")
    (directory / "config" / "cipher.aes").write_text("0123456789abcdef\n")
    (directory / "plugins" / "external").mkdir(parents=True, exist_ok=True)
    (directory / "plugins" / "external" / "plugin.jar").write_bytes(version.encode() * 100)


def test_backup_under_a_writer_recovers_to_latest_and_to_a_time_between_batches(
    cluster: PgCluster,
) -> None:
    primary, standby = cluster.start_pair("a")
    create_table(primary)
    backups = owned_dir(cluster, "backups")
    mirror = cluster.root / "mirror"
    write_gocd_files(mirror, "v1")

    with Writer(primary, batch=1) as first:
        time.sleep(0.5)
        result = take_backup(cluster, standby, backups, "b1", GOCDHA_GOCD_FILES_DIR=str(mirror))
        assert result.returncode == 0, result.stderr
        time.sleep(0.3)
    assert "backup: name=b1" in result.stdout
    manifest = (backups / "b1" / "manifest.json").read_text()
    assert '"gocdFiles": true' in manifest
    # The target: after every batch-1 commit, before any batch-2 commit.
    time.sleep(1.1)
    target = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(1.1)
    write_gocd_files(mirror, "v2")  # GoCD's files change after the backup
    with Writer(primary, batch=2) as second:
        time.sleep(0.5)
    archive_everything(primary, cluster)
    assert len(first.acknowledged) > 50 and len(second.acknowledged) > 10

    at_time = owned_dir(cluster, "restore") / "at-time"
    gocd_restored = owned_dir(cluster, "restore") / "gocd-restored"
    result = recover(
        cluster,
        backups,
        at_time,
        GOCDHA_RECOVERY_TARGET_TIME=target,
        GOCDHA_GOCD_RESTORE_DIR=str(gocd_restored),
    )
    assert result.returncode == 0, result.stderr
    instance = Recovered(cluster, at_time)
    try:
        instance.start()
        found = instance.batches()
    finally:
        instance.stop()
    assert found.get(1, set()) >= first.acknowledged, "acknowledged batch-1 rows missing"
    assert 2 not in found, "rows committed after the target time were recovered"
    assert "version='v1'" in (gocd_restored / "config" / "cruise-config.xml").read_text()

    latest = owned_dir(cluster, "restore") / "latest"
    result = recover(cluster, backups, latest)
    assert result.returncode == 0, result.stderr
    instance = Recovered(cluster, latest)
    try:
        instance.start()
        found = instance.batches()
    finally:
        instance.stop()
    assert found.get(1, set()) >= first.acknowledged
    assert found.get(2, set()) >= second.acknowledged, "archived rows missing from latest"


def test_a_corrupted_backup_is_refused_before_anything_is_written(cluster: PgCluster) -> None:
    _, standby = cluster.start_pair("a")
    backups = owned_dir(cluster, "backups")
    assert take_backup(cluster, standby, backups, "b1").returncode == 0
    victim = backups / "b1" / "pgdata" / "global" / "pg_control"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF  # one byte changed
    victim.write_bytes(bytes(data))

    target = owned_dir(cluster, "restore") / "restored"
    result = recover(cluster, backups, target)
    assert result.returncode != 0
    assert "backup 'b1' failed verification" in result.stderr
    assert not target.exists(), "recovery wrote into PGDATA before verifying the backup"


def test_retention_keeps_the_configured_backups_and_the_wal_of_the_oldest(
    cluster: PgCluster,
) -> None:
    primary, standby = cluster.start_pair("a")
    create_table(primary)
    backups = owned_dir(cluster, "backups")
    for index in range(1, 4):
        with Writer(primary, batch=index):
            time.sleep(0.3)
        archive_everything(primary, cluster)
        report = owned_dir(cluster, "reports") / f"b{index}.json"
        result = take_backup(
            cluster,
            standby,
            backups,
            f"b{index}",
            GOCDHA_BACKUP_KEEP="2",
            GOCDHA_TERMINATION_LOG=str(report),
        )
        assert result.returncode == 0, result.stderr
    kept = sorted(p.name for p in backups.iterdir() if (p / "manifest.json").exists())
    assert kept == ["b2", "b3"]
    assert sorted(p.name for p in backups.iterdir()) == ["b2", "b3"]  # no partial leftovers
    start_wal = next(
        line.split('"')[3]
        for line in (backups / "b2" / "manifest.json").read_text().splitlines()
        if '"startWal"' in line
    )
    marker = cluster.archive_dir / ".gocdha-backup-keep-from"
    assert marker.read_text().strip() == start_wal
    # What the operator reads from the last Job's termination message.
    job = {
        "metadata": {"name": "ci-bk-b3", "labels": {"gocdha.io/backup": "b3"}},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    message = (owned_dir(cluster, "reports") / "b3.json").read_text()
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"message": message}}}]}}
    done = finished_backup(job, [pod])
    assert done is not None and done.succeeded
    assert done.record.size_bytes is not None and done.record.size_bytes > 0
    assert done.record.first_wal is not None and len(done.record.first_wal) == 24
    b2 = json.loads((backups / "b2" / "manifest.json").read_text())
    assert done.oldest_kept_finished_at == b2["finishedAt"]

    # The standby's cleanup at a restart point far ahead still keeps what b2 needs.
    archive_everything(primary, cluster)
    newest = cluster.archived_files()[-1]
    cleanup = subprocess.run(
        as_postgres(["bash", str(SCRIPTS_DIR / "cleanup-wal.sh"), newest]),
        env={"GOCDHA_ARCHIVE_DIR": str(cluster.archive_dir), "PATH": _path(cluster)},
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert cleanup.returncode == 0, cleanup.stderr
    segments = [name for name in cluster.archived_files() if len(name) == 24]
    assert min(segments)[8:] == start_wal[8:], "WAL the oldest kept backup needs was removed"

    # And the oldest kept backup still recovers, with every row archived after it.
    restored = owned_dir(cluster, "restore") / "from-b2"
    result = recover(cluster, backups, restored, GOCDHA_RECOVERY_BACKUP="b2")
    assert result.returncode == 0, result.stderr
    instance = Recovered(cluster, restored)
    try:
        instance.start()
        assert set(instance.batches()) == {1, 2, 3}
    finally:
        instance.stop()


def _path(cluster: PgCluster) -> str:
    return f"{cluster.bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_recovery_refuses_an_empty_volume_and_targets_outside_the_window(
    cluster: PgCluster,
) -> None:
    _, standby = cluster.start_pair("a")
    backups = owned_dir(cluster, "backups")
    target = owned_dir(cluster, "restore") / "restored"

    result = recover(cluster, backups, target)
    assert result.returncode != 0 and f"no backup in '{backups}'" in result.stderr

    assert take_backup(cluster, standby, backups, "b1").returncode == 0
    result = recover(cluster, backups, target, GOCDHA_RECOVERY_TARGET_TIME="2001-01-01T00:00:00Z")
    assert result.returncode != 0
    assert "before the earliest recoverable point" in result.stderr
    result = recover(cluster, backups, target, GOCDHA_RECOVERY_TARGET_TIME="2999-01-01T00:00:00Z")
    assert result.returncode != 0 and "in the future" in result.stderr
    result = recover(cluster, backups, target, GOCDHA_RECOVERY_TARGET_TIME="yesterday")
    assert result.returncode != 0 and "GOCDHA_RECOVERY_TARGET_TIME" in result.stderr
    result = recover(cluster, backups, target, GOCDHA_RECOVERY_BACKUP="nope")
    assert result.returncode != 0 and "no backup named 'nope'" in result.stderr
    assert not target.exists()


def test_one_backup_at_a_time_and_names_are_not_reused(cluster: PgCluster) -> None:
    _, standby = cluster.start_pair("a")
    backups = owned_dir(cluster, "backups")
    assert take_backup(cluster, standby, backups, "b1").returncode == 0
    again = take_backup(cluster, standby, backups, "b1")
    assert again.returncode != 0 and "already exists" in again.stderr
    (backups / ".lock").mkdir()
    cluster.give_to_postgres(backups / ".lock")
    busy = take_backup(cluster, standby, backups, "b2")
    assert busy.returncode != 0 and "another backup is running" in busy.stderr
    assert not (backups / "b2").exists()
    (backups / ".lock").rmdir()
    bad = take_backup(cluster, standby, backups, "../escape")
    assert bad.returncode != 0 and "GOCDHA_BACKUP_NAME" in bad.stderr


def test_a_new_cluster_bootstraps_its_primary_from_a_backup_and_builds_its_standby(
    cluster: PgCluster,
) -> None:
    """What spec.bootstrap.recovery does: the entrypoint of the new cluster's first primary
    recovers the backup (plus the source's archive), promotes, and its standby follows it."""
    primary, standby = cluster.start_pair("a")
    create_table(primary)
    backups = owned_dir(cluster, "backups")
    with Writer(primary, batch=1) as first:
        time.sleep(0.3)
        assert take_backup(cluster, standby, backups, "b1").returncode == 0
    with Writer(primary, batch=2) as second:
        time.sleep(0.3)
    archive_everything(primary, cluster)

    with pg_cluster() as recovered:
        # The new resource has passwords of its own; the roles come from the backup with the
        # source's, and the entrypoint applies the new ones once recovery has promoted.
        assert recovered.passwords.gocd != cluster.passwords.gocd
        recovered.a.start(
            "primary",
            env={
                "GOCDHA_RECOVERY_BACKUP_DIR": str(backups),
                "GOCDHA_RECOVERY_ARCHIVE_DIR": str(cluster.archive_dir),
            },
            timeout=180,
        )
        wait_until(lambda: not recovered.a.in_recovery(), timeout=120, what="promoted")
        with recovered.a.gocd_connect() as conn:
            rows = conn.execute("SELECT batch, id FROM builds").fetchall()
        ids = {int(ident) for _, ident in rows}
        assert first.acknowledged | second.acknowledged <= ids
        # It promoted on a new timeline, archived to its own archive, never to the source's.
        recovered.a.query("CHECKPOINT")
        timeline = recovered.a.query("SELECT timeline_id FROM pg_control_checkpoint()")
        assert timeline > 1
        history = f"{timeline:08X}.history"
        wait_until(
            lambda: history in recovered.archived_files(), timeout=60, what="history archived"
        )
        assert history not in cluster.archived_files()
        # A restart after recovery drops the recovery settings, and the standby is built from
        # the recovered primary as usual.
        recovered.a.stop()
        recovered.a.start("primary")
        assert not (recovered.a.pgdata / "gocdha-bootstrap.conf").exists()
        recovered.b.start("standby", timeout=180)
        with recovered.a.gocd_connect() as conn:
            conn.execute("INSERT INTO builds (batch) VALUES (3)")

        def replayed() -> bool:
            try:
                with recovered.b.gocd_connect() as conn:
                    row = conn.execute("SELECT count(*) FROM builds WHERE batch = 3").fetchone()
            except psycopg.OperationalError:
                return False
            return row is not None and row[0] == 1

        wait_until(replayed, timeout=60, what="standby of the recovered cluster replays")
