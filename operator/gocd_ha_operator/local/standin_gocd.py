"""A STAND-IN for a GoCD server: it is not GoCD and runs none of GoCD's code.

A real GoCD server (a JVM, its own database migrations, minutes to start) cannot run where the
local kubelet is used (``demo`` on a laptop, CI), but the operator reads a GoCD server's health to
decide whether a side is ready. So a GoCD Deployment at one replica becomes this small aiohttp
server on loopback, serving exactly the endpoint the operator reads:

- ``GET /go/api/v1/health`` -> ``200 {"health": "OK"}``, as GoCD's unauthenticated health API;
- everything else -> 404.

It ships in the package (not in the tests) because the ``demo`` command needs it. The richer
test double with the business-continuity dashboard lives in ``tests/support/standin_gocd.py``.
"""

from __future__ import annotations

from aiohttp import web

from gocd_ha_operator.api.constants import GOCD_HEALTH_PATH


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"health": "OK"})


class StandinGoCDServer:
    """One stand-in GoCD server on ``host:port``, started and stopped in the caller's loop."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def serving(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(GOCD_HEALTH_PATH, _health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Close the listener and every open connection (new connections are refused at once)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
