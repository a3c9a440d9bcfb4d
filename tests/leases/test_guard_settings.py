"""The instance guard's reload (docs/architecture.md §16): it replaces the included settings with
the ConfigMap's and sends the postmaster SIGHUP — only when they differ and Postgres runs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gocd_ha_operator.api.constants import CM_POSTGRESQL_CONF, PG_SETTINGS_FILE
from gocd_ha_operator.guard.settings import refresh_settings

#: A stand-in postmaster: counts the SIGHUPs it gets in a file.
HUP_COUNTER = """
import signal, sys, time
path = sys.argv[1]
def hup(*_):
    with open(path, "a") as f:
        f.write("hup\\n")
signal.signal(signal.SIGHUP, hup)
open(path, "w").close()
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def postmaster(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    counter = tmp_path / "hups"
    process = subprocess.Popen([sys.executable, "-c", HUP_COUNTER, str(counter)])
    try:
        for _ in range(200):
            if counter.exists():
                break
            time.sleep(0.02)
        yield process.pid, counter
    finally:
        process.kill()
        process.wait()


def hups(counter: Path) -> int:
    time.sleep(0.3)
    return counter.read_text().count("hup")


def test_a_changed_configuration_is_written_and_reloaded(
    tmp_path: Path, postmaster: tuple[int, Path]
) -> None:
    pid, counter = postmaster
    included = tmp_path / PG_SETTINGS_FILE
    included.write_text("work_mem = '4MB'\n")
    data: dict[str, object] = {CM_POSTGRESQL_CONF: "work_mem = '8MB'\n"}
    assert refresh_settings(tmp_path, data, lambda: pid) is True
    assert included.read_text() == "work_mem = '8MB'\n"
    assert included.stat().st_mode & 0o777 == 0o644
    assert hups(counter) == 1
    # Unchanged: nothing written, no reload.
    assert refresh_settings(tmp_path, data, lambda: pid) is False
    assert hups(counter) == 1
    assert not list(tmp_path.glob(".*.guard")), "no staging file left behind"


def test_nothing_is_written_while_postgres_is_down_or_not_started(tmp_path: Path) -> None:
    data: dict[str, object] = {CM_POSTGRESQL_CONF: "work_mem = '8MB'\n"}
    # Not written by the entrypoint yet: it copies the ConfigMap itself when it starts.
    assert refresh_settings(tmp_path, data, lambda: 1) is False
    assert not (tmp_path / PG_SETTINGS_FILE).exists()
    included = tmp_path / PG_SETTINGS_FILE
    included.write_text("work_mem = '4MB'\n")
    assert refresh_settings(tmp_path, data, lambda: None) is False
    assert included.read_text() == "work_mem = '4MB'\n"
    # A ConfigMap without the key (or not a string) changes nothing either.
    assert refresh_settings(tmp_path, {}, lambda: None) is False
    assert refresh_settings(tmp_path, {CM_POSTGRESQL_CONF: 7}, lambda: None) is False
