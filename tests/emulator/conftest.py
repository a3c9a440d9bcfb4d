"""Fixtures of the emulator tests: the real kopf handlers against kmock's in-process Kubernetes API
emulator (the harness and the example cluster are in ``tests/support/emulator.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import fetch_helm
import kopf
import pytest

from gocd_ha_operator.controller.handlers import OperatorConfig
from gocd_ha_operator.kube.apply import client_for
from gocd_ha_operator.local.emulator import (
    OperatorEmulator,
    OperatorThread,
    emulator_settings,
    running_emulator,
)
from tests.support.delivery import ROOT
from tests.support.emulator import Harness, closed_endpoints


@pytest.fixture
async def emulator() -> AsyncIterator[OperatorEmulator]:
    async with running_emulator() as (emulator, _url):
        yield emulator


@pytest.fixture
async def harness(emulator: OperatorEmulator) -> AsyncIterator[Harness]:
    url = str(emulator.url).rstrip("/")
    config = OperatorConfig(
        operator_image="registry.example/gocd-ha-operator:test",
        observe_interval=0.3,
        kube_factory=lambda: client_for(url),
        # Every Service the operator connects to points at a closed loopback port: nothing is
        # reachable, and no test depends on DNS.
        endpoints=closed_endpoints(),
        connection=kopf.ConnectionInfo(server=url),
    )
    yield Harness(emulator=emulator, url=url, config=config)


@pytest.fixture
async def run_operator(harness: Harness) -> AsyncIterator[Callable[[], Any]]:
    """Start (and restart) the operator in its own thread; stopped at the end of the test."""
    running: list[OperatorThread] = []

    async def start() -> None:
        # A fresh config object per run: an operator restart loses every in-memory cache.
        config = OperatorConfig(
            operator_image=harness.config.operator_image,
            observe_interval=harness.config.observe_interval,
            kube_factory=harness.config.kube_factory,
            endpoints=harness.config.endpoints,
            connection=harness.config.connection,
            tune_settings=emulator_settings,
            retry_delay=1.0,
            certificate_check_interval=harness.config.certificate_check_interval,
        )
        operator = OperatorThread(config)
        running.append(operator)
        await operator.start()

    async def stop() -> None:
        while running:
            await running.pop().stop()

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    await stop()


@pytest.fixture(scope="session")
def helm() -> Path:
    """The Helm binary (tools/fetch_helm.py), for tests comparing what the operator does with
    what the chart grants it."""
    try:
        return fetch_helm.fetch_helm(ROOT / ".cache" / "helm")
    except fetch_helm.FetchError as exc:
        pytest.fail(f"could not fetch helm with tools/fetch_helm.py: {exc}")
