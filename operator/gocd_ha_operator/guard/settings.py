"""The instance guard's second job: bring the ConfigMap's ``postgresql.conf`` to its Postgres.

Why the guard: a ConfigMap volume reaches a running pod only after a kubelet sync (a minute or
more on a real cluster), and a change the pod template does not show reaches no pod at all. The
guard already reads ``<name>-postgres`` through the API every retry period (its role and Lease
timings are there) and shares the socket directory and the process namespace with Postgres. So
when the ConfigMap's ``postgresql.conf`` differs from the copy the instance includes
(``<socket dir>/gocdha-settings.conf``, written by the entrypoint at every start), it replaces the
copy atomically and sends the postmaster ``SIGHUP``: reloadable settings apply within one retry
period, restart-only ones show as ``pg_settings.pending_restart`` until the controlled rolling
restart (docs/architecture.md §16). A Postgres that is not running is left alone: its entrypoint
copies the ConfigMap when it starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from gocd_ha_operator.api.constants import CM_POSTGRESQL_CONF, PG_SETTINGS_FILE
from gocd_ha_operator.postgres.config import loaded_revision

logger = logging.getLogger("gocd_ha_operator.guard")


def refresh_settings(
    socket_dir: Path, data: dict[str, object], postmaster_pid: Callable[[], int | None]
) -> bool:
    """Replace the included settings with the ConfigMap's and reload; whether it did."""
    wanted = data.get(CM_POSTGRESQL_CONF)
    if not isinstance(wanted, str) or not wanted:
        return False
    path = socket_dir / PG_SETTINGS_FILE
    try:
        current = path.read_text()
    except OSError:
        return False  # not written yet: the entrypoint copies the ConfigMap at start
    if current == wanted:
        return False
    pid = postmaster_pid()
    if pid is None:
        return False
    staging = path.with_name(f".{PG_SETTINGS_FILE}.guard")
    try:
        staging.write_text(wanted)
        staging.chmod(0o644)  # no secret in it; Postgres may run as another user locally
        os.replace(staging, path)
    except OSError as exc:
        logger.warning("cannot write %s: %s", path, exc)
        with contextlib.suppress(OSError):
            staging.unlink()
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    logger.info(
        "configuration revision %s written to %s; Postgres (pid %d) reloaded",
        loaded_revision(wanted),
        path,
        pid,
    )
    return True
