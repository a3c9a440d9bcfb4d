"""Fixtures of the plugin tests (the helpers are in ``tests/support/plugin.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gocd_ha_operator.local.emulator import running_emulator
from tests.support.plugin import Emulated, Plugin, write_kubeconfig


@pytest.fixture
async def emulated(tmp_path: Path) -> AsyncIterator[Emulated]:
    async with running_emulator() as (emulator, url):
        yield Emulated(emulator, url, Plugin(write_kubeconfig(tmp_path / "kubeconfig", url)))
