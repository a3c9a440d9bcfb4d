"""Switchover benchmark on real Postgres: how much committed data a planned switchover loses (0).

A writer commits numbered rows to the primary as fast as it can and records every number whose
commit was acknowledged. Meanwhile the replication lag is sampled through ``pgclient``. Then the
operator's switchover (docs/architecture.md §9) runs: fence the writer, CHECKPOINT the primary, wait
until the standby replayed the primary's last LSN, stop the primary cleanly, ``pg_promote`` the
standby, and write the first row on the new primary.

Prints exactly one ``switchover:`` line and one ``replication_lag_under_load:`` line.
Run as root (every Postgres process runs as the ``postgres`` user):
``.venv/bin/python benchmarks/switchover.py [--load-seconds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.pg import PgCluster, PgInstance, pg_cluster, unavailable_reason


class Writer(threading.Thread):
    """Commits rows 1, 2, 3… one transaction each; ``acknowledged`` = commits that returned."""

    def __init__(self, instance: PgInstance) -> None:
        super().__init__(daemon=True)
        self.instance = instance
        self.acknowledged: list[int] = []
        self.stop_requested = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            with self.instance.gocd_connect() as conn:
                number = 0
                while not self.stop_requested.is_set():
                    number += 1
                    conn.execute(
                        "INSERT INTO runs (id, payload) VALUES (%s, repeat('x', 100))", (number,)
                    )
                    self.acknowledged.append(number)
        except psycopg.Error as exc:
            self.error = str(exc)


async def sample_lag(primary: PgInstance, standby: PgInstance, seconds: float) -> str:
    """Max lag seen on the primary's walsender row and on the standby during ``seconds``."""
    max_bytes = 0
    max_primary_seconds = 0.0
    max_standby_seconds = 0.0
    samples = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        on_primary = await primary.client().observe()
        on_standby = await standby.client().observe()
        for row in on_primary.replication:
            max_bytes = max(max_bytes, row.replay_lag_bytes or 0)
            max_primary_seconds = max(max_primary_seconds, row.replay_lag_seconds or 0.0)
        max_standby_seconds = max(max_standby_seconds, on_standby.lag_seconds or 0.0)
        samples += 1
        await asyncio.sleep(0.2)
    return (
        f"replication_lag_under_load: max_replay_lag_bytes={max_bytes} "
        f"max_replay_lag_s={max_primary_seconds:.3f} max_standby_lag_s={max_standby_seconds:.3f} "
        f"samples={samples}"
    )


async def switchover(cluster: PgCluster, load_seconds: float, *, quiet: bool = False) -> float:
    """One Postgres-only switchover under load; returns ``writable_s`` (fence → first write on
    the new primary), the floor an operator's switchover is compared with."""
    primary, standby = cluster.start_pair()
    with primary.gocd_connect() as conn:
        conn.execute("CREATE TABLE runs (id bigint PRIMARY KEY, payload text)")

    writer = Writer(primary)
    writer.start()
    lag_line = await sample_lag(primary, standby, load_seconds)

    # 1. Fence: the writer stops; nothing can be acknowledged by the old primary from here on.
    fenced = time.monotonic()
    writer.stop_requested.set()
    writer.join(timeout=30)
    if writer.error:
        raise SystemExit(f"writer failed: {writer.error}")
    # 2. Checkpoint and wait until the standby replayed the primary's last position.
    await primary.client().checkpoint()
    last_lsn = await primary.client().current_lsn()
    await standby.client().wait_for_replay(last_lsn, timeout=60)
    caught_up = time.monotonic()
    primary.stop("fast")
    # 3. Promote.
    promote_started = time.monotonic()
    result = await standby.client().promote(wait_seconds=60)
    promoted = time.monotonic()
    if not result.promoted:
        raise SystemExit("the standby was not promoted")
    # 4. First write on the new primary.
    with standby.gocd_connect() as conn:
        conn.execute("INSERT INTO runs (id, payload) VALUES (0, 'first write after switchover')")
        writable = time.monotonic()
        present = {int(r[0]) for r in conn.execute("SELECT id FROM runs WHERE id > 0").fetchall()}

    lost = [n for n in writer.acknowledged if n not in present]
    if not quiet:
        print(
            f"switchover: rpo_rows={len(lost)} catchup_s={caught_up - fenced:.3f} "
            f"promote_s={promoted - promote_started:.3f} writable_s={writable - fenced:.3f}"
        )
        print(f"{lag_line} committed_rows={len(writer.acknowledged)}")
    if lost:
        raise SystemExit(f"lost committed rows: {lost[:10]}…")
    return writable - fenced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-seconds", type=float, default=5.0, help="write load before fencing")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    with pg_cluster() as cluster:
        asyncio.run(switchover(cluster, args.load_seconds))


if __name__ == "__main__":
    main()
