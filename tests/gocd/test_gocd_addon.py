"""``install-addon``: a real jar served on loopback, checksum verified before anything is placed."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gocd_ha_operator.gocd.addon import (
    AddonInstallError,
    InstallOutcome,
    install_addon,
    jar_name_from_url,
)
from tests.support.ports import free_port

JAR = b"PK\x03\x04" + bytes(range(256)) * 64
JAR_SHA = hashlib.sha256(JAR).hexdigest()
NAME = "go-business-continuity-20.4.0-11749.jar"
CliMain = Callable[[list[str]], int]


class JarServer:
    """A loopback HTTP server with one jar; counts downloads."""

    def __init__(self) -> None:
        self.downloads = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != f"/addons/{NAME}":
                    self.send_error(404)
                    return
                owner.downloads += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(JAR)))
                self.end_headers()
                self.wfile.write(JAR)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str = NAME) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/addons/{name}"


@pytest.fixture
def jar_server() -> Iterator[JarServer]:
    server = JarServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_install_then_no_second_download(jar_server: JarServer, tmp_path: Path) -> None:
    addons = tmp_path / "addons"
    result = install_addon(jar_server.url(), JAR_SHA, addons)
    assert result.outcome is InstallOutcome.INSTALLED
    assert (addons / NAME).read_bytes() == JAR
    assert (addons / NAME).stat().st_mode & 0o777 == 0o640
    assert jar_server.downloads == 1
    again = install_addon(jar_server.url(), JAR_SHA.upper(), addons)
    assert again.outcome is InstallOutcome.ALREADY_INSTALLED
    assert jar_server.downloads == 1
    assert sorted(p.name for p in addons.iterdir()) == [NAME]


def test_checksum_mismatch_installs_nothing(
    jar_server: JarServer, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
) -> None:
    addons = tmp_path / "addons"
    wrong = "0" * 64
    code = cli_main(
        ["install-addon", "--url", jar_server.url(), "--sha256", wrong, "--target", str(addons)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert f"expected sha256 {wrong}" in err
    assert f"sha256 {JAR_SHA}" in err
    assert jar_server.downloads == 1
    assert list(addons.iterdir()) == []  # not even a temp file


def test_wrong_existing_jar_is_replaced(jar_server: JarServer, tmp_path: Path) -> None:
    addons = tmp_path / "addons"
    addons.mkdir()
    (addons / NAME).write_bytes(b"tampered")
    assert install_addon(jar_server.url(), JAR_SHA, addons).outcome is InstallOutcome.INSTALLED
    assert (addons / NAME).read_bytes() == JAR


def test_cli_success_and_http_error(
    jar_server: JarServer, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
) -> None:
    addons = tmp_path / "addons"
    assert (
        cli_main(
            [
                "install-addon",
                "--url",
                jar_server.url(),
                "--sha256",
                JAR_SHA,
                "--target",
                str(addons),
            ]
        )
        == 0
    )
    assert (addons / NAME).is_file()
    missing = jar_server.url("go-business-continuity-0.0.jar")
    assert (
        cli_main(
            [
                "install-addon",
                "--url",
                missing,
                "--sha256",
                JAR_SHA,
                "--target",
                str(tmp_path / "other"),
            ]
        )
        == 1
    )
    assert "HTTP 404" in capsys.readouterr().err
    assert not any((tmp_path / "other").iterdir())


def test_unreachable_server_fails_within_timeout(tmp_path: Path) -> None:
    port = free_port()  # claimed: no other worker is handed it and starts a server there
    with pytest.raises(AddonInstallError, match="download failed"):
        install_addon(f"http://127.0.0.1:{port}/{NAME}", JAR_SHA, tmp_path, timeout=2)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd.jar",
        "ftp://host/a.jar",
        "http://host/",
        "http://host/a.txt",
        "http://host/..%2F..%2Fetc.jar",
        "http://host/.hidden.jar",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(AddonInstallError):
        jar_name_from_url(url)


def test_bad_checksum_argument(tmp_path: Path) -> None:
    with pytest.raises(AddonInstallError, match="64 hexadecimal"):
        install_addon(f"http://127.0.0.1:1/{NAME}", "abc", tmp_path)
