"""Fixtures of the fault tests: the promotion tier's local stack, and the emulator tier's harness
for the status-writer test (the helpers are in ``tests/support/faults.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gocd_ha_operator.local.stack import LocalStack, local_stack
from tests.emulator.conftest import emulator, harness, run_operator
from tests.support.promotion import NAME

__all__ = ["emulator", "harness", "run_operator", "stack"]


@pytest.fixture
async def stack() -> AsyncIterator[LocalStack]:
    async with local_stack([NAME], namespace="build", observe_interval=0.5) as running:
        yield running
