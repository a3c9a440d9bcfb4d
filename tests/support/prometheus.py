"""A real ``prometheus`` on loopback for the scrape tests: temporary config and data directory,
the shipped rule file loaded, queried through its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

from tests.support.ports import free_port

ROOT: Final = Path(__file__).resolve().parents[2]
RULES: Final = ROOT / "manifests" / "prometheus" / "gocdha-rules.yaml"


class Prometheus:
    """``prometheus`` on loopback with a temporary config and data directory."""

    def __init__(self, target: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "gocd-ha-operator", "static_configs": [{"targets": [target]}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not on PATH: install Debian's prometheus package"
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, "prometheus exited; see prometheus.log"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError("prometheus did not become ready")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            payload = await response.json()
        assert payload["status"] == "success", payload
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result

    async def value(self, expr: str) -> float | None:
        result = await self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    async def eventually(self, expr: str, expected: float, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.value(expr)
            if last == expected:
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"{expr} = {last}, expected {expected}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
