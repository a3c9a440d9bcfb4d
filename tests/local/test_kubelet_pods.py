"""The local kubelet with a small shell "pod": env, volumes, restarts, holds and cleanup.

No Postgres here: a bash script run from a ConfigMap shows what the container sees, so each
kubelet rule is checked directly and fast. Runs as the same unprivileged user as Postgres pods.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from gocd_ha_operator.local import LocalKubelet
from gocd_ha_operator.local.process import default_os_user, group_members
from tests.support.kubelet import CLUSTER, NAMESPACE, Api, eventually

SECRET_VALUE = "s3cret-value-never-logged"

SCRIPT = """\
set -eu
echo "$(date +%s) role=$ROLE" >> "$DATA_DIR/../starts"
env | sort > "$DATA_DIR/../env.txt"
stat -c '%a %U' "$SECRET_FILE" > "$DATA_DIR/../secret-stat"
echo "container output line"
echo $$ > "$DATA_DIR/../pid"
exec sleep 300
"""


def statefulset(replicas: int = 1, annotation: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "probe", "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "serviceName": "probe",
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}, "annotations": {"rev": annotation}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "main",
                            "command": ["bash", "/etc/probe/run.sh"],
                            "ports": [{"name": "main", "containerPort": 7000}],
                            "env": [
                                {"name": "DATA_DIR", "value": "/data/sub"},
                                {"name": "SECRET_FILE", "value": "/secrets/dir/password"},
                                {"name": "GOCDHA_PEER_HOST", "value": f"{CLUSTER}-pg-b.build.svc"},
                                {"name": "GOCDHA_PEER_PORT", "value": "5432"},
                                {
                                    "name": "ROLE",
                                    "valueFrom": {
                                        "configMapKeyRef": {"name": "probe", "key": "role"}
                                    },
                                },
                                {
                                    "name": "POD",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/probe"},
                                {"name": "creds", "mountPath": "/secrets"},
                                {"name": "data", "mountPath": "/data"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "probe"}},
                        {
                            "name": "creds",
                            "projected": {
                                "sources": [
                                    {
                                        "secret": {
                                            "name": "probe",
                                            "items": [{"key": "password", "path": "dir/password"}],
                                        }
                                    }
                                ]
                            },
                        },
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
        },
    }


def skip_reason() -> str | None:
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "runuser is missing"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no OS user 'postgres' to run pods as"
    return None


pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


async def create_probe(
    api: Api, role: str = "one", statefulset_body: dict[str, Any] | None = None
) -> None:
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "probe", "namespace": NAMESPACE},
            "data": {"run.sh": SCRIPT, "role": role},
        }
    )
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "probe", "namespace": NAMESPACE},
            "stringData": {"password": SECRET_VALUE},
        }
    )
    await api.create(statefulset_body or statefulset())


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: this container's init may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def read_env(claim: Path) -> dict[str, str]:
    lines = (claim / "env.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def starts(claim: Path) -> list[str]:
    path = claim / "starts"
    return path.read_text().splitlines() if path.exists() else []


async def started(kubelet: LocalKubelet, claim: Path, count: int) -> None:
    await eventually(
        lambda: (
            len(starts(claim)) == count and (claim / "pid").exists() and kubelet.running("probe")
        ),
        timeout=10,
        what=f"start #{count} of the probe pod",
    )


async def test_env_and_volumes_are_what_a_container_would_see(
    api: Api, kubelet: LocalKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    claim = kubelet.claim_dir("data-probe-0")
    (claim / "sub").mkdir()
    shutil.chown(claim / "sub", default_os_user())
    await create_probe(api)
    await started(kubelet, claim, 1)
    env = read_env(claim)
    assert env["ROLE"] == "one"
    assert env["POD"] == "probe-0"
    assert env["DATA_DIR"] == f"{claim}/sub"
    pod_dir = kubelet.work_dir / "pods" / "probe-0"
    assert env["SECRET_FILE"] == f"{pod_dir}/volumes/creds/dir/password"
    assert env["TMPDIR"] == f"{pod_dir}/volumes/tmp"
    # The peer Service's DNS name stays (TLS verifies it); its local address comes in
    # GOCDHA_PEER_HOSTADDR, the port is the peer's local one; the pod gets its own port.
    assert (env["GOCDHA_PEER_HOST"], env["GOCDHA_PEER_HOSTADDR"], env["GOCDHA_PEER_PORT"]) == (
        f"{CLUSTER}-pg-b.build.svc",
        "127.0.0.1",
        str(kubelet.port(f"{CLUSTER}-pg-b")),
    )
    assert env["GOCDHA_PORT"] == str(kubelet.port("probe"))
    assert (claim / "secret-stat").read_text().split() == ["600", default_os_user()]
    assert Path(env["SECRET_FILE"]).read_text() == SECRET_VALUE
    assert (pod_dir / "volumes" / "config" / "run.sh").read_text() == SCRIPT
    log = kubelet.pod_log("probe")
    assert "container output line" in log
    for text in (log, caplog.text, "\n".join(f"{k}={v}" for k, v in env.items())):
        assert SECRET_VALUE not in text


async def test_configmap_refs_are_read_at_start_and_data_survives(
    api: Api, kubelet: LocalKubelet
) -> None:
    claim = kubelet.claim_dir("data-probe-0")
    (claim / "sub").mkdir()
    shutil.chown(claim / "sub", default_os_user())
    await create_probe(api, role="one")
    await started(kubelet, claim, 1)
    first_pid = int((claim / "pid").read_text())

    # A ConfigMap change does not restart anything: the running container keeps its env.
    await api.patch("v1", "ConfigMap", "probe", {"data": {"role": "two"}})
    await kubelet.sync()
    assert kubelet.running("probe")
    assert len(starts(claim)) == 1

    await api.scale("StatefulSet", "probe", 0)
    await eventually(lambda: not kubelet.running("probe"), timeout=10, what="probe stopped")
    assert not alive(first_pid)
    (claim / "pid").unlink()

    await api.scale("StatefulSet", "probe", 1)
    await started(kubelet, claim, 2)
    assert starts(claim)[0].endswith("role=one")  # the claim kept the first run's data
    assert starts(claim)[1].endswith("role=two")  # and the new run read the ConfigMap at start


async def test_kill_holds_the_pod_until_resumed_and_crashes_are_restarted(
    api: Api, kubelet: LocalKubelet
) -> None:
    claim = kubelet.claim_dir("data-probe-0")
    (claim / "sub").mkdir()
    shutil.chown(claim / "sub", default_os_user())
    await create_probe(api)
    await started(kubelet, claim, 1)

    pid = int((claim / "pid").read_text())
    await kubelet.kill("probe")
    assert not kubelet.running("probe")
    assert kubelet.held("probe")
    await eventually(lambda: not alive(pid), timeout=5, what="the killed process gone")
    for _ in range(10):  # replicas is still 1: a held pod stays down anyway
        await kubelet.sync()
    assert not kubelet.running("probe")
    assert len(starts(claim)) == 1
    assert "held until resumed" in kubelet.pod_log("probe")

    (claim / "pid").unlink()
    await kubelet.resume("probe")
    await started(kubelet, claim, 2)

    # A container that dies by itself is restarted (restartPolicy: Always) after a back-off.
    pid = int((claim / "pid").read_text())
    (claim / "pid").unlink()
    os.kill(pid, signal.SIGKILL)
    await started(kubelet, claim, 3)
    assert "container main exited with status 137" in kubelet.pod_log("probe")


async def test_a_changed_pod_template_replaces_the_pod(api: Api, kubelet: LocalKubelet) -> None:
    claim = kubelet.claim_dir("data-probe-0")
    (claim / "sub").mkdir()
    shutil.chown(claim / "sub", default_os_user())
    await create_probe(api)
    await started(kubelet, claim, 1)
    tmp_marker = kubelet.work_dir / "pods" / "probe-0" / "volumes" / "tmp" / "marker"
    tmp_marker.write_text("x")
    (claim / "pid").unlink()
    await api.patch(
        "apps/v1",
        "StatefulSet",
        "probe",
        {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}},
    )
    await started(kubelet, claim, 2)
    assert "pod template changed" in kubelet.pod_log("probe")
    assert not tmp_marker.exists()  # a new pod gets fresh emptyDirs


async def test_close_leaves_no_process_and_no_files(api: Api) -> None:
    kubelet = LocalKubelet(api.url, NAMESPACE, interval=0.1)
    try:
        await kubelet.start()
        claim = kubelet.claim_dir("data-probe-0")
        (claim / "sub").mkdir()
        shutil.chown(claim / "sub", default_os_user())
        await create_probe(api)
        await started(kubelet, claim, 1)
        groups = kubelet.process_groups()
        assert groups and all(group_members(g) for g in groups)
    finally:
        await kubelet.close()
    assert all(group_members(g) == [] for g in groups)
    assert not kubelet.work_dir.exists()


async def test_pause_stops_gracefully_and_holds(api: Api, kubelet: LocalKubelet) -> None:
    claim = kubelet.claim_dir("data-probe-0")
    (claim / "sub").mkdir()
    shutil.chown(claim / "sub", default_os_user())
    await create_probe(api)
    await started(kubelet, claim, 1)
    await kubelet.pause("probe")
    assert not kubelet.running("probe")
    assert kubelet.held("probe")
    # SIGTERM ended `sleep` (143 = 128 + SIGTERM): a graceful stop, not the grace-period kill.
    assert "stopped (status 143)" in kubelet.pod_log("probe")
    for _ in range(5):
        await kubelet.sync()
    assert not kubelet.running("probe")
    (claim / "pid").unlink()
    await kubelet.resume("probe")
    await started(kubelet, claim, 2)


async def test_a_moved_service_routes_at_once_not_at_the_next_interval(api: Api) -> None:
    """Issue #16: a watch event starts the kubelet's next sync, as kube-proxy follows a Service
    at once. With a 60 s interval, the pod's endpoints appear and a Service that stops
    selecting it stops routing within seconds (after the first sync, only events can do it)."""
    async with LocalKubelet(api.url, NAMESPACE, clusters=[CLUSTER], interval=60) as kubelet:
        await asyncio.sleep(1.0)  # the first sync ran on an empty namespace
        await api.create_children(lambda c: c["kind"] in ("Deployment", "Service", "Secret"))
        key = f"{NAMESPACE}/{CLUSTER}-gocd:8153"
        await eventually(lambda: key in kubelet.endpoints(), timeout=20, what="the endpoint")
        await api.patch("v1", "Service", f"{CLUSTER}-gocd", {"spec": {"selector": {"x": "none"}}})
        await eventually(lambda: key not in kubelet.endpoints(), timeout=10, what="the move")


async def test_a_moved_service_routes_while_a_sync_is_busy(api: Api) -> None:
    """A sync may be busy for seconds starting or stopping a pod (a promotion's rejoin, a GoCD
    server's init container); a Service event refreshes the endpoints without waiting for it."""
    async with LocalKubelet(api.url, NAMESPACE, clusters=[CLUSTER], interval=0.1) as kubelet:
        await api.create_children(lambda c: c["kind"] in ("Deployment", "Service", "Secret"))
        key = f"{NAMESPACE}/{CLUSTER}-gocd:8153"
        await eventually(lambda: key in kubelet.endpoints(), timeout=20, what="the endpoint")
        async with kubelet._lock:  # a sync that takes long (what it holds while it converges)
            await api.patch(
                "v1", "Service", f"{CLUSTER}-gocd", {"spec": {"selector": {"x": "none"}}}
            )
            await eventually(lambda: key not in kubelet.endpoints(), timeout=10, what="the move")


async def test_a_slow_pod_stop_does_not_hold_up_the_stop_of_another_pod(
    api: Api, kubelet: LocalKubelet
) -> None:
    """As a node's pod workers: a pod that takes its whole grace period to stop does not delay
    another pod's stop (issue #16: a switchover scales its old primary down while the old GoCD
    server is still stopping)."""
    claim = kubelet.claim_dir("data-probe-0")
    (claim / "sub").mkdir()
    shutil.chown(claim / "sub", default_os_user())
    slow = statefulset()
    slow["metadata"]["name"] = "slow"
    slow["spec"]["selector"] = {"matchLabels": {"app": "slow"}}
    slow["spec"]["template"]["metadata"]["labels"] = {"app": "slow"}
    # SIGTERM ignored (inherited through exec): it stops only at the grace period's SIGKILL.
    container = slow["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["bash", "-c", "trap '' TERM; exec sleep 300"]
    await create_probe(api)
    await api.create(slow)
    await started(kubelet, claim, 1)
    await eventually(lambda: kubelet.running("slow"), timeout=10, what="slow started")

    await api.scale("StatefulSet", "slow", 0)
    await asyncio.sleep(0.3)  # its stop has begun: SIGTERM sent, ignored
    assert kubelet.running("slow")
    asked = asyncio.get_running_loop().time()
    await api.scale("StatefulSet", "probe", 0)
    await eventually(lambda: not kubelet.running("probe"), timeout=10, what="probe stopped")
    took = asyncio.get_running_loop().time() - asked
    assert kubelet.running("slow"), "the slow pod is still within its grace period"
    assert took < 2.0, f"probe stopped {took:.1f}s after its scale-down, behind the slow pod"
    await eventually(lambda: not kubelet.running("slow"), timeout=10, what="slow killed")
    assert "killed after the grace period" in kubelet.pod_log("slow")
