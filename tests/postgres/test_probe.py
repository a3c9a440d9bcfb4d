"""``PostgresClient.refuses_connections``: the TCP probe a switchover polls while its old primary
stops (a closed port refuses; an open one, whatever answers on it, does not). Loopback sockets
only; tests/postgres/test_promotion.py probes a real instance before and after it stops."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.postgres.client import ClientTLS, PostgresClient


def client(port: int) -> PostgresClient:
    return PostgresClient(
        Endpoint("127.0.0.1", port), password="unused", tls=ClientTLS("x", "/nonexistent")
    )


def test_an_open_port_is_not_refused_and_a_closed_one_is() -> None:
    async def run() -> None:
        accepted: list[bool] = []

        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(True)
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            assert not await client(port).refuses_connections()
        await server.wait_closed()
        assert accepted, "the probe connected"
        assert await client(port).refuses_connections()

    asyncio.run(run())


def test_a_port_that_never_answers_counts_as_refusing_within_the_probe_bound() -> None:
    """A listening socket whose backlog is full: the connection attempt hangs (an unreachable
    address in a cluster behaves alike); the probe gives up after a second."""

    async def run() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            fillers = []
            try:
                for _ in range(8):  # fill the backlog (never accepted)
                    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    filler.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        filler.connect(("127.0.0.1", port))
                    fillers.append(filler)
                started = asyncio.get_running_loop().time()
                refused = await client(port).refuses_connections()
                elapsed = asyncio.get_running_loop().time() - started
            finally:
                for filler in fillers:
                    filler.close()
        assert refused
        assert elapsed < 3.0

    asyncio.run(run())
