"""Cold mode end to end: the agent mirrors side a, a is lost, b restores and becomes primary."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gocd_ha_operator.gocd.client import ConfigSyncReading, read_sync_agent_status
from gocd_ha_operator.gocd.sync_agent import AgentConfig
from gocd_ha_operator.gocd.token import BCToken
from tests.support.sync_agent import agent_config, agent_running
from tests.support.tls import ServingFiles, agent_name, client_context

TOKEN = BCToken("gocdha", "e2e-secret")


def synced_view(root: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    keep = {
        "config/cruise-config.xml",
        "config/cipher.aes",
        "config/jetty.xml",
        "config/go.feature.toggles",
    }
    return {n: c for n, c in files.items() if n in keep or n.startswith("plugins/external/")}


async def run_agent_until_synced(
    config: AgentConfig, tls: ServingFiles, expect: Callable[[ConfigSyncReading], bool]
) -> None:
    async with agent_running(config) as agent:
        url = f"https://127.0.0.1:{agent.port}"
        for _ in range(250):
            status = await read_sync_agent_status(
                url, TOKEN, verify=tls.verification(), max_age_seconds=30
            )
            if status["synced"] and expect(status):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"agent never reported the expected sync: {status}")


async def test_mirror_promote_restore(
    godata: Path, tmp_path: Path, cli_main: Callable[[list[str]], int], agent_tls: ServingFiles
) -> None:
    token_file = tmp_path / "business-continuity-token"
    token_file.write_text(f"{TOKEN.user}:{TOKEN.password}\n")
    shared = tmp_path / "shared" / "gocd"

    # Side b: a standby data dir as the operator creates it, with its own db.properties.
    side_b = tmp_path / "godata-b"
    (side_b / "config").mkdir(parents=True)
    (side_b / "config/db.properties").write_text("db.url=jdbc:postgresql://ci-pg-b:5432/gocd\n")

    # 1. Side a is primary: its agent mirrors; the primary changes; the change is mirrored.
    tls_files = {"tls_cert_file": agent_tls.cert_file, "tls_key_file": agent_tls.key_file}
    config_a = AgentConfig(godata, shared, token_file, "127.0.0.1", 0, 0.1, "a", **tls_files)
    (godata / "plugins/external/late-plugin.jar").write_bytes(b"PK late")
    await run_agent_until_synced(
        config_a,
        agent_tls,
        lambda s: any(f["name"].endswith("late-plugin.jar") for f in s["files"]),
    )

    # 2. Side a is lost (its disk with it); the operator promotes b. b's init container restores.
    expected = synced_view(godata)
    shutil.rmtree(godata)
    assert (
        cli_main(["restore", "--source", str(shared), "--target", str(side_b), "--side", "b"]) == 0
    )
    assert synced_view(side_b) == expected
    assert "ci-pg-b" in (side_b / "config/db.properties").read_text()

    # 3. b is primary now: its own agent takes over the mirror; b restarting keeps its files.
    (side_b / "config/cruise-config.xml").write_text("<cruise edited-on='b'/>\n")
    config_b = AgentConfig(side_b, shared, token_file, "127.0.0.1", 0, 0.1, "b", **tls_files)
    await run_agent_until_synced(config_b, agent_tls, lambda s: True)
    manifest = json.loads((shared / "manifest.json").read_text())
    assert manifest["side"] == "b"
    assert manifest["generation"] > 1
    (side_b / "config/cruise-config.xml").write_text("<cruise edited-after-last-sync/>\n")
    assert (
        cli_main(["restore", "--source", str(shared), "--target", str(side_b), "--side", "b"]) == 0
    )
    assert (side_b / "config/cruise-config.xml").read_text() == "<cruise edited-after-last-sync/>\n"


async def test_status_never_serves_content_even_for_odd_paths(
    godata: Path, tmp_path: Path, agent_tls: ServingFiles
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN.user}={TOKEN.password}")
    async with agent_running(agent_config(godata, tmp_path / "m", token_file, agent_tls)) as agent:
        secret = (godata / "config/cipher.aes").read_bytes().strip()
        async with aiohttp.ClientSession() as session:
            for path in ["/config/cipher.aes", "/objects/", "/status?file=config/cipher.aes"]:
                url = f"https://127.0.0.1:{agent.port}{path}"
                async with session.get(
                    url,
                    headers={"Authorization": TOKEN.basic_auth_header()},
                    ssl=client_context(agent_tls.ca_pem),
                    server_hostname=agent_name(),
                ) as r:
                    assert secret not in await r.read()
