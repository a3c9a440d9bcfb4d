"""``demo`` says what is missing instead of failing half-way."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_names_missing_postgres_binaries() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gocd_ha_operator.cli.main", "demo"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOCDHA_PG_BINDIR": "/nonexistent/bin"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "PostgreSQL server binaries were not found" in result.stderr
    assert "apt-get install postgresql-15" in result.stderr
    assert "Traceback" not in result.stderr
