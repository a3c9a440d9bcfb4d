"""Whole pods: init containers in order, every container (sidecars too) with its own restarts,
shared volumes, and each pod's in-cluster API access, which a test can cut and heal.

Small shell and Python "pods" show what each container sees; no Postgres, no operator.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gocd_ha_operator.local import LocalKubelet
from tests.local.test_kubelet_pods import alive, skip_reason
from tests.support.kubelet import NAMESPACE, Api, eventually

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def shell(name: str, script: str, **env: str) -> dict[str, Any]:
    """A container running ``script`` with ``bash``; paths reach it through env values, which
    the kubelet maps to the pod's local directories as it maps mounts."""
    return {
        "name": name,
        "image": "busybox",
        "command": ["bash", "-c", script],
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "scratch", "mountPath": f"/scratch-{name}"},
        ],
    }


def workload(
    name: str,
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 5,
        "containers": containers,
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}},
            {"name": "scratch", "emptyDir": {}},
        ],
        **spec,
    }
    if init:
        pod_spec["initContainers"] = init
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def pid_of(claim: Path, container: str) -> int | None:
    path = claim / f"{container}.pid"
    return int(path.read_text()) if path.exists() else None


def sidecar_pod() -> dict[str, Any]:
    """A "server" (first container, which a Deployment's stand-in would replace: so this one is
    a StatefulSet), a sidecar reading what the server writes to a shared emptyDir, and two init
    containers, the second failing until the test allows it."""
    first = shell("first", 'echo first >> "$DATA/order"', DATA="/data")
    second = shell(
        "second",
        'echo attempt >> "$DATA/second-attempts"; test -f "$DATA/allow" || exit 3; '
        'echo second >> "$DATA/order"',
        DATA="/data",
    )
    server = shell(
        "server",
        'echo $$ > "$DATA/server.pid"; echo server >> "$DATA/order"; '
        'echo hello > "$SCRATCH/from-server"; exec sleep 300',
        DATA="/data",
        SCRATCH="/scratch-server",
    )
    sidecar = shell(
        "sidecar",
        'echo $$ > "$DATA/sidecar.pid"; echo sidecar >> "$DATA/order"; '
        'until [ -f "$SHARED/from-server" ]; do sleep 0.1; done; '
        'cp "$SHARED/from-server" "$DATA/seen-by-sidecar"; exec sleep 300',
        DATA="/data",
        SHARED="/from-server-dir",
    )
    # The sidecar mounts the same emptyDir as the server, at another path.
    sidecar["volumeMounts"].append({"name": "scratch", "mountPath": "/from-server-dir"})
    obj = workload("pair", [server, sidecar], init=[first, second])
    obj["kind"] = "StatefulSet"
    obj["spec"]["serviceName"] = "pair"
    return obj


async def test_init_containers_run_in_order_and_a_failing_one_holds_the_pod(
    api: Api, kubelet: LocalKubelet
) -> None:
    claim = kubelet.claim_dir("pair-data")
    await api.create(sidecar_pod())
    await eventually(
        lambda: len(lines(claim / "second-attempts")) >= 3, timeout=20, what="second retried"
    )
    # The failing init container is retried alone; the containers never started.
    assert lines(claim / "order") == ["first"]
    assert not kubelet.running("pair")
    assert not kubelet.container_running("pair", "sidecar")
    assert kubelet.container_restarts("pair", "second") >= 2
    assert "init container second failed with status 3" in kubelet.pod_log("pair")

    (claim / "allow").touch()
    await eventually((claim / "seen-by-sidecar").exists, timeout=20, what="sidecar")
    order = lines(claim / "order")
    assert order[:2] == ["first", "second"]
    assert sorted(order[2:]) == ["server", "sidecar"]
    assert kubelet.running("pair")
    assert kubelet.container_running("pair", "sidecar")
    # The sidecar read what the server wrote to their shared emptyDir.
    assert (claim / "seen-by-sidecar").read_text() == "hello\n"


async def test_every_container_runs_and_restarts_alone_and_stops_with_the_pod(
    api: Api, kubelet: LocalKubelet
) -> None:
    claim = kubelet.claim_dir("pair-data")
    (claim / "allow").touch()
    await api.create(sidecar_pod())
    await eventually((claim / "seen-by-sidecar").exists, timeout=20, what="sidecar")
    server, sidecar = pid_of(claim, "server"), pid_of(claim, "sidecar")
    assert server and sidecar and alive(server) and alive(sidecar)

    # A sidecar that dies is restarted on its own; the server keeps running; init containers do
    # not run again (it is the same pod).
    (claim / "sidecar.pid").unlink()
    os.kill(sidecar, signal.SIGKILL)
    await eventually(lambda: pid_of(claim, "sidecar"), timeout=20, what="sidecar restarted")
    assert kubelet.container_restarts("pair", "sidecar") == 1
    assert kubelet.container_restarts("pair", "server") == 0
    assert pid_of(claim, "server") == server and alive(server)
    assert lines(claim / "order").count("first") == 1
    assert "container sidecar exited with status 137" in kubelet.pod_log("pair")

    # Stopping the pod stops every container (SIGTERM: 143), and a new pod runs init again.
    new_sidecar = pid_of(claim, "sidecar")
    assert new_sidecar is not None
    await api.scale("StatefulSet", "pair", 0)
    await eventually(lambda: "pod stopped" in kubelet.pod_log("pair"), timeout=20, what="stop")
    assert not alive(server) and not alive(new_sidecar)
    log = kubelet.pod_log("pair")
    assert "container server stopped (status 143)" in log
    assert "container sidecar stopped (status 143)" in log
    await api.scale("StatefulSet", "pair", 1)
    await eventually(
        lambda: lines(claim / "order").count("first") == 2, timeout=20, what="init ran again"
    )


CLIENT = """
import json, os, ssl, sys, time, urllib.request
sa = os.environ["GOCDHA_SERVICEACCOUNT_DIR"]
out = sys.argv[1]
assert sys.argv[2] == os.path.join(sa, "token"), sys.argv[2]  # the standard path, mapped
url = "https://%s:%s/api/v1/namespaces/%s/configmaps/probe-api" % (
    os.environ["KUBERNETES_SERVICE_HOST"],
    os.environ["KUBERNETES_SERVICE_PORT"],
    open(os.path.join(sa, "namespace")).read(),
)
context = ssl.create_default_context(cafile=os.path.join(sa, "ca.crt"))
while True:
    token = open(sys.argv[2]).read()
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(request, context=context, timeout=1) as response:
            line = "ok " + json.load(response)["data"]["value"]
    except Exception as exc:
        line = "fail " + type(exc).__name__
    with open(out, "a") as handle:
        handle.write(line + "\\n")
    time.sleep(0.1)
"""


def api_client_pod(name: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "client",
        "command": [sys.executable, "-c", CLIENT, "/data/results", f"{SA_DIR}/token"],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    obj = workload(name, [shell("main", "exec sleep 300"), container], **spec)
    obj["kind"] = "StatefulSet"
    obj["spec"]["serviceName"] = name
    return obj


async def results_after(claim: Path, count: int, prefix: str) -> str:
    """Wait for a new result line starting with ``prefix`` after the first ``count`` lines."""
    found = await eventually(
        lambda: next((x for x in lines(claim / "results")[count:] if x.startswith(prefix)), None),
        timeout=20,
        what=f"a {prefix!r} result",
    )
    return str(found)


async def test_containers_reach_the_api_as_in_cluster_clients_and_a_cut_is_per_pod(
    api: Api, kubelet: LocalKubelet
) -> None:
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "probe-api", "namespace": NAMESPACE},
            "data": {"value": "from-the-api"},
        }
    )
    claim = kubelet.claim_dir("apiclient-data")
    other_claim = kubelet.claim_dir("other-data")
    await api.create(api_client_pod("apiclient"))
    await api.create(api_client_pod("other"))
    assert await results_after(claim, 0, "ok") == "ok from-the-api"
    await results_after(other_claim, 0, "ok")

    sa = kubelet.work_dir / "pods" / "apiclient-0" / "volumes" / "kube-api-access"
    assert (sa / "namespace").read_text() == NAMESPACE
    assert oct((sa / "token").stat().st_mode & 0o777) == "0o600"
    token = (sa / "token").read_text()
    port = kubelet.api_port("apiclient")
    assert port is not None

    # The token is checked (and not forwarded): another one is refused.
    context = ssl.create_default_context(cafile=str(sa / "ca.crt"))
    url = f"https://127.0.0.1:{port}/api/v1/namespaces/{NAMESPACE}/configmaps/probe-api"
    for header, status in ((f"Bearer {token}x", 401), (None, 401)):
        request = urllib.request.Request(url)
        if header:
            request.add_header("Authorization", header)
        with pytest.raises(urllib.error.HTTPError) as refused:
            # In a thread: the proxy runs in this test's event loop.
            await asyncio.to_thread(urllib.request.urlopen, request, context=context, timeout=5)
        assert refused.value.code == status

    for mode in ("refuse", "blackhole"):
        await kubelet.cut_api("apiclient", mode)
        seen = len(lines(claim / "results"))
        await results_after(claim, seen, "fail")
        # Only this pod is cut: the other pod, and the kubelet itself, still reach the API.
        await results_after(other_claim, len(lines(other_claim / "results")), "ok")
        await kubelet.sync()
        assert kubelet.running("apiclient")
        await kubelet.heal_api("apiclient")
        await results_after(claim, len(lines(claim / "results")), "ok")
    assert "API access cut (blackhole)" in kubelet.pod_log("apiclient")
    assert token not in kubelet.pod_log("apiclient")

    # The pod's token works from anywhere while the pod exists, and no longer once it is gone.
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with await asyncio.to_thread(urllib.request.urlopen, request, context=context, timeout=5) as ok:
        assert json.load(ok)["data"] == {"value": "from-the-api"}
    await kubelet.pause("apiclient")
    with pytest.raises(urllib.error.HTTPError) as stale:
        await asyncio.to_thread(urllib.request.urlopen, request, context=context, timeout=5)
    assert stale.value.code == 401


async def test_a_pod_without_automounted_token_gets_no_token(
    api: Api, kubelet: LocalKubelet
) -> None:
    claim = kubelet.claim_dir("notoken-data")
    script = 'env | sort > "$DATA/env"; ls "$SA" > "$DATA/sa" 2>&1; exec sleep 300'
    obj = workload(
        "notoken",
        [shell("main", script, DATA="/data", SA=SA_DIR)],
        automountServiceAccountToken=False,
    )
    obj["kind"] = "StatefulSet"
    obj["spec"]["serviceName"] = "notoken"
    await api.create(obj)
    await eventually((claim / "sa").exists, timeout=20, what="the env")
    env = dict(line.split("=", 1) for line in lines(claim / "env") if "=" in line)
    # The API server's address is there (as in any pod), its token is not.
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == str(kubelet.api_port("notoken"))
    assert "GOCDHA_SERVICEACCOUNT_DIR" not in env
    assert env["SA"] == SA_DIR
    assert "No such file or directory" in (claim / "sa").read_text()


async def test_sync_agent_sidecar_mirrors_the_standin_config_and_serves_its_status(
    api: Api, kubelet: LocalKubelet
) -> None:
    """The Cold primary's GoCD pod as the builders render it: restore (init), the stand-in GoCD
    server with its minimal config, and the sync agent mirroring it onto the shared claim."""
    await api.create_children(lambda c: c["kind"] in ("Deployment", "Service", "Secret"))
    shared = kubelet.claim_dir("ci-shared")
    await eventually((shared / "gocd" / "manifest.json").exists, timeout=30, what="the mirror")
    manifest = json.loads((shared / "gocd" / "manifest.json").read_text())
    assert {"config/cruise-config.xml", "config/cipher.aes"} <= set(manifest["files"])
    log = kubelet.pod_log("ci-gocd-a")
    assert "init container restore completed" in log
    assert "nothing to restore" in log
    # The sync-status Service port resolves to the sidecar's own local port.
    address = kubelet.endpoints()[f"{NAMESPACE}/ci-gocd-a:8155"]
    assert address != kubelet.endpoints()[f"{NAMESPACE}/ci-gocd-a:8153"]
    # Reached through the Service: the sidecar answers over HTTPS with the certificate of
    # <name>-sync-agent-tls, verified for the Service name (and wants the token).
    verifying = ssl.create_default_context(cadata=api.ca_pem.decode())
    verifying.check_hostname = False  # urllib dials the address; the name is checked below
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        await asyncio.to_thread(
            urllib.request.urlopen, f"https://{address}/status", timeout=5, context=verifying
        )
    assert unauthorized.value.code == 401
    host, port = address.rsplit(":", 1)
    strict = ssl.create_default_context(cadata=api.ca_pem.decode())
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        strict.wrap_socket(raw, server_hostname=f"ci-gocd-a.{NAMESPACE}.svc") as tls,
    ):
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    # No plain HTTP on that port.
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        await asyncio.to_thread(urllib.request.urlopen, f"http://{address}/status", timeout=5)


async def test_a_watch_streams_through_the_pods_api_and_a_cut_resets_it(
    api: Api, kubelet: LocalKubelet
) -> None:
    obj = workload("watcher", [shell("main", "exec sleep 300")])
    obj["kind"] = "StatefulSet"
    obj["spec"]["serviceName"] = "watcher"
    await api.create(obj)
    await eventually(lambda: kubelet.running("watcher"), timeout=20, what="the pod")
    sa = kubelet.work_dir / "pods" / "watcher-0" / "volumes" / "kube-api-access"
    context = ssl.create_default_context(cafile=str(sa / "ca.crt"))
    headers = {"Authorization": f"Bearer {(sa / 'token').read_text()}"}
    url = (
        f"https://127.0.0.1:{kubelet.api_port('watcher')}"
        f"/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true"
    )

    def configmap(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "data": {"k": name},
        }

    await api.create(configmap("before"))
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=context) as response,
    ):
        assert response.status == 200
        first = json.loads(await asyncio.wait_for(response.content.readline(), 10))
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "before")
        await api.create(configmap("during"))  # streamed while the request is open
        second = json.loads(await asyncio.wait_for(response.content.readline(), 10))
        assert second["object"]["metadata"]["name"] == "during"
        await kubelet.cut_api("watcher-0")  # the pod's name works as well as the workload's
        with pytest.raises((aiohttp.ClientError, ConnectionError)):
            # Reset: the stream ends with an error, not with a clean end of the answer.
            while await asyncio.wait_for(response.content.readline(), 10):
                pass
    await kubelet.heal_api("watcher")
