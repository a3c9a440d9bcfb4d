"""Cold mode end to end in the local stack: the operator sees its sync agent's mirror as synced,
and the server that becomes primary restores that mirror in its init container."""

from __future__ import annotations

from typing import Any

import pytest

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE
from gocd_ha_operator.local.stack import LocalStack, local_stack
from gocd_ha_operator.local.workload import streaming_from
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NAME = "ci"
BODY: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": NAME},
    "spec": {
        "gocd": {"image": "gocd/gocd-server:v26.1.0"},
        "postgres": {"image": "postgres:15"},
        "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
    },
}


def synced_on(stack: LocalStack, side: str):  # type: ignore[no-untyped-def]
    """A status check: side ``side`` is primary and ConfigSynced is True from its sync agent
    (whose status the operator reads at the local address of ``<name>-gocd-<side>:8155``)."""

    def check(status: dict[str, Any]) -> dict[str, Any] | None:
        agent = stack.kubelet.endpoints().get(f"{stack.namespace}/{NAME}-gocd-{side}:8155")
        condition = next(
            (c for c in status.get("conditions", []) if c["type"] == "ConfigSynced"), {}
        )
        sync = status.get("configSync") or {}
        if (
            status.get("primary") == side
            and condition.get("status") == "True"
            and agent is not None
            and sync.get("source") == f"https://{agent}/status"  # HTTPS, §17
        ):
            return sync
        return None

    return check


async def test_cold_sync_is_observed_synced_and_the_new_primary_restores_the_mirror() -> None:
    async with local_stack([NAME], namespace="build", observe_interval=0.5) as stack:
        await stack.apply(BODY)
        sync = await stack.wait_for(
            synced_on(stack, "a"), NAME, timeout=120, what="ConfigSynced on a"
        )
        assert sync["mode"] == "Cold"
        names = {f["name"] for f in sync["files"]}
        assert {"config/cruise-config.xml", "config/cipher.aes"} <= names
        config_a = stack.kubelet.claim_dir(f"{NAME}-gocd-a") / "godata" / "config"
        original = (config_a / "cruise-config.xml").read_text()

        await stack.wait_for(
            lambda s: streaming_from("a", s), NAME, timeout=120, what="b streaming from a"
        )
        await stack.annotate(NAME, ANNOTATION_PROMOTE, "cold-1")
        await stack.wait_for(
            lambda s: (s.get("promotion") or {}).get("result") == "Succeeded",
            NAME,
            timeout=120,
            what="the promotion",
        )
        await stack.wait_for(synced_on(stack, "b"), NAME, timeout=120, what="ConfigSynced on b")
        log_b = stack.kubelet.pod_log(f"{NAME}-gocd-b")
        assert "init container restore completed" in log_b
        assert "restored 2 files from the mirror synced at" in log_b  # restore's own report
        # b serves a's configuration (restored), not a fresh one of its own.
        config_b = stack.kubelet.claim_dir(f"{NAME}-gocd-b") / "godata" / "config"
        assert (config_b / "cruise-config.xml").read_text() == original
        assert not stack.kubelet.running(f"{NAME}-gocd-a")  # a Cold standby is stopped
