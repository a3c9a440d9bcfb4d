"""Helpers of the sync agent tests (``tests/gocd``): the agent run in the test's event loop, and
``gocd-ha-operator sync-agent`` run as a process the way the GoCD pod's sidecar runs it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from gocd_ha_operator.gocd.sync_agent import AgentConfig, SyncAgent
from tests.support.tls import ServingFiles

#: Runs the real console entry point, leaving out subcommands not present on this branch.
CLI_SNIPPET = """
import importlib.util, sys
from gocd_ha_operator.cli import main as cli
cli.SUBCOMMANDS = {k: v for k, v in cli.SUBCOMMANDS.items() if importlib.util.find_spec(v[0])}
sys.exit(cli.main(sys.argv[1:]))
"""


def agent_config(
    source: Path, target: Path, token_file: Path, tls: ServingFiles, *, interval: float = 0.1
) -> AgentConfig:
    """Side a's agent on a loopback port the kernel picks, serving ``tls``."""
    return AgentConfig(
        source=source,
        target=target,
        token_file=token_file,
        host="127.0.0.1",
        port=0,
        interval_seconds=interval,
        side="a",
        tls_cert_file=tls.cert_file,
        tls_key_file=tls.key_file,
    )


@contextlib.asynccontextmanager
async def agent_running(config: AgentConfig) -> AsyncIterator[SyncAgent]:
    """The agent running in this event loop, once it listens (5 s at most); stopped on exit
    (10 s at most: an agent that does not stop fails the test)."""
    agent = SyncAgent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.listening.wait(), 5)
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def sync_agent_process(
    source: Path, target: Path, token_file: Path, port: int, side: str, tls: ServingFiles
) -> subprocess.Popen[str]:
    """``gocd-ha-operator sync-agent`` as the pod runs it, on ``127.0.0.1:port``, every 0.2 s;
    its stderr (the log) piped."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI_SNIPPET,
            "sync-agent",
            "--source",
            str(source),
            "--target",
            str(target),
            "--token-file",
            str(token_file),
            "--listen",
            f"127.0.0.1:{port}",
            "--interval",
            "0.2",
            "--side",
            side,
            "--tls-cert-file",
            str(tls.cert_file),
            "--tls-key-file",
            str(tls.key_file),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
