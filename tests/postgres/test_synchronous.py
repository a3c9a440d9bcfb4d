"""``spec.postgres.synchronous: true`` on real Postgres: the pair starts (the entrypoint's private
bootstrap servers have no standby, so their own commits must not wait for one), and afterwards a
commit on the primary does wait for the standby."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.support.pg import PgCluster, PgInstance, pg_cluster, unavailable_reason, wait_until

pytestmark = pytest.mark.postgres


def rows(instance: PgInstance) -> int:
    with instance.connect("gocd") as conn:
        row = conn.execute("SELECT count(*) FROM t").fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
def synchronous_cluster() -> Iterator[PgCluster]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg_cluster(synchronous=True) as created:
        yield created


def test_a_synchronous_pair_starts_and_its_commits_wait_for_the_standby(
    synchronous_cluster: PgCluster,
) -> None:
    cluster = synchronous_cluster
    # Before the fix, init_primary's role creation waited forever for a synchronous standby that
    # cannot connect to the private bootstrap server: the primary never started.
    primary = cluster.a
    primary.start("primary", timeout=60)
    standby = cluster.b
    standby.start("standby", timeout=90)
    assert primary.query("SHOW synchronous_standby_names") == "FIRST 1 (gocdha_a, gocdha_b)"
    wait_until(
        lambda: primary.query("SELECT sync_state FROM pg_stat_replication") in ("sync", "quorum"),
        timeout=30,
        what="the standby as a synchronous one",
    )
    with primary.gocd_connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
    # Without the standby a commit waits (not even statement_timeout ends the wait), and
    # completes once the standby is back.
    standby.stop()
    done = threading.Event()

    def commit() -> None:
        with primary.gocd_connect() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
        done.set()

    thread = threading.Thread(target=commit, daemon=True)
    thread.start()
    assert not done.wait(3), "a commit returned without a synchronous standby"
    standby.start("standby", timeout=90)
    assert done.wait(60), "the commit did not complete once the standby was back"
    thread.join(5)
    wait_until(lambda: rows(standby) == 2, timeout=30, what="both rows on the standby")
    standby.stop()
    # ... and a restart of the primary without its standby still comes up (passwords applied on
    # the private server write nothing, and would not wait either).
    primary.stop()
    primary.start("primary", timeout=60)
    assert not primary.in_recovery()
