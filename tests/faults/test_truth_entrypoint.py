"""Issue #11, defects 4 and 6 at the instance: the entrypoint, on real Postgres.

* A former primary must not come back as a primary because its role says so (a stale status or
  ConfigMap): the WAL archive on the shared volume holds the history file of every promotion, and
  an instance whose timeline is older than the newest one there rejoins as a standby instead.
* The passwords in the mounted Secrets are applied to the roles at every start, so a resource
  re-created over its retained claims (new generated passwords, old databases) comes up.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.support.pg import (
    Passwords,
    PgCluster,
    pg_cluster,
    streaming,
    unavailable_reason,
    wait_until,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    with pg_cluster() as cluster:
        yield cluster


def test_a_former_primary_told_to_be_primary_rejoins_as_a_standby(pg: PgCluster) -> None:
    a, b = pg.start_pair("a")
    a.query("CREATE TABLE builds (id int PRIMARY KEY)")
    a.query("INSERT INTO builds SELECT generate_series(1, 100)")
    lsn = a.query("SELECT pg_current_wal_lsn()::text")
    wait_until(
        lambda: b.query("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", lsn),
        timeout=30,
        what="b replayed a",
    )
    # A switchover: the old primary stops, the standby is promoted and takes writes.
    a.stop()
    assert b.query("SELECT pg_promote(wait => true)") is True
    b.query("CHECKPOINT")
    b.query("INSERT INTO builds SELECT generate_series(101, 200)")
    wait_until(
        lambda: "00000002.history" in pg.archived_files(),
        timeout=30,
        what="the new timeline's history file in the archive",
    )

    # A stale status brings the old primary back with role "primary".
    a.start("primary")
    assert a.in_recovery(), "a former primary started as a second primary:\n" + a.log_tail()
    wait_until(lambda: streaming(b, "a"), timeout=60, what="a streaming from b")
    assert not b.in_recovery()
    lsn = b.query("SELECT pg_current_wal_lsn()::text")
    wait_until(
        lambda: a.query("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", lsn),
        timeout=30,
        what="a replayed b",
    )
    assert a.query("SELECT count(*) FROM builds") == 200, "b's rows are on a"
    log = a.log_text()
    assert "timeline" in log and "former primary" in log


def test_a_primary_with_the_newest_timeline_still_starts_as_primary(pg: PgCluster) -> None:
    """The refusal must not hit the instance that was promoted (its own history file is the
    newest in the archive), also when it restarts before any checkpoint recorded the timeline."""
    a, b = pg.start_pair("a")
    a.stop()
    assert b.query("SELECT pg_promote(wait => true)") is True
    wait_until(
        lambda: "00000002.history" in pg.archived_files(), timeout=30, what="history archived"
    )
    pid = b.postmaster_pid()
    b.kill()  # crash, no shutdown checkpoint
    wait_until(lambda: not _alive(pid), timeout=30, what="b's postmaster gone")
    b.start("primary")
    assert not b.in_recovery(), b.log_tail()
    assert b.query("SELECT timeline_id FROM pg_control_checkpoint()") >= 1


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _replace_passwords(pg: PgCluster) -> Passwords:
    new = Passwords.generate()
    for role in ("superuser", "replication", "operator", "gocd"):
        path = pg.password_file(role)
        path.chmod(0o600)
        path.write_text(getattr(new, role))
        path.chmod(0o400)
        pg.give_to_postgres(path)
    pg.passwords = new
    return new


def test_passwords_from_the_secret_files_are_applied_at_every_start(pg: PgCluster) -> None:
    pg.a.start("primary")
    pg.a.query("CREATE TABLE kept (id int)")
    pg.a.stop()
    # The resource is re-created over its retained claims: new Secrets, new passwords.
    new = _replace_passwords(pg)
    pg.a.start("primary")  # waits until the superuser (new password) can query
    assert pg.a.query("SELECT to_regclass('kept')::text") == "kept", "the old data is kept"
    observation = asyncio.run(pg.a.client().observe())
    assert observation.reachable, observation.error  # the operator role, new password
    with pg.a.gocd_connect() as conn:  # GoCD's user, new password
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pg.b.start("standby")  # base backup and streaming with the new replication password
    wait_until(lambda: streaming(pg.a, "b"), timeout=60, what="b streaming with new passwords")
    for secret in (new.superuser, new.replication, new.operator, new.gocd):
        assert secret not in pg.a.log_text(), "a password reached the log"
