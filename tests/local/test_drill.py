"""``gocd-ha-operator drill``: a real backup, a disaster, a recovery into a scratch cluster, and
the figures it prints are consistent with what was lost."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gocd_ha_operator.local.drill import WAL_SEGMENT_BYTES, _segment_end
from tests.support.pg import unavailable_reason


def test_segment_end_is_the_lsn_after_the_segment() -> None:
    assert _segment_end("000000010000000000000009") == 10 * WAL_SEGMENT_BYTES
    assert _segment_end("0000000200000001000000FF") == (0x100 + 0xFF + 1) * WAL_SEGMENT_BYTES


@pytest.mark.postgres
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_the_drill_recovers_the_backup_and_reports_rpo_and_rto() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gocd_ha_operator.cli.main", "drill", "--size-mb", "5"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd="/",
    )
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
