"""Deployments become stand-in GoCD servers; endpoints follow Services' selectors."""

from __future__ import annotations

import aiohttp

from gocd_ha_operator.local import LocalKubelet
from tests.support.kubelet import CLUSTER, NAMESPACE, Api, eventually

GOCD_A, GOCD_B = f"{CLUSTER}-gocd-a", f"{CLUSTER}-gocd-b"


async def health(kubelet: LocalKubelet, service: str) -> object:
    address = kubelet.endpoints()[f"{NAMESPACE}/{service}:8153"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{address}/go/api/v1/health") as response,
    ):
        return await response.json()


async def health_or_refused(kubelet: LocalKubelet, service: str) -> object:
    try:
        return await health(kubelet, service)
    except aiohttp.ClientConnectorError:
        return "refused"


async def healthy(kubelet: LocalKubelet, service: str) -> bool:
    return await health_or_refused(kubelet, service) == {"health": "OK"}


def only_gocd(child: dict[str, object]) -> bool:
    """The GoCD side of the cluster: Deployments, Services and the Secrets their pods mount."""
    return child["kind"] in ("Deployment", "Service", "Secret")


async def test_endpoints_exist_before_any_object_and_never_move(api: Api) -> None:
    async with LocalKubelet(api.url, NAMESPACE, clusters=[CLUSTER]) as kubelet:
        before = kubelet.endpoints()
        assert set(before) == {
            f"{NAMESPACE}/{CLUSTER}-pg-a:5432",
            f"{NAMESPACE}/{CLUSTER}-pg-b:5432",
            f"{NAMESPACE}/{GOCD_A}:8153",
            f"{NAMESPACE}/{GOCD_B}:8153",
        }
        assert len(set(before.values())) == 4
        assert all(value.startswith("127.0.0.1:") for value in before.values())
        live = kubelet.endpoint_map
        await api.create_children(only_gocd)
        await kubelet.sync()
        after = kubelet.endpoints()
        assert {k: after[k] for k in before} == before
        # The virtual-IP Service selects the primary's GoCD, resolved by its selector.
        assert after[f"{NAMESPACE}/{CLUSTER}-gocd:8153"] == before[f"{NAMESPACE}/{GOCD_A}:8153"]
        assert (
            str(live[f"{NAMESPACE}/{CLUSTER}-gocd:8153"])
            == after[f"{NAMESPACE}/{CLUSTER}-gocd:8153"]
        )


async def test_deployment_replicas_start_and_stop_a_standin_gocd(
    api: Api, kubelet: LocalKubelet
) -> None:
    await api.create_children(only_gocd)
    # Cold mode: the primary side's server runs, the standby's is at 0 replicas.
    await eventually(lambda: healthy(kubelet, GOCD_A), timeout=10, what="a healthy")
    assert kubelet.running(GOCD_A)
    assert not kubelet.running(GOCD_B)
    assert await health_or_refused(kubelet, GOCD_B) == "refused"

    await api.scale("Deployment", GOCD_A, 0)
    await eventually(lambda: not kubelet.running(GOCD_A), timeout=10, what="a stopped")
    assert await health_or_refused(kubelet, GOCD_A) == "refused"
    await api.scale("Deployment", GOCD_B, 1)
    await eventually(lambda: healthy(kubelet, GOCD_B), timeout=10, what="b healthy")

    await kubelet.kill(GOCD_B)
    await kubelet.sync()
    assert await health_or_refused(kubelet, GOCD_B) == "refused"
    await kubelet.resume(GOCD_B)
    await eventually(lambda: healthy(kubelet, GOCD_B), timeout=10, what="b healthy again")


async def test_a_pod_whose_configmap_is_missing_is_not_started(
    api: Api, kubelet: LocalKubelet
) -> None:
    """Like CreateContainerConfigError: reported in the pod's log, retried with back-off."""
    await api.create_children(lambda c: c["kind"] == "StatefulSet")
    await kubelet.sync()
    assert not kubelet.running(f"{CLUSTER}-pg-a")
    log = kubelet.pod_log(f"{CLUSTER}-pg-a")
    assert "cannot start: " in log
    assert f"ConfigMap '{CLUSTER}-postgres' not found" in log


def extra_service(name: str, *, headless: bool) -> dict[str, object]:
    """A Service of GoCD side a whose port (9153) is not a container port; targetPort ``http``."""
    spec: dict[str, object] = {
        "selector": {"app.kubernetes.io/instance": CLUSTER, "gocdha.io/side": "a"},
        "ports": [{"name": "web", "port": 9153, "targetPort": "http"}],
    }
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


async def test_a_headless_service_resolves_to_the_pod_on_its_own_port(
    api: Api, kubelet: LocalKubelet
) -> None:
    """As cluster DNS: a headless Service names the pod, and a client dials the Service's port on
    it (targetPort plays no part); a virtual-IP Service forwards its port to the targetPort."""
    await api.create_children(only_gocd)
    await api.create(extra_service("side-a-vip", headless=False))
    await api.create(extra_service("side-a-headless", headless=True))
    await eventually(lambda: healthy(kubelet, GOCD_A), timeout=10, what="a healthy")
    await kubelet.sync()
    endpoints = kubelet.endpoints()
    own = endpoints[f"{NAMESPACE}/{GOCD_A}:8153"]
    # The cluster's instance Services are headless; their port is the container's: resolved.
    assert endpoints[f"{NAMESPACE}/{CLUSTER}-gocd-a:8155"] != own
    assert endpoints[f"{NAMESPACE}/side-a-vip:9153"] == own
    assert f"{NAMESPACE}/side-a-headless:9153" not in endpoints, "no container listens on 9153"
