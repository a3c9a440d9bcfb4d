"""Fixtures of the GoCD-side tests: a fake ``/godata`` tree, the CLI entry point and the sync
agent's serving certificate."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# ``tests.support`` is imported by its package name; make the repository root importable however
# pytest was started (``pytest`` alone does not put the working directory on ``sys.path``).
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from gocd_ha_operator.cli import main as cli  # noqa: E402
from tests.support.files import WriteFile, write  # noqa: E402
from tests.support.tls import ServingFiles, write_sync_agent_files  # noqa: E402


@pytest.fixture
def cli_main(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """``gocd_ha_operator.cli.main.main``, the real parser with the real ``SUBCOMMANDS`` entries.

    ``cli.build_parser`` imports every registered subcommand module. Subcommands registered by
    other work in progress (e.g. ``render``) may not exist on this branch yet; only those are
    left out, so the GoCD subcommands are always exercised through the real entry point.
    """
    available = {
        name: entry
        for name, entry in cli.SUBCOMMANDS.items()
        if importlib.util.find_spec(entry[0]) is not None
    }
    monkeypatch.setattr(cli, "SUBCOMMANDS", available)
    return cli.main


@pytest.fixture
def write_file() -> WriteFile:
    return write


@pytest.fixture
def godata(tmp_path: Path) -> Path:
    """A primary GoCD data dir with the files business continuity syncs, and some it must not."""
    root = tmp_path / "godata-a"
    write(root / "config/cruise-config.xml", "<cruise schemaVersion='139'><server/></cruise>\n")
    write(root / "config/cipher.aes", "0123456789abcdef0123456789abcdef\n")
    write(root / "config/jetty.xml", "<Configure/>\n")
    write(root / "config/go.feature.toggles", '{"version": "1", "toggles": []}\n')
    write(root / "config/db.properties", "db.password=per-side-secret\n")  # never mirrored
    write(root / "plugins/external/kubernetes-elastic-agent.jar", b"PK\x03\x04k8s" * 1000)
    write(root / "plugins/external/yaml-config-plugin.jar", b"PK\x03\x04yaml" * 500)
    write(root / "plugins/bundled/gocd-filebased-authentication-plugin.jar", b"PK bundled")
    write(root / "artifacts/pipelines/p/1/s/1/j/log.txt", "artifact")
    return root


@pytest.fixture
def agent_tls(tmp_path: Path) -> ServingFiles:
    """The sync agent's certificate and key as the operator issues them, from a fresh CA."""
    return write_sync_agent_files(tmp_path / "sync-agent-tls")
