"""Cold mode end to end in the local stack: the operator sees its sync agent's mirror as synced,
and the server that becomes primary restores that mirror in its init container."""

from __future__ import annotations

import pytest

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE
from gocd_ha_operator.local.stack import local_stack
from gocd_ha_operator.local.workload import streaming_from
from tests.support.localstack import BODY, NAME, synced_on
from tests.support.pg import unavailable_reason

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


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
