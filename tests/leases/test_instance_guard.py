"""The instance guard on a real Postgres, its API path cut the way a partitioned node loses it.

What a user checks: after the guard's deadline, **no write is acknowledged** — the timestamp of
the last write a client got an answer for is compared with the deadline (printed with ``-s``); a
fenced primary does not come back as a primary without the Lease; a Lease handed to the other
side stops it at once.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gocd_ha_operator.api.constants import ENV_LEASE_GRANT_FILE, LEASE_GRANT_FILE
from gocd_ha_operator.guard.instance import GuardSettings, InstanceGuard
from gocd_ha_operator.kube.apply import client_for
from gocd_ha_operator.kube.lease import get_lease, lease_object, write_lease
from tests.leases.conftest import NAMESPACE, ApiThread, TcpProxy, write_kubeconfig
from tests.support.pg import PgCluster, PgInstance, available_pg_cluster, wait_until

pytestmark = pytest.mark.postgres

LEASE_SECONDS = 6
RENEW_DEADLINE_SECONDS = 4
RETRY_SECONDS = 1
#: Seconds a loaded machine may add to a wait (the suite runs on several workers).
LOAD_TOLERANCE = 10


class Writer:
    """GoCD's side of the story: one connection inserting rows in a loop, reconnecting on error,
    recording the wall-clock time at which each commit was acknowledged."""

    def __init__(self, instance: PgInstance) -> None:
        self.instance = instance
        self.acks: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.instance.gocd_connect(connect_timeout=1)
                conn.execute("INSERT INTO writes (at) VALUES (clock_timestamp())")
                self.acks.append(time.time())
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()

    def start(self) -> None:
        with self.instance.gocd_connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS writes (id bigserial, at timestamptz)")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def last_ack(self) -> float:
        return self.acks[-1]


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with available_pg_cluster() as created:
        yield created


def start_guard(
    cluster: PgCluster,
    instance: PgInstance,
    kubeconfig: Path,
    log: Path,
    *,
    timings: tuple[float, float, float] = (LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS),
) -> Any:
    """The guard command of ``instance``'s side; ``timings``: lease, renew deadline, retry."""
    lease, deadline, retry = timings
    command = [
        sys.executable,
        "-m",
        "gocd_ha_operator.cli.main",
        "instance-guard",
        "--cluster=ci",
        f"--namespace={NAMESPACE}",
        f"--side={instance.side}",
        f"--lease-duration={lease}",
        f"--renew-deadline={deadline}",
        f"--retry-period={retry}",
        f"--socket-dir={instance.socket_dir}",
        f"--port={instance.port}",
        # Over TCP, verified as every client (§17): the Service name, connecting to loopback.
        f"--postgres-host={instance.server_name}",
        "--postgres-hostaddr=127.0.0.1",
        f"--password-file={cluster.password_file('operator')}",
        f"--grant-file={instance.socket_dir / LEASE_GRANT_FILE}",
    ]
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(kubeconfig), "HOME": str(log.parent)}
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def running_guard(
    cluster: PgCluster,
    instance: PgInstance,
    proxy: TcpProxy,
    log: Path,
    *,
    timings: tuple[float, float, float] = (LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS),
    tail: int = 3000,
    then_print: Callable[[], str] | None = None,
) -> Iterator[Path]:
    """``instance``'s guard reaching the API through ``proxy`` (kubeconfig beside ``log``),
    logging to ``log``; stopped on the way out, and the end of its log printed (read with -s),
    then ``then_print()``."""
    kubeconfig = write_kubeconfig(log.parent / "kubeconfig", proxy.url)
    guard = start_guard(cluster, instance, kubeconfig, log, timings=timings)
    try:
        yield log
    finally:
        guard.terminate()
        guard.wait(10)
        print(log.read_text()[-tail:])
        if then_print is not None:
            print(then_print())


def fencing_deadline(log: Path) -> float:
    """The deadline (Unix time) in the guard's ``FENCING`` line: when it stopped its Postgres
    accepting writes. Fails the test, with the log, when the guard did not fence."""
    fencing = re.search(r"FENCING: .* deadline (\S+)Z,", log.read_text())
    assert fencing, log.read_text()
    deadline = datetime.strptime(fencing.group(1), "%Y-%m-%dT%H:%M:%S.%f")
    return deadline.replace(tzinfo=UTC).timestamp()


def wall(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%H:%M:%S.%f")


def side_a_holds_the_lease(kube: Any) -> None:
    """What the reconcile leaves behind for a primary on side a: its Lease and the role
    ConfigMap."""
    now = datetime.now(UTC)
    kube.create(
        lease_object(
            "ci-primary", NAMESPACE, holder="ci-pg-a", duration_seconds=LEASE_SECONDS, now=now
        )
    )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ci-postgres", "namespace": NAMESPACE},
            "data": {"role-a": "primary", "role-b": "standby"},
        }
    )


def side_a_settings(
    socket_dir: Path, grant: Path, *, port: int, password_file: Path
) -> GuardSettings:
    """The settings of side a's guard of the cluster ``ci`` with this module's Lease timings, for
    a guard run in the test process (its local Postgres at ``socket_dir``/``port``)."""
    return GuardSettings(
        cluster="ci",
        namespace=NAMESPACE,
        side="a",
        lease_duration=LEASE_SECONDS,
        renew_deadline=RENEW_DEADLINE_SECONDS,
        retry_period=RETRY_SECONDS,
        socket_dir=socket_dir,
        port=port,
        password_file=password_file,
        grant_file=grant,
    )


def test_guard_renews_fences_on_a_cut_api_and_needs_the_lease_to_start_again(
    api: ApiThread, proxy: TcpProxy, cluster: PgCluster, tmp_path: Path
) -> None:
    kube = api.client()
    side_a_holds_the_lease(kube)
    a = cluster.a
    grant_env = {ENV_LEASE_GRANT_FILE: str(a.socket_dir / LEASE_GRANT_FILE)}
    with running_guard(cluster, a, proxy, tmp_path / "guard.log") as log:
        # 1. The guard grants the start, and renews while its Postgres is the primary.
        a.start("primary", env=grant_env, timeout=120)
        first = get_lease(kube, NAMESPACE, "ci-primary")
        assert first is not None and first.holder == "ci-pg-a"
        renewed = wait_until(
            lambda: (
                (lease := get_lease(kube, NAMESPACE, "ci-primary"))
                and lease.renew_time != first.renew_time
                and lease
            ),
            timeout=3 * RETRY_SECONDS + LOAD_TOLERANCE,
            what="a renewal",
        )
        assert renewed.holder == "ci-pg-a"
        # The holder's timeline, from its own Postgres (a fresh cluster is on timeline 1).
        wait_until(
            lambda: (lease := get_lease(kube, NAMESPACE, "ci-primary")) and lease.timeline == 1,
            timeout=3 * RETRY_SECONDS + LOAD_TOLERANCE,
            what="the timeline annotation",
        )

        # 2. Cut its API path while a client writes in a loop.
        writer = Writer(a)
        writer.start()
        wait_until(lambda: len(writer.acks) > 50, timeout=10, what="writes")
        cut = time.time()
        proxy.cut()
        assert a.process is not None
        a.process.wait(timeout=RENEW_DEADLINE_SECONDS + 10)
        stopped = time.time()
        time.sleep(0.5)
        writer.stop()
        a.process = None
        deadline_ts = fencing_deadline(log)
        print(
            f"\ncut {wall(cut)}  last acknowledged write {wall(writer.last_ack)}  "
            f"guard deadline {wall(deadline_ts)}  (cut + renewDeadline {wall(cut + 4)})  "
            f"postgres gone {wall(stopped)}  writes {len(writer.acks)}, errors {writer.errors}"
        )
        assert writer.last_ack < deadline_ts <= cut + RENEW_DEADLINE_SECONDS
        # What a user reads in the database afterwards agrees: nothing committed after the deadline.
        # 3. Without the Lease (API still cut) it does not start again as a primary.
        a.start("primary", wait=False, env=grant_env)
        time.sleep(LEASE_SECONDS)
        assert a.running, a.log_tail()
        with pytest.raises(psycopg.OperationalError):
            a.gocd_connect(connect_timeout=1).close()
        assert "waiting for the instance guard's lease grant" in a.log_text()
        # ... and the rows: the last one committed before the deadline.
        proxy.restore()
        a.wait_ready(timeout=30)
        with a.gocd_connect() as conn:
            row = conn.execute("SELECT extract(epoch FROM max(at)) FROM writes").fetchone()
        assert row is not None and float(row[0]) < deadline_ts

        # 4. The operator hands the Lease to side b: side a stops within a renewal period.
        current = get_lease(kube, NAMESPACE, "ci-primary")
        assert current is not None and current.holder == "ci-pg-a"
        handed = time.time()
        write_lease(
            kube, current, holder="ci-pg-b", duration_seconds=LEASE_SECONDS, now=datetime.now(UTC)
        )
        assert a.process is not None
        a.process.wait(timeout=2 * RETRY_SECONDS + 5)
        print(f"handed over {wall(handed)}, side a stopped after {time.time() - handed:.2f}s")
        a.process = None
        a.start("primary", wait=False, env=grant_env)
        time.sleep(LEASE_SECONDS + 2)
        assert a.running, a.log_tail()
        with pytest.raises(psycopg.OperationalError):
            a.gocd_connect(connect_timeout=1).close()
        final = get_lease(kube, NAMESPACE, "ci-primary")
        assert final is not None and final.holder == "ci-pg-b"


def test_a_restarted_guard_continues_its_predecessors_deadline_and_no_further(
    tmp_path: Path,
) -> None:
    """The grant file is the only memory a guard leaves: a successor (container restart) takes the
    deadline from it, and without it starts with a deadline that has already passed."""
    grant = tmp_path / LEASE_GRANT_FILE
    settings = side_a_settings(tmp_path, grant, port=5432, password_file=tmp_path / "password")
    kube = client_for("http://127.0.0.1:9")
    assert InstanceGuard(settings, kube).deadline <= time.monotonic()
    # Written to the millisecond, rounded down: "%.3f" could round the grant up past now + 3 s.
    granted = math.floor((time.time() + 3) * 1000) / 1000
    grant.write_text(f"{granted:.3f}\n")
    deadline = InstanceGuard(settings, kube).deadline
    # The grant's wall time on the monotonic clock, however long the lines above took on a loaded
    # machine: continued exactly (to a millisecond of clock reading), and no further.
    assert abs(deadline - (time.monotonic() + granted - time.time())) < 0.01
    assert deadline <= time.monotonic() + 3.0


def test_a_standby_promoted_under_a_handed_over_lease_keeps_serving(
    api: ApiThread, proxy: TcpProxy, cluster: PgCluster, tmp_path: Path
) -> None:
    """The promotion race: the operator hands the Lease over and calls pg_promote at once, before
    the new side's guard had a chance to renew; the new primary must not be fenced for it."""
    kube = api.client()
    side_a_holds_the_lease(kube)
    a, b = cluster.start_pair("a")
    with running_guard(
        cluster,
        b,
        proxy,
        tmp_path / "guard-b.log",
        then_print=lambda: b.log_tail(30),
    ) as log:
        time.sleep(2 * RETRY_SECONDS)  # the guard of a standby whose side does not hold the Lease
        assert b.running and b.in_recovery()
        a.stop()
        hand_over_to_b(kube)
        b.query("SELECT pg_promote(true, 30)")
        promoted = time.monotonic()
        assert not b.in_recovery()
        # Well past a renew deadline and a Lease duration: still serving, the Lease renewed by b.
        while time.monotonic() - promoted < LEASE_SECONDS + RENEW_DEADLINE_SECONDS:
            assert b.running, f"the promoted primary was stopped:\n{log.read_text()[-2000:]}"
            with b.gocd_connect(connect_timeout=2) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS after_promotion (at timestamptz)")
                conn.execute("INSERT INTO after_promotion VALUES (now())")
            time.sleep(0.2)
        lease = get_lease(kube, NAMESPACE, "ci-primary")
        assert lease is not None and lease.holder == "ci-pg-b" and lease.timeline == 2
        assert "FENCING" not in log.read_text()


def hand_over_to_b(kube: Any) -> Any:
    """What a switchover's ``StoppingOldPrimary`` writes: side b holds the Lease."""
    current = get_lease(kube, NAMESPACE, "ci-primary")
    assert current is not None
    return write_lease(
        kube, current, holder="ci-pg-b", duration_seconds=LEASE_SECONDS, now=datetime.now(UTC)
    )


def renewed_by_b(kube: Any, handed: Any, timeout: float) -> Any:
    """The first renewal of side b's guard after the hand-over ``handed``."""
    return wait_until(
        lambda: (
            (lease := get_lease(kube, NAMESPACE, "ci-primary"))
            and lease.holder == "ci-pg-b"
            and lease.resource_version != handed.resource_version
            and lease
        ),
        timeout=timeout,
        what="side b's renewal after the hand-over",
        interval=0.02,
    )


def test_a_standby_handed_the_lease_renews_at_once_not_at_its_next_retry(
    api: ApiThread, proxy: TcpProxy, cluster: PgCluster, tmp_path: Path
) -> None:
    """Issue #16: the guard watches its Lease, so a hand-over wakes it. With a 20 s retry period
    and the hand-over right after an attempt, a guard that only polled would renew some 20 s
    later; the operator waits for that renewal before ``pg_promote``."""
    retry = 20.0
    kube = api.client()
    side_a_holds_the_lease(kube)
    _a, b = cluster.start_pair("a")
    with running_guard(
        cluster,
        b,
        proxy,
        tmp_path / "guard-b.log",
        timings=(3 * retry, 2 * retry, retry),
        tail=2000,
    ) as log:
        # Its first attempt: a standby whose side does not hold the Lease renews nothing.
        wait_until(
            lambda: "not renewing" in log.read_text(), timeout=LOAD_TOLERANCE, what="an attempt"
        )
        time.sleep(1.0)  # the watch is established (it wakes nothing while the holder is a)
        handed = hand_over_to_b(kube)
        started = time.monotonic()
        renewed = renewed_by_b(kube, handed, timeout=2 * retry)
        elapsed = time.monotonic() - started
        print(f"\nhanded over; side b's guard renewed after {elapsed:.3f}s (retry period {retry}s)")
        assert renewed.holder == "ci-pg-b"
        assert elapsed < retry / 2, log.read_text()[-2000:]


def test_a_new_primary_cut_from_the_api_right_after_its_first_renewal_stops_at_its_deadline(
    api: ApiThread, proxy: TcpProxy, cluster: PgCluster, tmp_path: Path
) -> None:
    """The fault of the fast hand-over: side b's guard renews at once (woken by its watch), the
    operator promotes, and b's pod loses the API right then. The new primary must not acknowledge
    a write after the deadline of that renewal (its ``renewTime`` + ``renewDeadlineSeconds``)."""
    kube = api.client()
    side_a_holds_the_lease(kube)
    a, b = cluster.start_pair("a")
    with running_guard(cluster, b, proxy, tmp_path / "guard-b.log") as log:
        wait_until(
            lambda: "not renewing" in log.read_text(), timeout=LOAD_TOLERANCE, what="an attempt"
        )
        a.stop()
        handed = hand_over_to_b(kube)
        renewed_by_b(kube, handed, timeout=2 * RETRY_SECONDS + LOAD_TOLERANCE)
        proxy.cut()
        cut = time.time()
        b.query("SELECT pg_promote(true, 30)")
        writer = Writer(b)
        writer.start()
        assert b.process is not None
        b.process.wait(timeout=RENEW_DEADLINE_SECONDS + LOAD_TOLERANCE)
        stopped = time.time()
        writer.stop()
        b.process = None
        last = get_lease(kube, NAMESPACE, "ci-primary")  # the last renewal that got through
        assert last is not None and last.holder == "ci-pg-b" and last.renew_time is not None
        limit = last.renew_time.timestamp() + RENEW_DEADLINE_SECONDS
        deadline_ts = fencing_deadline(log)
        print(
            f"\ncut {wall(cut)}  last renewal {wall(last.renew_time.timestamp())}  "
            f"last acknowledged write {wall(writer.last_ack)}  guard deadline {wall(deadline_ts)}"
            f"  renewTime + renewDeadline {wall(limit)}  postgres gone {wall(stopped)}  "
            f"writes {len(writer.acks)}"
        )
        assert writer.acks, "the new primary accepted no write before its deadline"
        assert writer.last_ack < deadline_ts <= limit
