"""Fixtures of the promotion tests: a local stack (emulator, operator, local kubelet) for the
``ci`` cluster; the helpers are in ``tests/support/promotion.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gocd_ha_operator.local.stack import LocalStack, local_stack
from tests.support.promotion import NAME


@pytest.fixture
async def stack() -> AsyncIterator[LocalStack]:
    async with local_stack([NAME], namespace="build", observe_interval=0.5) as running:
        yield running
