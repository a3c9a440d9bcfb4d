"""A STAND-IN for a GoCD server: it is not GoCD and runs none of GoCD's code.

A real GoCD server (a JVM, its own database migrations, minutes to start) cannot run where the
local kubelet is used (``demo`` on a laptop, CI), but the operator reads a GoCD server's health to
decide whether a side is ready. So a GoCD Deployment at one replica becomes this small aiohttp
server on loopback, serving exactly the endpoint the operator reads:

- ``GET /go/api/v1/health`` -> ``200 {"health": "OK"}``, as GoCD's unauthenticated health API;
- everything else -> 404.

Like GoCD, it connects to its database as ``config/db.properties`` says (the same file the
operator renders for the real server): the JDBC URL's host, port and database, its ``sslmode``
and ``sslrootcert`` (TLS verified against the Service name, docs/architecture.md §17), the user
and password. It holds one idle session (``application_name`` ``gocd-standin``) and reconnects
when it is ended; its health does not depend on it. Two things a node would provide are given to
it by the kubelet: the Service addresses (``GOCDHA_ENDPOINTS``, as for the operator outside a
cluster; the name stays the TLS host, the address goes to libpq's ``hostaddr``) and the
container's mount table (``--mount CONTAINER_PATH=LOCAL_PATH``), to find a file such as the CA
that ``db.properties`` names by its container path.

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
import logging
import os
import re
import secrets
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

import psycopg
from aiohttp import web

from gocd_ha_operator.api.constants import (
    DB_PROPERTIES_KEY,
    ENV_ENDPOINTS,
    GOCD_CONFIG_DIR,
    GOCD_HEALTH_PATH,
)
from gocd_ha_operator.kube.endpoints import EndpointConfigError, parse_overrides

logger = logging.getLogger(__name__)
#: The session name the stand-in's database connection shows in ``pg_stat_activity``.
APPLICATION_NAME: Final = "gocd-standin"
DB_RETRY_SECONDS: Final = 2.0

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


def parse_properties(text: str) -> dict[str, str]:
    """A Java ``.properties`` file (what GoCD reads): ``key=value`` lines, ``#``/``!`` comments,
    backslash escapes (``\\=``, ``\\:``, ``\\uXXXX``)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or line[0] in "#!":
            continue
        key, value, current = "", "", []
        escaped, in_key, skip_blanks = False, True, False
        index = 0
        while index < len(line):
            char = line[index]
            index += 1
            if skip_blanks and not escaped and char in " \t":
                continue
            skip_blanks = False
            if escaped:
                if char == "u" and index + 4 <= len(line):
                    current.append(chr(int(line[index : index + 4], 16)))
                    index += 4
                else:
                    current.append({"n": "\n", "t": "\t"}.get(char, char))
                escaped = False
            elif char == "\\":
                escaped = True
            elif in_key and char in "=:":
                key, current, in_key, skip_blanks = "".join(current).strip(), [], False, True
            else:
                current.append(char)
        if in_key:
            key = "".join(current).strip()
        else:
            value = "".join(current)
        out[key] = value
    return out


def libpq_params(
    properties: Mapping[str, str],
    endpoints: Mapping[str, Any],
    mounts: Mapping[str, Path],
) -> dict[str, Any]:
    """libpq parameters equivalent to GoCD's JDBC URL and credentials in ``db.properties``.

    ``endpoints`` maps ``<ns>/<svc>:<port>`` to a reachable address (``GOCDHA_ENDPOINTS``);
    ``mounts`` maps container paths to local ones. Raises ``ValueError`` naming what is wrong.
    """
    url = properties.get("db.url", "")
    match = re.fullmatch(r"jdbc:postgresql://([^/:?]+)(?::(\d+))?/([^?]+)(?:\?(.*))?", url)
    if match is None:
        raise ValueError(f"db.url {url!r} is not a jdbc:postgresql://host:port/db URL")
    host, port_text, database, query = match.groups()
    port = int(port_text or 5432)
    options = {key: values[-1] for key, values in parse_qs(query or "").items()}
    params: dict[str, Any] = {
        "host": host,
        "port": port,
        "dbname": database,
        "user": properties.get("db.user", ""),
        "password": properties.get("db.password", ""),
        "application_name": APPLICATION_NAME,
        "connect_timeout": 3,
    }
    if options.get("ssl") == "true" or "sslmode" in options:
        params["sslmode"] = options.get("sslmode", "verify-full")
    if "sslrootcert" in options:
        params["sslrootcert"] = _local_path(options["sslrootcert"], mounts)
    parts = host.split(".")
    namespace = parts[1] if len(parts) >= 3 and parts[2] == "svc" else ""
    endpoint = endpoints.get(f"{namespace}/{parts[0]}:{port}")
    if endpoint is not None:
        params["hostaddr"] = endpoint.host
        params["port"] = endpoint.port
    return params


def _local_path(path: str, mounts: Mapping[str, Path]) -> str:
    for container, local in sorted(mounts.items(), key=lambda item: -len(item[0])):
        prefix = container.rstrip("/")
        if path == prefix or path.startswith(prefix + "/"):
            return str(local) + path[len(prefix) :]
    return path


async def hold_database_session(
    properties_file: Path, mounts: Mapping[str, Path], stop: asyncio.Event
) -> None:
    """Keep one session open as ``db.properties`` says, reconnecting when it ends."""
    try:
        endpoints: Mapping[str, Any] = parse_overrides(os.environ.get(ENV_ENDPOINTS))
    except EndpointConfigError as exc:
        print(f"stand-in GoCD: {exc}; connecting to the names as written", flush=True)
        endpoints = {}
    last_error = ""
    while not stop.is_set():
        try:
            params = libpq_params(parse_properties(properties_file.read_text()), endpoints, mounts)
            async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as conn:
                cursor = await conn.execute(
                    "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )
                row = await cursor.fetchone()
                print(
                    f"stand-in GoCD: connected to its database {params['host']} "
                    f"(TLS: {row[1] if row and row[0] else 'no'})",
                    flush=True,
                )
                last_error = ""
                while not stop.is_set():
                    await conn.execute("SELECT 1")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), DB_RETRY_SECONDS)
        except (OSError, ValueError, psycopg.Error) as exc:
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if error != last_error:
                print(f"stand-in GoCD: no database connection: {error}", flush=True)
                last_error = error
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), DB_RETRY_SECONDS)


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


async def serve(
    host: str,
    port: int,
    *,
    properties_file: Path | None = None,
    mounts: Mapping[str, Path] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (a container's stop); hold a database session as
    ``properties_file`` (``db.properties``) says, when it exists."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = StandinGoCDServer(host, port)
    await server.start()
    print(f"stand-in GoCD server (health only) listening on {host}:{port}", flush=True)
    database: asyncio.Task[None] | None = None
    if properties_file is not None and properties_file.exists():
        database = asyncio.create_task(hold_database_session(properties_file, mounts or {}, stop))
    try:
        await stop.wait()
    finally:
        if database is not None:
            database.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await database
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A stand-in GoCD server: health endpoint only.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--data-dir", type=Path, help="GoCD's /godata (a config is made if none)")
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="CONTAINER_PATH=LOCAL_PATH",
        help="where a container path is here (to find files db.properties names); repeatable",
    )
    args = parser.parse_args(argv)
    host, _sep, port = args.listen.rpartition(":")
    mounts = {}
    for item in args.mount:
        container, sep, local = item.partition("=")
        if not sep:
            parser.error(f"--mount {item!r} is not CONTAINER_PATH=LOCAL_PATH")
        mounts[container] = Path(local)
    properties_file = None
    if args.data_dir is not None:
        written = ensure_config(args.data_dir)
        if written:
            print(f"created a minimal GoCD configuration: {', '.join(written)}", flush=True)
        # db.properties is mounted on its own (a subPath of a Secret), like in the GoCD pod.
        properties_file = Path(
            _local_path(f"{GOCD_CONFIG_DIR}/{DB_PROPERTIES_KEY}", mounts)
            if mounts
            else args.data_dir / "config" / DB_PROPERTIES_KEY
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, int(port), properties_file=properties_file, mounts=mounts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
