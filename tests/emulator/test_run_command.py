"""``gocd-ha-operator run`` as a real process, against the API emulator through a kubeconfig."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from gocd_ha_operator.local.emulator import declare_resources
from tests.support.delivery import ROOT
from tests.support.emulator import Harness
from tests.support.ports import free_port

pytestmark = pytest.mark.emulator


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "not-checked"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


async def test_run_reconciles_and_serves_liveness(harness: Harness, tmp_path: Path) -> None:
    declare_resources(harness.emulator)
    port = free_port()
    metrics_port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig(tmp_path / "config", harness.url)),
        "GOCDHA_OPERATOR_IMAGE": "registry.example/op:1",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gocd_ha_operator.cli.main",
            "run",
            "--all-namespaces",
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
            "--log-format",
            "json",
            "--observe-interval",
            "1",
            "--metrics-bind-address",
            f"127.0.0.1:{metrics_port}",
            # One replica here; tests/leases runs two with leader election.
            "--no-leader-election",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await harness.create_cluster()
        try:
            await harness.eventually(lambda: len(harness.children()) == 31, timeout=30)
        except AssertionError:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.to_thread(process.communicate, timeout=30)
            raise AssertionError(output.decode()[-3000:]) from None
        deployment = harness.children()[("Deployment", "ci-gocd-a")]
        agent = deployment["spec"]["template"]["spec"]["containers"][1]
        assert agent["image"] == "registry.example/op:1"

        async def live() -> int:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/healthz") as response,
            ):
                return response.status

        assert await harness.eventually(lambda: True) and await live() == 200

        async def metrics() -> str:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
            ):
                return await response.text()

        text = await metrics()
        assert 'gocdha_reconcile_duration_seconds_count{cluster="ci",namespace="build"} ' in text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    lines = [line for line in output.decode().splitlines() if line.startswith("{")]
    assert lines, output.decode()[-2000:]
    assert all("message" in json.loads(line) for line in lines)
    assert process.returncode == 0, output.decode()[-2000:]


def test_run_needs_a_scope() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gocd_ha_operator.cli.main", "run"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "--namespace NS" in result.stderr and "--all-namespaces" in result.stderr


def test_run_refuses_a_bad_endpoint_override() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gocd_ha_operator.cli.main", "run", "-A"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "GOCDHA_ENDPOINTS": '{"svc": "x"}'},
    )
    assert result.returncode == 2
    assert "GOCDHA_ENDPOINTS" in result.stderr


def test_run_refuses_a_bad_metrics_bind_address() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gocd_ha_operator.cli.main",
            "run",
            "-A",
            "--metrics-bind-address",
            "8081",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "run: --metrics-bind-address '8081': expected ':PORT', 'HOST:PORT' or '0' (off)"
    )
