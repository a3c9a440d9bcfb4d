"""archive-wal.sh and restore-wal.sh on their own: the archive rules, without a server."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.pg import SCRIPTS_DIR

SEGMENT = "000000010000000000000007"


def run(script: str, *args: str, archive: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "GOCDHA_ARCHIVE_DIR": str(archive)}
    return subprocess.run(
        ["bash", str(SCRIPTS_DIR / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    archive = tmp_path / "archive"
    wal = tmp_path / "pg_wal"
    archive.mkdir()
    wal.mkdir()
    return archive, wal


def test_archives_new_file_without_leftovers(dirs: tuple[Path, Path]) -> None:
    archive, wal = dirs
    (wal / SEGMENT).write_bytes(b"segment-a" * 1000)
    result = run("archive-wal.sh", str(wal / SEGMENT), SEGMENT, archive=archive)
    assert result.returncode == 0, result.stderr
    assert (archive / SEGMENT).read_bytes() == b"segment-a" * 1000
    assert sorted(p.name for p in archive.iterdir()) == [SEGMENT]


def test_history_files_are_archived(dirs: tuple[Path, Path]) -> None:
    archive, wal = dirs
    (wal / "00000002.history").write_text("1\t0/3000000\tno recovery target specified\n")
    result = run(
        "archive-wal.sh", str(wal / "00000002.history"), "00000002.history", archive=archive
    )
    assert result.returncode == 0, result.stderr
    assert (archive / "00000002.history").exists()


def test_identical_existing_file_is_success(dirs: tuple[Path, Path]) -> None:
    archive, wal = dirs
    (wal / SEGMENT).write_bytes(b"same")
    (archive / SEGMENT).write_bytes(b"same")
    result = run("archive-wal.sh", str(wal / SEGMENT), SEGMENT, archive=archive)
    assert result.returncode == 0, result.stderr


def test_different_existing_file_is_split_brain_and_untouched(dirs: tuple[Path, Path]) -> None:
    archive, wal = dirs
    (archive / SEGMENT).write_bytes(b"first writer")
    (wal / SEGMENT).write_bytes(b"second writer")
    result = run("archive-wal.sh", str(wal / SEGMENT), SEGMENT, archive=archive)
    assert result.returncode != 0
    assert "split brain" in result.stderr
    assert SEGMENT in result.stderr
    assert (archive / SEGMENT).read_bytes() == b"first writer"
    assert sorted(p.name for p in archive.iterdir()) == [SEGMENT]


def test_read_only_archive_fails_naming_it() -> None:
    # Root ignores permission bits: run the script as the unprivileged user, in a directory it
    # can reach (pytest's tmp_path is private to root).
    base = Path(tempfile.mkdtemp(prefix="gocdha-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        archive, wal = base / "archive", base / "pg_wal"
        archive.mkdir(mode=0o555)
        wal.mkdir(mode=0o755)
        (wal / SEGMENT).write_bytes(b"x")
        (wal / SEGMENT).chmod(0o644)
        env = {"PATH": os.environ["PATH"], "GOCDHA_ARCHIVE_DIR": str(archive)}
        # A copy of the script beside the data: the checkout may be one the user cannot read.
        script = base / "archive-wal.sh"
        shutil.copyfile(SCRIPTS_DIR / "archive-wal.sh", script)
        script.chmod(0o644)
        command = ["bash", str(script), str(wal / SEGMENT), SEGMENT]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, env=env, cwd=base, capture_output=True, text=True, check=False
        )
        assert result.returncode != 0
        assert "cannot write to the archive directory" in result.stderr
        assert str(archive) in result.stderr
        assert list(archive.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_missing_archive_variable_fails(dirs: tuple[Path, Path]) -> None:
    _archive, wal = dirs
    (wal / SEGMENT).write_bytes(b"x")
    result = subprocess.run(
        ["bash", str(SCRIPTS_DIR / "archive-wal.sh"), str(wal / SEGMENT), SEGMENT],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "GOCDHA_ARCHIVE_DIR is not set" in result.stderr


def test_restore_copies_and_missing_returns_nonzero_quietly(dirs: tuple[Path, Path]) -> None:
    archive, wal = dirs
    (archive / SEGMENT).write_bytes(b"archived")
    ok = run("restore-wal.sh", SEGMENT, str(wal / "RECOVERYXLOG"), archive=archive)
    assert ok.returncode == 0, ok.stderr
    assert (wal / "RECOVERYXLOG").read_bytes() == b"archived"
    missing = run(
        "restore-wal.sh", "00000003.history", str(wal / "RECOVERYHISTORY"), archive=archive
    )
    assert missing.returncode == 1
    assert missing.stderr == ""
    assert not (wal / "RECOVERYHISTORY").exists()


def test_scripts_refuse_path_like_names(dirs: tuple[Path, Path]) -> None:
    archive, wal = dirs
    (wal / SEGMENT).write_bytes(b"x")
    result = run("archive-wal.sh", str(wal / SEGMENT), "../escape", archive=archive)
    assert result.returncode != 0
    assert not (archive.parent / "escape").exists()
