"""Warm mode against the stand-in GoCD server: health and the business-continuity dashboard.

The stand-in (tests/support/standin_gocd.py) is not GoCD; it serves GoCD's documented endpoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web

from gocd_ha_operator.gocd.client import (
    BCTokenInvalidError,
    GoCDUnauthorizedError,
    GoCDUnreachableError,
    check_health,
    fetch_bc_dashboard,
    read_bc_dashboard,
)
from gocd_ha_operator.gocd.token import BCToken
from tests.support.ports import free_port
from tests.support.standin_gocd import (
    StandinGoCD,
    out_of_sync_dashboard,
    setup_incomplete_dashboard,
    sync_errors_dashboard,
    synced_dashboard,
)

TOKEN = BCToken("bc_token", "badger")
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def gocd() -> AsyncIterator[StandinGoCD]:
    async with StandinGoCD(token=TOKEN, dashboard=synced_dashboard(NOW)) as server:
        yield server


async def test_health(gocd: StandinGoCD) -> None:
    result = await check_health(gocd.base_url)
    assert (result.healthy, result.message) == (True, "OK")
    gocd.healthy = False
    result = await check_health(gocd.base_url)
    assert result.healthy is False
    assert "503" in result.message


async def test_health_unreachable() -> None:
    result = await check_health(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert result.healthy is False
    assert "health" in result.message


@pytest.mark.parametrize(
    ("scenario", "synced", "reason"),
    [
        (synced_dashboard, True, "Synced"),
        (out_of_sync_dashboard, False, "FilesDiffer"),
        (sync_errors_dashboard, False, "SyncErrors"),
        (setup_incomplete_dashboard, False, "SetupIncomplete"),
    ],
)
async def test_dashboard_scenarios(
    gocd: StandinGoCD, scenario: object, synced: bool, reason: str
) -> None:
    gocd.dashboard = scenario(NOW)  # type: ignore[operator]
    status = await read_bc_dashboard(gocd.base_url, TOKEN, max_age_seconds=300, now=NOW)
    assert (status["synced"], status["reason"]) == (synced, reason)
    assert status["mode"] == "Warm"
    assert status["source"] == gocd.base_url + "/go/add-on/business-continuity/admin/dashboard.json"
    assert gocd.requests[-1] == "/go/add-on/business-continuity/admin/dashboard.json"


async def test_wrong_token_is_unauthorized(gocd: StandinGoCD) -> None:
    wrong = BCToken("bc_token", "not-the-password")
    with pytest.raises(GoCDUnauthorizedError, match="401"):
        await fetch_bc_dashboard(gocd.base_url, wrong)
    status = await read_bc_dashboard(gocd.base_url, wrong, max_age_seconds=300, now=NOW)
    assert (status["synced"], status["reason"]) == (False, "Unauthorized")
    assert "not-the-password" not in repr(status)


async def test_missing_token_file_on_server_is_token_invalid(gocd: StandinGoCD) -> None:
    gocd.token = None
    with pytest.raises(BCTokenInvalidError, match="422"):
        await fetch_bc_dashboard(gocd.base_url, TOKEN)
    status = await read_bc_dashboard(gocd.base_url, TOKEN, max_age_seconds=300, now=NOW)
    assert (status["synced"], status["reason"]) == (False, "TokenInvalid")
    assert "business-continuity-token" in status["message"]


async def test_not_in_standby_mode(gocd: StandinGoCD) -> None:
    gocd.dashboard = None
    status = await read_bc_dashboard(gocd.base_url, TOKEN, max_age_seconds=300, now=NOW)
    assert (status["synced"], status["reason"]) == (False, "InvalidResponse")
    assert "standby mode" in status["message"]


async def test_unreachable() -> None:
    base_url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(GoCDUnreachableError):
        await fetch_bc_dashboard(base_url, TOKEN, timeout=2)
    status = await read_bc_dashboard(base_url, TOKEN, max_age_seconds=300, now=NOW, timeout=2)
    assert (status["synced"], status["reason"]) == (False, "Unreachable")


async def test_a_server_that_never_answers_costs_only_the_timeout() -> None:
    release = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/{tail:.*}", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = await read_bc_dashboard(base_url, TOKEN, max_age_seconds=300, timeout=0.5)
        health = await check_health(base_url, timeout=0.5)
        assert loop.time() - started < 5
        assert status["reason"] == "Unreachable"
        assert "no answer within 0.5s" in status["message"]
        assert health.healthy is False
    finally:
        release.set()
        await runner.cleanup()
