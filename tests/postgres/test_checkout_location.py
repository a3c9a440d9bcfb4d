"""The Postgres helper works whatever directory the suite runs from.

A checkout under a private home (0700, owned by root) is one the unprivileged ``postgres`` user
cannot enter. Postgres binaries change back into their working directory when they locate
themselves, so a process that inherits such a directory hits ``could not change directory to
...: Permission denied``: every instance must be started in a directory its user owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg import OS_USER, pg_cluster, unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture
def private_cwd() -> Iterator[Path]:
    """The process's working directory is a fresh 0700 directory of the current user (root in
    CI); the previous one is restored afterwards."""
    private = Path(tempfile.mkdtemp(prefix="gocdha-private-"))
    private.chmod(0o700)
    previous = os.getcwd()
    os.chdir(private)
    try:
        yield private
    finally:
        os.chdir(previous)
        shutil.rmtree(private, ignore_errors=True)


def test_pg_cluster_starts_and_answers_from_a_directory_postgres_cannot_enter(
    private_cwd: Path,
) -> None:
    if os.geteuid() == 0:
        entered = subprocess.run(
            ["runuser", "-u", OS_USER, "--", "test", "-x", str(private_cwd)], check=False
        )
        assert entered.returncode != 0, (
            f"{OS_USER} can enter {private_cwd}: the test proves nothing"
        )
    assert Path.cwd() == private_cwd.resolve()
    with pg_cluster() as cluster:
        cluster.a.start("primary")
        assert cluster.a.query("SELECT 40 + 2") == 42
        assert not cluster.a.in_recovery()
        # PostgreSQL 15 only logs the failed chdir and carries on; other versions and tools
        # (pg_basebackup, pg_rewind in a rejoin) stop there. Either way it must not happen.
        assert "could not change directory" not in cluster.a.log_text()
