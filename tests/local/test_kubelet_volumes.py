"""The local kubelet refreshes ConfigMap and Secret volumes in a running pod, as a real kubelet
does (periodically, without restarting anything), except where a container mounts the volume
with ``subPath``: a real kubelet never updates such a mount."""

from __future__ import annotations

import copy
import shutil
from typing import Any

import pytest

from gocd_ha_operator.local import LocalKubelet
from gocd_ha_operator.local.process import default_os_user
from tests.local.test_kubelet_pods import (
    SECRET_VALUE,
    create_probe,
    skip_reason,
    started,
    statefulset,
)
from tests.support.kubelet import CLUSTER, NAMESPACE, Api, eventually

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

ROTATED = "rotated-value-never-logged"


def with_plain_secret_volumes() -> dict[str, Any]:
    """The probe with the Secret also as a plain volume (``/tls``) and as a ``subPath`` mount
    (``/pinned/password``)."""
    obj = copy.deepcopy(statefulset())
    spec = obj["spec"]["template"]["spec"]
    spec["volumes"] += [
        {"name": "tls", "secret": {"secretName": "probe"}},
        {"name": "pinned", "secret": {"secretName": "probe"}},
    ]
    spec["containers"][0]["volumeMounts"] += [
        {"name": "tls", "mountPath": "/tls", "readOnly": True},
        {
            "name": "pinned",
            "mountPath": "/pinned/password",
            "subPath": "password",
            "readOnly": True,
        },
    ]
    return obj


async def test_secret_and_configmap_volumes_are_refreshed_in_a_running_pod(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalKubelet(
        api.url, NAMESPACE, clusters=[CLUSTER], interval=0.1, volume_refresh_interval=0.3
    ) as kubelet:
        claim = kubelet.claim_dir("data-probe-0")
        (claim / "sub").mkdir()
        shutil.chown(claim / "sub", default_os_user())
        await create_probe(api, statefulset_body=with_plain_secret_volumes())
        await started(kubelet, claim, 1)
        pid = (claim / "pid").read_text()
        volumes = kubelet.work_dir / "pods" / "probe-0" / "volumes"
        assert (volumes / "tls" / "password").read_text() == SECRET_VALUE

        # As kubectl would (the probe's Secret was created with stringData, which kmock keeps).
        await api.patch("v1", "Secret", "probe", {"stringData": {"password": ROTATED}})
        await api.patch("v1", "ConfigMap", "probe", {"data": {"role": "two"}})
        await eventually(
            lambda: (volumes / "tls" / "password").read_text() == ROTATED,
            timeout=10,
            what="the Secret volume refreshed",
        )
        await eventually(
            lambda: (volumes / "config" / "role").read_text() == "two",
            timeout=10,
            what="the ConfigMap volume refreshed",
        )
        # The projected volume of the same Secret is refreshed too (dir/password there).
        await eventually(
            lambda: (volumes / "creds" / "dir" / "password").read_text() == ROTATED,
            timeout=10,
            what="the projected Secret volume refreshed",
        )
        # Nothing restarted; the subPath mount keeps what the container started with.
        assert (claim / "pid").read_text() == pid
        assert len((claim / "starts").read_text().splitlines()) == 1
        assert (volumes / "pinned" / "password").read_text() == SECRET_VALUE
        assert oct((volumes / "tls" / "password").stat().st_mode & 0o777) == "0o600"
        assert "volume tls refreshed" in kubelet.pod_log("probe")
        for text in (kubelet.pod_log("probe"), caplog.text):
            assert ROTATED not in text and SECRET_VALUE not in text
