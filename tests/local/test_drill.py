"""``gocd-ha-operator drill``: a real backup, a disaster, a recovery into a scratch cluster, and
the figures it prints are consistent with what was lost."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from gocd_ha_operator.local.drill import WAL_SEGMENT_BYTES, _segment_end
from tests.support.pg import unavailable_reason

#: The whole drill, generous: on a loaded machine the source cluster alone may take minutes
#: (``REPLICATION_TIMEOUT_SECONDS``), and the backup and the recovery come after it.
DRILL_SECONDS = 900


def run_drill() -> subprocess.CompletedProcess[str]:
    """``gocd-ha-operator drill``; when it overruns, it is interrupted as Ctrl-C would (it stops
    every process it started) and its output so far is the failure message."""
    command = [sys.executable, "-m", "gocd_ha_operator.cli.main", "drill", "--size-mb", "5"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=DRILL_SECONDS)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                stdout, stderr = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            pytest.fail(f"the drill did not finish in {DRILL_SECONDS} s:\n{stdout}{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_segment_end_is_the_lsn_after_the_segment() -> None:
    assert _segment_end("000000010000000000000009") == 10 * WAL_SEGMENT_BYTES
    assert _segment_end("0000000200000001000000FF") == (0x100 + 0xFF + 1) * WAL_SEGMENT_BYTES


@pytest.mark.postgres
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
@pytest.mark.timeout(DRILL_SECONDS + 120)
def test_the_drill_recovers_the_backup_and_reports_rpo_and_rto() -> None:
    result = run_drill()
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("drill: "))
    figures = dict(re.findall(r"(\w+)=([\d.]+)", line))
    # At most the 50 rows committed after the backup can be lost (they sit in the last WAL
    # segment, archived only when it fills or archive_timeout passes); every row before them
    # came back, and a loss is reported in rows, seconds and bytes alike.
    recovered = re.search(r"(\d+) of (\d+) rows recovered", result.stdout)
    assert recovered is not None
    lost = int(recovered[2]) - int(recovered[1])
    assert int(figures["rows_lost"]) == lost
    assert 0 <= lost <= 50
    if lost:
        assert float(figures["rpo_seconds"]) > 0 and int(figures["rpo_wal_bytes"]) > 0
    assert 0 < float(figures["rto_seconds"]) < 300
    assert "removed the scratch cluster" in result.stdout
