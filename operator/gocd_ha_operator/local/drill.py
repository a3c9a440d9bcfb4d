"""``gocd-ha-operator drill``: a disaster-recovery drill on this machine, measured.

Like ``demo``, it runs the real operator against an in-process Kubernetes API with real local
Postgres (docs/local-kubelet.md). It builds a source cluster with backups, fills its database,
takes a backup through the ``gocdha.io/backup`` annotation (a real backup Job), keeps committing,
then loses both instances at once (SIGKILL; the shared and backup volumes survive), and creates
a scratch ``GoCDHACluster`` whose first
primary recovers the latest backup plus the source's WAL archive (``spec.bootstrap.recovery``),
waits until the scratch primary accepts a write, and prints

* RPO: how much committed work the recovery does not have, in seconds (the source's last commit
  time against the newest commit found after recovery), in rows, and in bytes of WAL (the
  source's WAL position at the disaster against the end of the last segment it had archived);
* RTO: seconds from creating the scratch resource to its first accepted write.

The scratch resource and everything else are removed at the end. Without a backup schedule the
archive's last, partly filled segment is what recovery cannot see: RPO is bounded by the
instance's ``archive_timeout`` (60 s), which is what the drill shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from datetime import datetime
from typing import Any, Final

from gocd_ha_operator.api.constants import ANNOTATION_BACKUP
from gocd_ha_operator.local.demo import Timeline, run_on_this_machine
from gocd_ha_operator.postgres.client import parse_lsn

SOURCE: Final = "ci"
SCRATCH: Final = "ci-drill"
NAMESPACE: Final = "drill"
#: Rows of this many bytes fill the database (one INSERT ... generate_series per chunk).
ROW_BYTES: Final = 1000
CHUNK_ROWS: Final = 20_000
#: The default WAL segment size (initdb --wal-segsize), which the instances keep.
WAL_SEGMENT_BYTES: Final = 16 * 1024 * 1024
#: From ``kubectl apply`` to the standby streaming. Unloaded it takes 30-50 s; on a machine shared
#: by several test runs (2 cores, load 10) the operator's first reconcile alone took 150 s and the
#: whole start 197 s, so 180 s failed a healthy cluster.
REPLICATION_TIMEOUT_SECONDS: Final = 300


def resource(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gocdha.io/v1alpha1",
        "kind": "GoCDHACluster",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "gocd": {"image": "gocd/gocd-server:v26.1.0"},
            "postgres": {"image": "postgres:15"},
            "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
            **extra,
        },
    }


async def drill(timeline: Timeline, size_mb: int) -> int:
    import psycopg  # noqa: PLC0415 - only the drill needs a database client of its own

    from gocd_ha_operator.local.stack import local_stack  # noqa: PLC0415
    from gocd_ha_operator.local.workload import streaming_from  # noqa: PLC0415

    async with local_stack([SOURCE, SCRATCH], namespace=NAMESPACE, observe_interval=0.5) as stack:
        backup_spec = {"volume": {"size": "10Gi"}, "retention": {"count": 2}}
        await stack.apply(resource(SOURCE, backup=backup_spec))
        try:
            await stack.wait_for(
                lambda s: streaming_from("a", s),
                SOURCE,
                timeout=REPLICATION_TIMEOUT_SECONDS,
                what="replication",
            )
        except TimeoutError as exc:
            # What a user would look at next: the status (in the message) and both instances'
            # logs (entrypoint, guard, Postgres; no secret is ever written there).
            timeline.say(f"the source cluster did not replicate: {exc}")
            for side in ("a", "b"):
                timeline.say(f"last lines of pod {SOURCE}-pg-{side}-0:\n{_log_tail(stack, side)}")
            return 1
        timeline.say(f"source cluster {SOURCE}: side a primary, side b streaming")
        info = await stack.gocd_conninfo(SOURCE, f"{SOURCE}-pg-primary")
        assert info is not None
        rows = size_mb * 1024 * 1024 // ROW_BYTES
        async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE builds (id bigserial PRIMARY KEY, at timestamptz NOT NULL "
                "DEFAULT clock_timestamp(), log text)"
            )
            for start in range(0, rows, CHUNK_ROWS):
                count = min(CHUNK_ROWS, rows - start)
                await conn.execute(
                    "INSERT INTO builds (log) SELECT repeat('x', %s) FROM generate_series(1, %s)",
                    (ROW_BYTES - 60, count),
                )
            cursor = await conn.execute("SELECT pg_database_size(current_database())")
            size = (await cursor.fetchone() or [0])[0]
        timeline.say(f"wrote {rows} build rows: database size {size / 1024 / 1024:.0f} MiB")

        await stack.annotate(SOURCE, ANNOTATION_BACKUP, "drill")
        record = await stack.wait_for(
            lambda s: (
                (s.get("backup") or {}).get("lastSuccessful")
                or ((s.get("backup") or {}).get("lastFailed") and {"failed": True})
            ),
            SOURCE,
            timeout=1800,
            what="the backup",
        )
        if record.get("failed"):
            failed = (await stack.status(SOURCE))["backup"]["lastFailed"]
            timeline.say(f"the backup failed: {failed.get('message')}")
            return 1
        timeline.say(
            f"backup {record['name']}: {record['sizeBytes'] / 1024 / 1024:.0f} MiB in "
            f"{record['durationSeconds']} s (WAL {record['firstWal']}..{record['lastWal']})"
        )
        async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
            for _ in range(50):  # builds keep finishing after the backup
                await conn.execute("INSERT INTO builds (log) VALUES ('after the backup')")
                await asyncio.sleep(0.02)
            cursor = await conn.execute(
                "SELECT max(at), count(*), pg_current_wal_lsn()::text FROM builds"
            )
            row = await cursor.fetchone()
            assert row is not None and row[0] is not None
            last_commit, source_rows, source_lsn = row
            cursor = await conn.execute("SELECT last_archived_wal FROM pg_stat_archiver")
            archived = (await cursor.fetchone() or [None])[0]
        # The disaster: both instances of the source are lost at once (SIGKILL, no restart).
        # Its shared volume, with the WAL archive, and its backup volume survive.
        for side in ("a", "b"):
            await stack.kubelet.kill(f"{SOURCE}-pg-{side}")
        timeline.say(
            f"disaster: both source instances killed ({source_rows} rows, last commit "
            f"{last_commit:%H:%M:%S.%f}, WAL at {source_lsn}, last archived {archived})"
        )
        # WAL that neither the archive nor the backup holds: from the later of the end of the
        # last archived segment and the end of the backup's own WAL on.
        manifest = json.loads(
            (
                stack.kubelet.claim_dir(f"{SOURCE}-backup") / record["name"] / "manifest.json"
            ).read_text()
        )
        archived_end = _segment_end(str(archived)) if archived else 0
        recoverable_end = max(archived_end, parse_lsn(manifest["endLsn"]))
        rpo_bytes = max(0, parse_lsn(source_lsn) - recoverable_end)

        created = time.monotonic()
        await stack.apply(
            resource(
                SCRATCH,
                bootstrap={
                    "recovery": {
                        "backupClaim": f"{SOURCE}-backup",
                        "archiveClaim": f"{SOURCE}-shared",
                    }
                },
            )
        )
        timeline.say(f"kubectl apply: scratch cluster {SCRATCH} recovering the latest backup")
        writable_after, recovered_rows, recovered_last = await _first_write(stack, created)
        if writable_after is None:
            timeline.say("the scratch primary did not accept a write within 30 minutes")
            return 1
        rpo_seconds = max(0.0, (last_commit - recovered_last).total_seconds())
        timeline.say(
            f"scratch primary writable {writable_after:.2f}s after kubectl apply; "
            f"{recovered_rows} of {source_rows} rows recovered"
        )
        print(
            f"drill: database_mib={size / 1024 / 1024:.0f} rpo_seconds={rpo_seconds:.2f} "
            f"rpo_wal_bytes={rpo_bytes} rto_seconds={writable_after:.2f} "
            f"rows_lost={source_rows - recovered_rows}",
            flush=True,
        )
        await stack.request(
            "DELETE", f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters/{SCRATCH}"
        )
        timeline.say(f"removed the scratch cluster {SCRATCH}")
    timeline.say("stopped every process and removed the local clusters")
    return 0


def _log_tail(stack: Any, side: str, lines: int = 60) -> str:
    return "\n".join(stack.kubelet.pod_log(f"{SOURCE}-pg-{side}").splitlines()[-lines:])


def _segment_end(wal_file: str) -> int:
    """The LSN just past WAL segment ``wal_file`` (16 MiB segments, timeline ignored)."""
    log_id, segment = int(wal_file[8:16], 16), int(wal_file[16:24], 16)
    return (log_id * 0x100 + segment + 1) * WAL_SEGMENT_BYTES


async def _first_write(stack: Any, created: float) -> tuple[float | None, int, datetime]:
    """Poll the scratch primary until it takes a write; then read what recovery brought back."""
    import psycopg  # noqa: PLC0415

    while time.monotonic() - created < 1800:
        info = await stack.gocd_conninfo(SCRATCH, f"{SCRATCH}-pg-primary")
        with contextlib.suppress(psycopg.Error):
            if info is not None:
                async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
                    cursor = await conn.execute("SELECT max(at), count(*) FROM builds")
                    row = await cursor.fetchone()
                    assert row is not None and row[0] is not None, "recovery brought back no rows"
                    last, count = row
                    await conn.execute("INSERT INTO builds (log) VALUES ('first after recovery')")
                    return time.monotonic() - created, int(count), last
        await asyncio.sleep(0.1)
    return None, 0, datetime.now()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size-mb",
        type=int,
        default=100,
        choices=range(1, 10_241),
        metavar="MB",
        help="how much data the source database holds before the backup (default 100)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the operator's logs")


def run(args: argparse.Namespace) -> int:
    return run_on_this_machine(
        "drill", args.verbose, lambda timeline: drill(timeline, args.size_mb)
    )
