"""Process groups for local pods: start a container command as an unprivileged user, stop it the
way a kubelet would, and make sure nothing of it is left behind.

Why process groups: the command of a Postgres pod is ``runuser`` -> ``bash entrypoint.sh`` ->
``postgres`` and its children (and, before ``exec``, ``pg_basebackup``, ``psql``, ``sleep``...).
Each pod runs in its own session (``start_new_session``), so one ``killpg`` reaches the whole tree,
exactly like a container's cgroup being torn down.

Why ``waitid(WNOWAIT)``: the group is killed *before* its leader is reaped. While the leader is an
unreaped zombie its pid (= the group id) cannot be reused, so the final ``killpg`` can never hit an
unrelated process group.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import socket
import subprocess
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Final

LOOPBACK: Final = "127.0.0.1"

#: Every live group, killed at interpreter exit if its owner never called ``close()``.
_LIVE: weakref.WeakSet[ProcessGroup] = weakref.WeakSet()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def find_pg_bindir() -> Path | None:
    """``GOCDHA_PG_BINDIR`` if set, else the newest ``/usr/lib/postgresql/<major>/bin``."""
    configured = os.environ.get("GOCDHA_PG_BINDIR")
    if configured:
        return Path(configured)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def default_os_user() -> str:
    """``postgres`` when running as root (Postgres refuses root), else the current user."""
    if os.geteuid() == 0:
        return "postgres"
    return pwd.getpwuid(os.geteuid()).pw_name


def user_command(
    user: str, command: Sequence[str], supplementary_groups: Sequence[int] = ()
) -> list[str]:
    """``command`` run as ``user``: through ``runuser`` when we are root, unchanged when we already
    are that user. Anything else cannot work without privileges, so it is refused.

    ``supplementary_groups`` (a pod's ``securityContext.supplementalGroups``) are added to the
    user's own groups, as a container runtime does."""
    current = pwd.getpwuid(os.geteuid()).pw_name
    if user == current:
        return list(command)
    if os.geteuid() != 0:
        raise PermissionError(f"cannot run processes as {user!r} while running as {current!r}")
    if not supplementary_groups:
        return ["runuser", "-u", user, "--", *command]
    primary = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    extra: list[str] = []
    for gid in supplementary_groups:
        extra += ["-G", grp.getgrgid(gid).gr_name]
    return ["runuser", "-u", user, "-g", primary, *extra, "--", *command]


def give_to(path: Path, user: str) -> None:
    """chown ``path`` to ``user`` when we are root (otherwise it already is ours)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class ProcessGroup:
    """One container's process tree, in its own session."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log: IO[bytes],
        wrapped: bool = False,
    ) -> None:
        """``wrapped``: the leader is a ``runuser`` wrapper around the real command."""
        self.wrapped = wrapped
        self._popen = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self._popen.pid
        self._reaped: int | None = None
        _LIVE.add(self)

    def exited(self) -> bool:
        """Whether the leader has exited (without reaping it: see the module docstring)."""
        if self._reaped is not None:
            return True
        try:
            result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return result is not None

    @property
    def returncode(self) -> int | None:
        return self._reaped

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to every process of the group (never after the leader was reaped)."""
        if self._reaped is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def terminate(self) -> None:
        """SIGTERM, as a container runtime sends it to PID 1.

        With a ``runuser`` leader the signal goes to the members only: ``runuser`` reacts to a
        SIGTERM of its own by sleeping two seconds before it kills its child, while it exits at
        once when its child does."""
        if not self.wrapped:
            self.signal_group(signal.SIGTERM)
            return
        for pid in group_members(self.pid):
            if pid != self.pid:
                self.signal_pid(pid, signal.SIGTERM)

    def signal_pid(self, pid: int, signum: int) -> bool:
        """Send ``signum`` to ``pid`` only if it still belongs to this group."""
        if self._reaped is not None:
            return False
        try:
            if os.getpgid(pid) != self.pid:
                return False
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def reap(self) -> int:
        """SIGKILL whatever is left of the group, then collect the leader's exit status."""
        if self._reaped is None:
            self.signal_group(signal.SIGKILL)
            self._reaped = self._popen.wait()
            _LIVE.discard(self)
        return self._reaped


def kill_all_live_groups() -> None:
    """Last resort at interpreter exit: no local pod outlives the Python process that started it."""
    for group in list(_LIVE):
        group.reap()


def group_members(pgid: int) -> list[int]:
    """Pids of the processes (zombies excluded) whose process group is ``pgid``, from ``/proc``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry.name))
    return members


import atexit  # noqa: E402

atexit.register(kill_all_live_groups)
