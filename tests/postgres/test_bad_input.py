"""Bad input makes the entrypoint exit non-zero, name the problem, and leave data untouched.

pgclient's failures are typed, bounded and free of passwords.
"""

import time

import pytest

from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.postgres.client import (
    PostgresAuthFailed,
    PostgresClient,
    PostgresQueryFailed,
    ReplayTimeout,
)
from tests.support.pg import PgCluster, tree_digest
from tests.support.ports import free_port

pytestmark = pytest.mark.postgres


def test_bad_input_on_an_existing_primary_dir(cluster: PgCluster) -> None:
    a = cluster.a
    a.start("primary")
    a.stop()
    before = tree_digest(a.pgdata)
    missing_file = str(cluster.root / "nowhere" / "password")
    cases: list[tuple[dict[str, str | None], str]] = [
        ({"GOCDHA_ARCHIVE_DIR": None}, "GOCDHA_ARCHIVE_DIR is not set"),
        ({"PGDATA": None}, "PGDATA is not set"),
        ({"GOCDHA_SIDE": "c"}, "GOCDHA_SIDE must be 'a' or 'b'"),
        ({"GOCDHA_ROLE": "leader"}, "GOCDHA_ROLE must be 'primary' or 'standby'"),
        ({"GOCDHA_SUPERUSER_PASSWORD_FILE": missing_file}, "GOCDHA_SUPERUSER_PASSWORD_FILE"),
        ({"GOCDHA_ARCHIVE_DIR": str(cluster.root / "no-volume" / "wal")}, "does not exist"),
        ({"GOCDHA_CONFIG_DIR": str(cluster.root)}, "cannot read postgresql.conf"),
    ]
    for env, message in cases:
        run = a.run_entrypoint("primary", env=env)
        assert run.returncode != 0, env
        assert message in run.output, (env, run.output)
        assert tree_digest(a.pgdata) == before, env

    # A read-only archive (as the postgres user sees it).
    cluster.archive_dir.chmod(0o555)
    try:
        run = a.run_entrypoint("primary")
    finally:
        cluster.archive_dir.chmod(0o755)
    assert run.returncode != 0
    assert "is not writable" in run.output and str(cluster.archive_dir) in run.output
    assert tree_digest(a.pgdata) == before

    # An empty password file.
    empty = cluster.write_file(cluster.root / "empty" / "password", "")
    run = a.run_entrypoint("standby", env={"GOCDHA_REPLICATION_PASSWORD_FILE": str(empty)})
    assert run.returncode != 0 and "is empty" in run.output
    assert tree_digest(a.pgdata) == before

    # And the untouched data dir still starts.
    a.start("primary")
    assert not a.in_recovery()


def test_bad_input_for_a_new_standby(cluster: PgCluster) -> None:
    a, b = cluster.a, cluster.b
    a.start("primary")
    wrong = cluster.write_file(cluster.root / "wrong" / "password", "not-the-password")

    run = b.run_entrypoint("standby", env={"GOCDHA_REPLICATION_PASSWORD_FILE": str(wrong)})
    assert run.returncode != 0
    assert "refused a replication connection as gocdha_replication" in run.output
    assert "password authentication failed" in run.output

    run = b.run_entrypoint("standby", env={"GOCDHA_OPERATOR_PASSWORD_FILE": str(wrong)})
    assert run.returncode != 0
    assert "rejected the operator role gocdha_operator" in run.output

    started = time.monotonic()
    unreachable = {"GOCDHA_PEER_PORT": str(free_port()), "GOCDHA_WAIT_PRIMARY_SECONDS": "3"}
    run = b.run_entrypoint("standby", env=unreachable)
    assert run.returncode != 0
    assert time.monotonic() - started < 20
    assert "waiting for the primary" in run.output
    assert "is not accepting connections after 3s" in run.output

    run = b.run_entrypoint("standby", env={"GOCDHA_PEER_HOST": None})
    assert run.returncode != 0 and "GOCDHA_PEER_HOST is not set" in run.output

    # Nothing was left behind: no data dir, no half-made base backup.
    assert not b.pgdata.exists() or not any(b.pgdata.iterdir())
    assert not list(b.pgdata.parent.glob("pgdata.gocdha-*"))
    for secret in (cluster.passwords.replication, cluster.passwords.operator, "not-the-password"):
        assert secret not in b.log_text()


def test_new_primary_refuses_an_archive_with_history(cluster: PgCluster) -> None:
    (cluster.archive_dir / "000000010000000000000001").write_bytes(b"someone else's WAL")
    run = cluster.a.run_entrypoint("primary")
    assert run.returncode != 0
    assert "already holds WAL" in run.output
    assert not cluster.a.pgdata.exists() or not any(cluster.a.pgdata.iterdir())


def test_a_foreign_non_empty_pgdata_is_left_alone(cluster: PgCluster) -> None:
    cluster.a.pgdata.mkdir()
    cluster.give_to_postgres(cluster.a.pgdata)
    (cluster.a.pgdata / "important.txt").write_text("not a database")
    run = cluster.a.run_entrypoint("primary")
    assert run.returncode != 0 and "no PG_VERSION" in run.output
    assert (cluster.a.pgdata / "important.txt").read_text() == "not a database"


async def test_pgclient_failures_are_typed_bounded_and_secret_free(cluster: PgCluster) -> None:
    a, b = cluster.start_pair()

    # Nobody listening: observe() reports it, quickly.
    secret = "s3cret-never-shown"
    nowhere = PostgresClient(
        Endpoint("127.0.0.1", free_port()), password=secret, tls=a.client().tls
    )
    started = time.monotonic()
    observation = await nowhere.observe()
    assert not observation.reachable and observation.error
    assert secret not in observation.error
    assert time.monotonic() - started < 5

    # Wrong password: a typed error without the password.
    with pytest.raises(PostgresAuthFailed) as auth:
        await PostgresClient(a.endpoint, password=secret, tls=a.client().tls).observe()
    assert secret not in str(auth.value) and "gocdha_operator" in str(auth.value)

    # Replay that cannot happen in time.
    b.query("SELECT pg_wal_replay_pause()")
    with a.connect("gocd") as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    target = await a.client().current_lsn()
    started = time.monotonic()
    with pytest.raises(ReplayTimeout) as timeout:
        await b.client().wait_for_replay(target, timeout=1.0)
    assert 1.0 <= time.monotonic() - started < 5
    assert timeout.value.target_lsn == target
    assert timeout.value.replayed_lsn is not None and timeout.value.replayed_lsn < target
    b.query("SELECT pg_wal_replay_resume()")
    await b.client().wait_for_replay(target, timeout=30)

    # A statement that outlives the statement timeout is cut off, not waited for.
    slow = a.client(statement_timeout=0.5)
    with pytest.raises(PostgresQueryFailed) as cut:
        await slow._scalar("SELECT pg_sleep(10)", (), "sleep")
    assert "statement timeout" in str(cut.value)
