"""A pod's API proxy: stopping a pod is not held up by a watch it left open.

The guard in a Postgres pod keeps a Lease watch open through its pod's proxy; stopping the pod
closes the proxy. Before the fix the close waited for aiohttp's default 60 s for that watch to end,
twice per local stack (one per Postgres pod): two minutes of every test teardown and of `make demo`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gocd_ha_operator.local.apiproxy import ApiProxy, make_certificate
from tests.support.ports import free_port

#: Far below aiohttp's 60 s default and far above what closing needs when it does not wait.
CLOSE_BOUND_SECONDS = 10.0


@pytest.fixture
async def hanging_api() -> AsyncIterator[str]:
    """An upstream whose every request is a watch that sends its headers and then nothing."""

    async def watch(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await asyncio.sleep(3600)
        return response

    runner = web.ServerRunner(web.Server(watch), handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_closing_a_proxy_does_not_wait_for_an_open_watch(
    hanging_api: str, tmp_path: Path
) -> None:
    proxy = ApiProxy(hanging_api, make_certificate(tmp_path))
    proxy.token = "pod-token"
    await proxy.start()
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE
    async with aiohttp.ClientSession() as session:
        response = await session.get(
            f"https://127.0.0.1:{proxy.port}/apis/coordination.k8s.io/v1/namespaces/x/leases",
            params={"watch": "true", "timeoutSeconds": "60"},
            headers={"Authorization": "Bearer pod-token"},
            ssl=client_tls,
        )
        assert response.status == 200  # the watch is open through the proxy
        # Raises TimeoutError (the test fails) when the close waits for the watch to end.
        await asyncio.wait_for(proxy.close(), timeout=CLOSE_BOUND_SECONDS)
        response.close()
