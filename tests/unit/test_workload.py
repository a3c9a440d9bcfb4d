"""The local stack's write load (``local/workload.py``) as the promotion tests and the demo use it:
a client that finds the primary Service momentarily empty waits for it like a reconnecting GoCD
server, instead of failing the test that drives it (seen in CI: ``the primary Service selects
nothing`` right after a switchover had succeeded, before the kubelet's next endpoint refresh)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from gocd_ha_operator.local.workload import RowWriter, conninfo_when_selected
from tests.support.ports import free_port


class EmptyThenSelected:
    """A stand-in for ``LocalStack.gocd_conninfo``: the Service selects nothing ``empty`` times."""

    def __init__(self, empty: int, port: int) -> None:
        self.empty = empty
        self.port = port
        self.calls = 0

    async def gocd_conninfo(self, cluster: str, service: str) -> dict[str, Any] | None:
        self.calls += 1
        if self.calls <= self.empty:
            return None
        # Nothing listens here: the connection attempt itself fails, which shows the writer got
        # past the Service.
        return {"host": "127.0.0.1", "port": self.port, "dbname": "gocd", "connect_timeout": 2}


async def test_a_writer_waits_for_the_primary_service_to_select_a_pod() -> None:
    stack = EmptyThenSelected(empty=3, port=free_port())
    writer = RowWriter(stack, "ci")  # type: ignore[arg-type]
    with pytest.raises(psycopg.OperationalError):
        await writer.prepare()
    assert stack.calls == 4


async def test_a_service_that_never_selects_a_pod_is_named_after_the_wait() -> None:
    async def nothing() -> dict[str, Any] | None:
        return None

    with pytest.raises(RuntimeError, match=r"ci-pg-primary selects nothing \(waited 0.2 s\)"):
        await conninfo_when_selected(nothing, "ci-pg-primary", timeout=0.2, poll=0.01)
