"""Who runs an operator-image container (the instance guard, the sync agent) when pods start at
the same time: every one of them waits for the one probe of the OS user.

Seen under CPU load: two Postgres pods were created in one sync pass; while the first guard's
probe ran, the second guard was started as the OS user that cannot run this Python ("runuser:
failed to execute gocd-ha-operator: Permission denied") and waited for its restart back-off.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gocd_ha_operator.local import LocalKubelet
from gocd_ha_operator.local import kubelet as kubelet_module


def test_concurrent_containers_wait_for_the_one_probe_of_the_os_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probes: list[list[str]] = []

    def slow_probe_that_fails(command: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        probes.append(command)
        time.sleep(0.5)  # a loaded machine: the interpreter takes a while to start
        return subprocess.CompletedProcess(command, 1, b"", b"Permission denied")

    monkeypatch.setattr(subprocess, "run", slow_probe_that_fails)  # the kubelet's own module
    # As root, the command would be wrapped in runuser; the probe's answer is what matters here.
    monkeypatch.setattr(kubelet_module, "user_command", lambda _user, command, *_: command)
    kubelet = LocalKubelet("http://127.0.0.1:1", "ns", os_user="gocdha-cannot-run-python")
    try:
        guard = [str(Path(sys.executable).parent / "gocd-ha-operator"), "instance-guard"]
        path = str(Path(sys.executable).parent)
        users: list[str] = []
        threads = [
            threading.Thread(target=lambda: users.append(kubelet._user_for(guard, path)))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        myself = pwd.getpwuid(os.geteuid()).pw_name
        assert users == [myself] * 3, f"a container ran as the user that cannot run it: {users}"
        assert len(probes) == 1
        # A command that is not the operator image's runs as the OS user, as before.
        assert kubelet._user_for(["bash", "-c", "true"], "/usr/bin:/bin") == (
            "gocdha-cannot-run-python"
        )
    finally:
        shutil.rmtree(kubelet.work_dir, ignore_errors=True)
