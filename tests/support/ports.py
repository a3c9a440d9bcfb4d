"""Loopback ports for tests that run in parallel (``pytest -n``), and beside other test runs.

A port the OS picks for ``bind(("127.0.0.1", 0))`` is free *now*; the test hands it to a process
that binds it later (a Postgres instance, a pod of the local kubelet, a Prometheus). Meanwhile
another worker, or another checkout's run on the same machine, may be handed the same number,
and one of the two fails with "address already in use". :func:`free_port` therefore also
*claims* each port it returns in a machine-wide registry (one file per port under
``$TMPDIR/gocdha-test-ports``, written under a lock) and never returns a port that someone else
claimed within the last ``CLAIM_SECONDS``. Claims are not released: they expire, which is
simpler than knowing when a port's last user let go of it, and the kernel has ~28 000 ports to
pick from.

The local kubelet and its API proxies take their ports from the product's
``gocd_ha_operator.local.process.free_port``; ``tests/conftest.py`` points them here for the
whole session, so every test of every tier uses this registry without asking.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

LOOPBACK: Final = "127.0.0.1"
REGISTRY: Final = Path(tempfile.gettempdir()) / "gocdha-test-ports"
#: Longer than any one test runs (pytest-timeout: 10 minutes, the drill 15).
CLAIM_SECONDS: Final = 3600.0
ATTEMPTS: Final = 500


@contextlib.contextmanager
def _locked_registry() -> Iterator[Path]:
    REGISTRY.mkdir(mode=0o755, exist_ok=True)
    with (REGISTRY / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield REGISTRY
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def claim(port: int, *, now: float | None = None) -> bool:
    """Claim ``port`` for this process; ``False`` when someone claimed it recently."""
    moment = time.time() if now is None else now
    with _locked_registry() as registry:
        path = registry / str(port)
        with contextlib.suppress(FileNotFoundError):
            if moment - path.stat().st_mtime < CLAIM_SECONDS:
                return False
        path.write_text(f"{os.getpid()}\n")
        os.utime(path, (moment, moment))
        return True


def free_port() -> int:
    """A loopback TCP port nobody listens on now and no other test took within the hour."""
    for _ in range(ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if claim(port):
            return port
    raise RuntimeError(f"no unclaimed loopback port after {ATTEMPTS} attempts ({REGISTRY})")
