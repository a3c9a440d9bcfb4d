"""Promotion through pgclient, and the old primary rejoining: pg_rewind, or re-seeding."""

import subprocess
import time

import psycopg
import pytest

from gocd_ha_operator.api.constants import Side
from gocd_ha_operator.postgres.client import PrimaryNotStopped
from tests.support.pg import OS_USER, PgCluster, PgInstance, streaming, wait_until

pytestmark = pytest.mark.postgres


def rows(instance: PgInstance) -> list[str]:
    with instance.connect("gocd") as conn:
        return [r[0] for r in conn.execute("SELECT name FROM runs ORDER BY id").fetchall()]


def system_identifier(instance: PgInstance, pgdata: str | None = None) -> str:
    out = subprocess.run(
        [f"{instance.cluster.bindir}/pg_controldata", "-D", pgdata or str(instance.pgdata)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("Database system identifier"))
    return line.split(":", 1)[1].strip()


def cut_streaming(primary: PgInstance, standby_side: Side) -> None:
    """The standby stops receiving WAL (replication role locked out, walsender ended)."""
    primary.query("ALTER ROLE gocdha_replication NOLOGIN")
    primary.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = %s",
        f"gocdha_{standby_side}",
    )
    wait_until(lambda: not streaming(primary, standby_side), timeout=10, what="streaming cut")


async def test_promote_then_old_primary_rejoins_with_rewind(cluster: PgCluster) -> None:
    a, b = cluster.start_pair()
    with a.connect("gocd") as conn:
        conn.execute("CREATE TABLE runs (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO runs (name) VALUES ('before-1'), ('before-2')")
    lsn = await a.client().current_lsn()
    await b.client().wait_for_replay(lsn, timeout=30)

    # The old primary is isolated from its standby and goes on writing: it diverges.
    cut_streaming(a, "b")
    result = await b.client().promote(wait_seconds=30)
    assert result.promoted and result.timeline == 2 and result.checkpointed
    assert not b.in_recovery()
    again = await b.client().promote(wait_seconds=30)
    assert not again.promoted and again.timeline == 2
    with a.connect("gocd") as conn:
        conn.execute("INSERT INTO runs (name) VALUES ('diverged-on-old-primary')")
        conn.execute("SELECT pg_switch_wal()")
    with b.connect("gocd") as conn:
        conn.execute("INSERT INTO runs (name) VALUES ('after-on-new-primary')")

    # The lock-out was replicated to b before the cut; lift it on the new primary.
    b.query("ALTER ROLE gocdha_replication LOGIN")
    assert await b.client().create_slot_if_missing("gocdha_a") is True
    assert await b.client().create_slot_if_missing("gocdha_a") is False

    # The operator flips the roles; the old primary restarts as a standby of the new one.
    assert not await a.client().refuses_connections()
    a.stop()
    assert await a.client().refuses_connections(), "a stopped instance's port is closed"
    a.start("standby")
    wait_until(lambda: streaming(b, "a"), timeout=60, what="old primary streaming from new")
    log = a.log_text()
    assert "fenced with standby.signal" in log
    assert "servers diverged at WAL location" in log  # a real rewind, not a no-op
    assert "pg_rewind done" in log
    assert "moving the old data dir aside" not in log
    assert a.in_recovery()
    assert not (a.pgdata.parent / "pgdata.gocdha-fenced").exists()
    with b.connect("gocd") as conn:
        conn.execute("INSERT INTO runs (name) VALUES ('streamed-to-rejoined')")
    expected = ["before-1", "before-2", "after-on-new-primary", "streamed-to-rejoined"]
    wait_until(lambda: rows(a) == expected, timeout=30, what="rejoined side has the new history")
    on_b = await b.client().observe()
    assert [r.application_name for r in on_b.replication] == ["gocdha_a"]
    on_a = await a.client().observe()
    assert on_a.in_recovery and on_a.timeline == 2


async def test_rejoin_falls_back_to_reseed_and_keeps_old_data(cluster: PgCluster) -> None:
    a, b = cluster.start_pair()
    with a.connect("gocd") as conn:
        conn.execute("CREATE TABLE runs (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO runs (name) VALUES ('kept')")
    await b.client().wait_for_replay(await a.client().current_lsn(), timeout=30)
    # Without its checkpoint (the operator takes it once the Services moved): still confirmed.
    result = await b.client().promote(wait_seconds=30, checkpoint=False)
    assert result.promoted and result.timeline == 2 and not result.checkpointed
    a.stop()

    # Side a's data dir is replaced by an unrelated cluster (a different system identifier):
    # pg_rewind cannot work on it.
    old = str(a.pgdata) + ".replaced-by-test"
    a.pgdata.rename(old)
    subprocess.run(
        [
            *("runuser", "-u", OS_USER, "--", f"{cluster.bindir}/initdb", "-D", str(a.pgdata)),
            *("--auth=scram-sha-256", f"--pwfile={cluster.password_file('superuser')}"),
        ],
        cwd=a.home,
        capture_output=True,
        check=True,
    )
    unrelated = system_identifier(a)
    assert unrelated != system_identifier(b)

    a.start("standby")
    wait_until(lambda: streaming(b, "a"), timeout=60, what="re-seeded side streaming")
    log = a.log_text()
    assert "pg_rewind failed" in log
    aside = sorted(a.pgdata.parent.glob("pgdata.gocdha-old-*"))
    assert len(aside) == 1
    assert str(aside[0]) in log
    assert system_identifier(a, str(aside[0])) == unrelated  # kept, untouched
    assert system_identifier(a) == system_identifier(b)
    assert rows(a) == ["kept"]
    assert a.in_recovery()


async def test_switchover_loses_nothing(cluster: PgCluster) -> None:
    """The operator's switchover order: checkpoint, wait for replay, stop, promote."""
    a, b = cluster.start_pair()
    with a.connect("gocd") as conn:
        conn.execute("CREATE TABLE runs (id serial PRIMARY KEY, name text)")
        for i in range(200):
            conn.execute("INSERT INTO runs (name) VALUES (%s)", (f"run-{i}",))
    await a.client().checkpoint()
    lsn = await a.client().current_lsn()
    await b.client().wait_for_replay(lsn, timeout=30)
    a.stop()
    started = time.monotonic()
    result = await b.client().promote(wait_seconds=30)
    assert result.promoted
    assert time.monotonic() - started < 30
    assert rows(b) == [f"run-{i}" for i in range(200)]


async def test_switchover_stop_wait_returns_once_the_stream_is_lost_and_replayed(
    cluster: PgCluster,
) -> None:
    """``replay_when_primary_stopped`` (a switchover's StoppingOldPrimary, issue #16): while the
    old primary runs it does not return; once it stopped cleanly, the standby's final received
    position is replayed, the last commit included."""
    a, b = cluster.start_pair()
    with a.connect("gocd") as conn:
        conn.execute("CREATE TABLE runs (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO runs (name) VALUES ('last-before-stop')")
    with a.gocd_connect() as session:
        session.execute("SELECT 1")
        ended, lsn = await a.client().end_client_sessions_then_lsn()
        assert ended == 1, "GoCD's session is ended (never the standby's stream)"
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
    assert 0 < lsn <= await a.client().current_lsn()

    # The primary still runs: the stop wait gives up after its bound.
    with pytest.raises(PrimaryNotStopped):
        await b.client().replay_when_primary_stopped(
            a.client().refuses_connections, poll=0.02, stop_timeout=0.5, replay_timeout=5
        )
    # A refusal alone is not enough: the standby still streams from a running primary.
    with pytest.raises(PrimaryNotStopped):
        await b.client().replay_when_primary_stopped(
            _always_refused, poll=0.02, stop_timeout=0.5, replay_timeout=5
        )

    stopped_at = time.monotonic()
    a.stop()
    final = await b.client().replay_when_primary_stopped(
        a.client().refuses_connections, poll=0.02, stop_timeout=30, replay_timeout=30
    )
    assert time.monotonic() - stopped_at < 30
    assert final.in_recovery
    assert final.received_lsn is not None and final.received_lsn >= lsn
    assert final.replayed_lsn is not None and final.replayed_lsn >= final.received_lsn
    assert rows(b) == ["last-before-stop"]

    # On an instance that is not in recovery it answers at once, saying so.
    await b.client().promote(wait_seconds=30)
    not_standby = await b.client().replay_when_primary_stopped(
        _always_refused, poll=0.02, stop_timeout=5, replay_timeout=5
    )
    assert not not_standby.in_recovery


async def _always_refused() -> bool:
    return True
