"""The start grant of a primary that waits for it: how soon the guard answers the entrypoint's
request when its API requests are slow (what a loaded node sees)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gocd_ha_operator.api.constants import LEASE_GRANT_FILE
from gocd_ha_operator.guard.instance import InstanceGuard
from gocd_ha_operator.kube.apply import KubeClient
from tests.leases.conftest import NAMESPACE, ApiThread
from tests.leases.test_instance_guard import (
    RENEW_DEADLINE_SECONDS,
    side_a_holds_the_lease,
    side_a_settings,
)


class AskedDuringRead(KubeClient):
    """The real client; while it reads the Lease, the entrypoint asks for a grant (it touches the
    request file), as happens when a request takes seconds on a loaded machine."""

    def __init__(self, inner: KubeClient, request: Path) -> None:
        super().__init__(inner._api, request_timeout=inner.request_timeout)
        self.request = request

    def get(self, *args: Any, **kwargs: Any) -> Any:
        if args[1] == "Lease" and not self.request.exists():
            self.request.touch()
        return super().get(*args, **kwargs)


def test_a_grant_asked_for_during_a_slow_lease_read_is_answered_by_that_attempt(
    api: ApiThread, tmp_path: Path
) -> None:
    kube = api.client()
    side_a_holds_the_lease(kube)
    grant = tmp_path / LEASE_GRANT_FILE
    # Port 1: nothing listens, the local Postgres is down, as before its first start.
    settings = side_a_settings(tmp_path, grant, port=1, password_file=tmp_path / "no-password")
    guard = InstanceGuard(settings, AskedDuringRead(kube, grant.with_name(grant.name + ".request")))
    before = time.time()
    guard.attempt()
    # Before the fix the request was looked at before the Lease was read: this attempt renewed
    # nothing, and the primary waited for the next one (a retry period plus the requests).
    assert grant.exists(), "the guard did not answer a request made during its attempt"
    assert before < float(grant.read_text()) <= time.time() + RENEW_DEADLINE_SECONDS
    lease = kube.get("coordination.k8s.io/v1", "Lease", NAMESPACE, "ci-primary")
    assert lease is not None and lease["spec"]["holderIdentity"] == "ci-pg-a"
