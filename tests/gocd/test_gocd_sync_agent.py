"""The Cold-mode sync agent on real directories: the real ``SyncAgent.run`` loop and server."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gocd_ha_operator.gocd import mirror
from gocd_ha_operator.gocd.client import read_sync_agent_status
from gocd_ha_operator.gocd.mirror import read_manifest, sha256_of
from gocd_ha_operator.gocd.sync_agent import SyncAgent
from gocd_ha_operator.gocd.token import BCToken
from tests.support.ports import free_port
from tests.support.sync_agent import agent_config, agent_running, sync_agent_process
from tests.support.tls import ServingFiles, agent_name, client_context

TOKEN = BCToken("gocdha", "sync-agent-secret")
INTERVAL = 0.3
MIRRORED = {
    "config/cruise-config.xml",
    "config/cipher.aes",
    "config/jetty.xml",
    "config/go.feature.toggles",
    "plugins/external/kubernetes-elastic-agent.jar",
    "plugins/external/yaml-config-plugin.jar",
}


@dataclass
class RunningAgent:
    agent: SyncAgent
    source: Path
    target: Path
    url: str
    tls: ServingFiles

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> float:
        """Wait until ``predicate()`` holds; return how long it took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not predicate():
            if loop.time() - started > timeout:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.02)
        return loop.time() - started

    async def next_cycles(self, count: int = 1) -> None:
        target = self.agent.cycles + count
        await self.wait_for(lambda: self.agent.cycles >= target)

    def manifest_files(self) -> dict[str, str]:
        manifest = read_manifest(self.target)
        assert manifest is not None
        return {name: entry.sha256 for name, entry in manifest.files.items()}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token" / "business-continuity-token"
    path.parent.mkdir()
    path.write_text(f"{TOKEN.user} = {TOKEN.password}\n")
    return path


@pytest.fixture
async def running(
    godata: Path, tmp_path: Path, token_file: Path, agent_tls: ServingFiles
) -> AsyncIterator[RunningAgent]:
    target = tmp_path / "shared" / "gocd"
    config = agent_config(godata, target, token_file, agent_tls, interval=INTERVAL)
    async with agent_running(config) as agent:
        running = RunningAgent(agent, godata, target, f"https://127.0.0.1:{agent.port}", agent_tls)
        await running.next_cycles(1)
        yield running


async def test_initial_mirror(running: RunningAgent) -> None:
    files = running.manifest_files()
    assert set(files) == MIRRORED  # not db.properties, bundled plugins or artifacts
    for name, sha in files.items():
        assert sha256_of(running.source / name)[0] == sha
        obj = running.target / "objects" / sha
        assert obj.read_bytes() == (running.source / name).read_bytes()
        assert obj.stat().st_mode & 0o777 == 0o640
    assert (running.target / "manifest.json").stat().st_mode & 0o777 == 0o640
    assert running.target.stat().st_mode & 0o777 == 0o750
    assert (running.target / "objects").stat().st_mode & 0o777 == 0o750
    manifest = read_manifest(running.target)
    assert manifest is not None
    assert (manifest.side, manifest.format_version) == ("a", 1)
    assert not any(p.name.startswith(".tmp-") for p in (running.target / "objects").iterdir())


async def test_change_propagates_within_one_interval(running: RunningAgent) -> None:
    config = running.source / "config/cruise-config.xml"
    cycles_before = running.agent.cycles
    config.write_text("<cruise schemaVersion='139'><pipelines group='new'/></cruise>\n")
    new_sha = sha256_of(config)[0]
    took = await running.wait_for(
        lambda: running.manifest_files()["config/cruise-config.xml"] == new_sha
    )
    # The cycle running at the time of the write may miss it; the next one (started at most one
    # interval later) must not. Counted in cycles, so a slow machine cannot make this flaky ...
    assert running.agent.cycles - cycles_before <= 2
    # ... and in wall-clock time with room for that one cycle.
    assert took <= INTERVAL + 2.0


async def test_added_and_removed_plugins(running: RunningAgent) -> None:
    old = running.manifest_files()["plugins/external/yaml-config-plugin.jar"]
    (running.source / "plugins/external/yaml-config-plugin.jar").unlink()
    (running.source / "plugins/external/new-plugin.jar").write_bytes(b"PK new")
    await running.wait_for(
        lambda: "plugins/external/yaml-config-plugin.jar" not in running.manifest_files()
    )
    files = running.manifest_files()
    assert "plugins/external/new-plugin.jar" in files
    # Removed from the mirror too: the stored copy goes right after the new manifest is written
    # (never before: a crash in between must leave the previous manifest's files intact).
    await running.wait_for(lambda: not (running.target / "objects" / old).exists())


async def status(
    running: RunningAgent, url: str, auth: str | None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": auth} if auth else {}
    tls = {"ssl": client_context(running.tls.ca_pem), "server_hostname": agent_name()}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, **tls) as resp,  # type: ignore[arg-type]
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def test_status_requires_the_token(running: RunningAgent) -> None:
    url = running.url + "/status"
    code, headers, _ = await status(running, url, None)
    assert code == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    code, _, _ = await status(running, url, BCToken("gocdha", "wrong").basic_auth_header())
    assert code == 401
    code, _, _ = await status(running, url, BCToken("other", TOKEN.password).basic_auth_header())
    assert code == 401
    code, _, body = await status(running, url, TOKEN.basic_auth_header())
    assert code == 200
    payload = json.loads(body)
    files = {f["name"]: f for f in payload["files"]}
    assert set(files) == MIRRORED
    for name, entry in files.items():
        assert entry["sourceSha256"] == entry["mirrorSha256"] == sha256_of(running.source / name)[0]
    assert payload["side"] == "a"
    assert payload["errors"] == []
    assert payload["lastSyncTime"] is not None
    # No file content, no secret.
    for name in MIRRORED:
        assert (running.source / name).read_bytes()[:20] not in body
    assert TOKEN.password.encode() not in body


async def test_everything_else_is_404(running: RunningAgent) -> None:
    auth = TOKEN.basic_auth_header()
    async with aiohttp.ClientSession() as session:
        for method, path in [
            ("GET", "/"),
            ("GET", "/objects"),
            ("GET", "/manifest.json"),
            ("GET", "/status/../manifest.json"),
            ("POST", "/status"),
            ("PUT", "/status"),
        ]:
            async with session.request(
                method,
                running.url + path,
                headers={"Authorization": auth},
                ssl=client_context(running.tls.ca_pem),
                server_hostname=agent_name(),
            ) as r:
                assert r.status == 404, (method, path)


async def test_operator_reads_the_agent(running: RunningAgent) -> None:
    verify = running.tls.verification()
    result = await read_sync_agent_status(running.url, TOKEN, verify=verify, max_age_seconds=60)
    assert (result["mode"], result["synced"], result["reason"]) == ("Cold", True, "Synced")
    assert len(result["files"]) == len(MIRRORED)
    wrong = await read_sync_agent_status(
        running.url, BCToken("gocdha", "x"), verify=verify, max_age_seconds=60
    )
    assert (wrong["synced"], wrong["reason"]) == (False, "Unauthorized")


async def test_errors_are_reported_and_the_loop_goes_on(
    running: RunningAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = running.manifest_files()
    real_copy = mirror.copy_hashing

    def disk_full(src: Any, dst: Any) -> tuple[str, int]:
        raise OSError(errno.ENOSPC, "No space left on device", "/shared/gocd/objects/.tmp-x")

    monkeypatch.setattr(mirror, "copy_hashing", disk_full)
    (running.source / "config/cruise-config.xml").write_text("<cruise changed='1'/>\n")
    await running.next_cycles(2)
    result = await read_sync_agent_status(
        running.url, TOKEN, verify=running.tls.verification(), max_age_seconds=60
    )
    assert result["reason"] == "SyncErrors"
    assert any("No space left on device" in e for e in result["errors"])
    assert running.manifest_files() == before  # previous mirror kept
    assert not any(p.name.startswith(".tmp-") for p in (running.target / "objects").iterdir())

    monkeypatch.setattr(mirror, "copy_hashing", real_copy)
    await running.next_cycles(2)
    result = await read_sync_agent_status(
        running.url, TOKEN, verify=running.tls.verification(), max_age_seconds=60
    )
    assert (result["reason"], result["errors"]) == ("Synced", [])


async def test_missing_source_config_is_an_error_not_a_crash(running: RunningAgent) -> None:
    config = running.source / "config/cruise-config.xml"
    content = config.read_bytes()
    config.unlink()
    await running.next_cycles(2)
    result = await read_sync_agent_status(
        running.url, TOKEN, verify=running.tls.verification(), max_age_seconds=60
    )
    assert result["reason"] == "SyncErrors"
    assert any("cruise-config.xml does not exist" in e for e in result["errors"])
    assert "config/cruise-config.xml" in running.manifest_files()
    config.write_bytes(content)
    await running.next_cycles(2)
    assert running.agent.state.errors == type(running.agent.state.errors)()


def test_sigterm_stops_cleanly(
    godata: Path, tmp_path: Path, token_file: Path, agent_tls: ServingFiles
) -> None:
    target = tmp_path / "shared" / "gocd"
    port = free_port()
    proc = sync_agent_process(godata, target, token_file, port, "b", agent_tls)
    try:
        deadline = time.monotonic() + 20
        while not (target / "manifest.json").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "sync agent stopped" in stderr
    assert TOKEN.password not in stderr
    manifest = read_manifest(target)
    assert manifest is not None and manifest.side == "b"


def test_cli_refuses_a_bad_token_file(
    godata: Path,
    tmp_path: Path,
    cli_main: Callable[[list[str]], int],
    capsys: pytest.CaptureFixture[str],
    agent_tls: ServingFiles,
) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("a = 1\nb = 2\n")
    code = cli_main(
        [
            "sync-agent",
            "--source",
            str(godata),
            "--target",
            str(tmp_path / "t"),
            "--token-file",
            str(bad),
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "1",
            "--tls-cert-file",
            str(agent_tls.cert_file),
            "--tls-key-file",
            str(agent_tls.key_file),
        ]
    )
    assert code == 2
    assert "should contain exactly one credential" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(cli_main: Callable[[list[str]], int]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["sync-agent", "--listen", "nonsense", "--interval", "1"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        cli_main(["sync-agent", "--listen", "127.0.0.1:1", "--interval", "0"])


def test_first_cycle_recopies_everything(godata: Path, tmp_path: Path) -> None:
    """A damaged object is repaired by an agent's first cycle (it trusts no earlier manifest)."""
    target = tmp_path / "mirror"
    first = mirror.snapshot(godata, target, side="a", now=datetime.now(UTC), previous=None)
    damaged = target / "objects" / first.files["config/cipher.aes"].sha256
    os.chmod(damaged, 0o600)
    damaged.write_bytes(b"bit rot")
    second = mirror.snapshot(
        godata, target, side="a", now=datetime.now(UTC), previous=None, after_generation=1
    )
    assert damaged.read_bytes() == (godata / "config/cipher.aes").read_bytes()
    assert second.generation == 2
