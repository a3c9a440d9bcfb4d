from __future__ import annotations

import pytest

from tests.emulator.conftest import Harness

pytestmark = pytest.mark.emulator


async def test_create_makes_children(harness: Harness, run_operator) -> None:
    await run_operator()
    await harness.create_cluster()
    await harness.eventually(lambda: len(harness.children()) >= 24, message="children")
    print(sorted(harness.children()))
    print(harness.cluster().get("status"))
