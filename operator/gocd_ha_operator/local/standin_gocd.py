"""A STAND-IN for a GoCD server: it is not GoCD and runs none of GoCD's code.

A real GoCD server (a JVM, its own database migrations, minutes to start) cannot run where the
local kubelet is used (``demo`` on a laptop, CI), but the operator reads a GoCD server's health to
decide whether a side is ready. So a GoCD Deployment at one replica becomes this small aiohttp
server on loopback, serving exactly the endpoint the operator reads:

- ``GET /go/api/v1/health`` -> ``200 {"health": "OK"}``, as GoCD's unauthenticated health API;
- everything else -> 404.

Like a GoCD server on its first start, it creates a minimal configuration in its data dir
(``config/cruise-config.xml`` and ``config/cipher.aes``) when there is none, and never touches one
that exists (restored from the Cold mirror, or written by an earlier start). That gives the
Cold-mode sync agent beside it real files to mirror, and the ``restore`` init container of the
next primary real files to restore.

The local kubelet runs it as the GoCD server container's process
(``python -m gocd_ha_operator.local.standin_gocd --listen 127.0.0.1:<port> --data-dir <godata>``),
so it is stopped, killed and restarted like any container.

It ships in the package (not in the tests) because the ``demo`` command needs it. The richer
test double with the business-continuity dashboard lives in ``tests/support/standin_gocd.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path
from typing import Final

from aiohttp import web

from gocd_ha_operator.api.constants import GOCD_HEALTH_PATH

#: The smallest configuration GoCD itself accepts: a server id and no pipelines.
CRUISE_CONFIG: Final = """<?xml version="1.0" encoding="utf-8"?>
<cruise xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        xsi:noNamespaceSchemaLocation="cruise-config.xsd" schemaVersion="139">
  <server agentAutoRegisterKey="{agent_key}" webhookSecret="{webhook}"
          serverId="{server_id}" tokenGenerationKey="{token_key}" />
</cruise>
"""
#: GoCD's config files are owner (and group) only: ``cipher.aes`` decrypts every secret.
CONFIG_FILE_MODE: Final = 0o640


def ensure_config(data_dir: Path) -> list[str]:
    """Write ``config/cruise-config.xml`` and ``config/cipher.aes`` under ``data_dir`` when missing
    (as GoCD does on its first start); returns the names written. Existing files are kept."""
    config = data_dir / "config"
    config.mkdir(mode=0o750, parents=True, exist_ok=True)
    contents = {
        "cruise-config.xml": CRUISE_CONFIG.format(
            agent_key=secrets.token_hex(16),
            webhook=secrets.token_hex(16),
            server_id=secrets.token_hex(16),
            token_key=secrets.token_hex(16),
        ),
        "cipher.aes": secrets.token_hex(16) + "\n",
    }
    written = []
    for name, text in contents.items():
        path = config / name
        if path.exists():
            continue
        temp = config / f".{name}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CONFIG_FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        temp.replace(path)
        written.append(name)
    return written


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


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT (a container's stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = StandinGoCDServer(host, port)
    await server.start()
    print(f"stand-in GoCD server (health only) listening on {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A stand-in GoCD server: health endpoint only.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--data-dir", type=Path, help="GoCD's /godata (a config is made if none)")
    args = parser.parse_args(argv)
    host, _sep, port = args.listen.rpartition(":")
    if args.data_dir is not None:
        written = ensure_config(args.data_dir)
        if written:
            print(f"created a minimal GoCD configuration: {', '.join(written)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
