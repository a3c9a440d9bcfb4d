"""``restore``: verify the mirror, refuse a bad one untouched, and put a good one in place."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gocd_ha_operator.gocd import mirror
from gocd_ha_operator.gocd.mirror import read_manifest, snapshot
from gocd_ha_operator.gocd.restore import RestoreOutcome, RestoreRefusedError, restore

CliMain = Callable[[list[str]], int]


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` with its content (for "untouched" / "identical")."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def synced_view(root: Path) -> dict[str, bytes]:
    """The files of a GoCD data dir that the mirror is responsible for."""
    return {
        name: content
        for name, content in tree(root).items()
        if (name.startswith("plugins/external/") and name.endswith(".jar"))
        or name in {f"config/{f}" for f in mirror.CONFIG_FILES}
    }


@pytest.fixture
def mirror_dir(godata: Path, tmp_path: Path) -> Path:
    target = tmp_path / "shared" / "gocd"
    snapshot(godata, target, side="a", now=datetime.now(UTC), previous=None)
    return target


@pytest.fixture
def standby_godata(tmp_path: Path) -> Path:
    """The standby's own data dir: its own db.properties and an outdated config and plugin."""
    root = tmp_path / "godata-b"
    (root / "config").mkdir(parents=True)
    (root / "config/db.properties").write_text("db.url=jdbc:postgresql://ci-pg-b:5432/gocd\n")
    (root / "config/cruise-config.xml").write_text("<cruise old='yes'/>\n")
    (root / "plugins/external").mkdir(parents=True)
    (root / "plugins/external/removed-on-primary.jar").write_bytes(b"PK old")
    (root / "plugins/external/README.txt").write_text("not a plugin, left alone")
    return root


def test_restore_into_a_standby(mirror_dir: Path, godata: Path, standby_godata: Path) -> None:
    result = restore(mirror_dir, standby_godata, side="b")
    assert result.outcome is RestoreOutcome.RESTORED
    assert synced_view(standby_godata) == synced_view(godata)
    assert result.removed == ("plugins/external/removed-on-primary.jar",)
    assert (standby_godata / "plugins/external/README.txt").exists()
    # The standby's own db.properties is not the primary's.
    assert "ci-pg-b" in (standby_godata / "config/db.properties").read_text()
    assert (standby_godata / "config/cipher.aes").stat().st_mode & 0o777 == 0o640
    source_mtime = (godata / "config/cruise-config.xml").stat().st_mtime_ns
    assert (standby_godata / "config/cruise-config.xml").stat().st_mtime_ns == source_mtime
    assert not any(p.name.startswith(".tmp-") for p in standby_godata.rglob("*"))


def test_no_manifest_is_nothing_to_restore(
    tmp_path: Path, standby_godata: Path, cli_main: CliMain, caplog: pytest.LogCaptureFixture
) -> None:
    before = tree(standby_godata)
    caplog.set_level("INFO")
    code = cli_main(
        [
            "restore",
            "--source",
            str(tmp_path / "empty"),
            "--target",
            str(standby_godata),
            "--side",
            "b",
        ]
    )
    assert code == 0
    assert "nothing to restore" in caplog.text
    assert tree(standby_godata) == before


def test_own_mirror_is_not_restored(
    mirror_dir: Path, standby_godata: Path, cli_main: CliMain, caplog: pytest.LogCaptureFixture
) -> None:
    before = tree(standby_godata)
    caplog.set_level("INFO")
    code = cli_main(
        ["restore", "--source", str(mirror_dir), "--target", str(standby_godata), "--side", "a"]
    )
    assert code == 0
    assert "mirror was written by this side; local files are newer" in caplog.text
    assert tree(standby_godata) == before


def test_tampered_file_is_refused_and_target_untouched(
    mirror_dir: Path, standby_godata: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = read_manifest(mirror_dir)
    assert manifest is not None
    victim = mirror_dir / "objects" / manifest.files["config/cipher.aes"].sha256
    os.chmod(victim, 0o600)
    victim.write_bytes(b"x" * manifest.files["config/cipher.aes"].size)  # same size, other bytes
    before = tree(standby_godata)
    code = cli_main(
        ["restore", "--source", str(mirror_dir), "--target", str(standby_godata), "--side", "b"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "config/cipher.aes" in err and "SHA-256" in err and "left untouched" in err
    assert "x" * 10 not in err  # no content in the message
    assert tree(standby_godata) == before


def test_truncated_and_missing_objects_are_refused(mirror_dir: Path, standby_godata: Path) -> None:
    manifest = read_manifest(mirror_dir)
    assert manifest is not None
    before = tree(standby_godata)
    jar = manifest.files["plugins/external/kubernetes-elastic-agent.jar"]
    obj = mirror_dir / "objects" / jar.sha256
    content = obj.read_bytes()
    os.chmod(obj, 0o600)
    obj.write_bytes(content[:100])
    with pytest.raises(RestoreRefusedError, match=r"kubernetes-elastic-agent\.jar.*bytes"):
        restore(mirror_dir, standby_godata, side="b")
    obj.unlink()
    with pytest.raises(RestoreRefusedError, match="missing"):
        restore(mirror_dir, standby_godata, side="b")
    assert tree(standby_godata) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(formatVersion=99), "formatVersion"),
        (
            lambda m: m["files"].update({"../../etc/passwd": m["files"]["config/cipher.aes"]}),
            "not one the mirror may hold",
        ),
        (
            lambda m: m["files"].update({"config/db.properties": m["files"]["config/cipher.aes"]}),
            "not one the mirror may hold",
        ),
        (lambda m: m["files"]["config/cipher.aes"].update(sha256="../x"), "sha256"),
    ],
)
def test_manifest_that_cannot_be_trusted_is_refused(
    mirror_dir: Path, standby_godata: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = mirror_dir / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    before = tree(standby_godata)
    with pytest.raises(RestoreRefusedError, match=message):
        restore(mirror_dir, standby_godata, side="b")
    assert tree(standby_godata) == before


def test_garbage_manifest_is_refused(mirror_dir: Path, standby_godata: Path) -> None:
    (mirror_dir / "manifest.json").write_text("{not json")
    with pytest.raises(RestoreRefusedError, match="not valid JSON"):
        restore(mirror_dir, standby_godata)


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way handles it."""


def test_crash_between_files_and_manifest_keeps_previous_mirror_valid(
    godata: Path, mirror_dir: Path, standby_godata: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation_1 = synced_view(godata)
    manifest_1 = (mirror_dir / "manifest.json").read_bytes()

    # The primary changes: new config, a plugin removed, a plugin added.
    (godata / "config/cruise-config.xml").write_text("<cruise generation='2'/>\n")
    (godata / "plugins/external/yaml-config-plugin.jar").unlink()
    (godata / "plugins/external/added.jar").write_bytes(b"PK added")

    def crash(*_args: object) -> None:
        raise SimulatedCrash

    monkeypatch.setattr(mirror, "write_manifest", crash)
    (standby_godata / "config/.tmp-1-abc").write_bytes(b"left by an interrupted restore")
    with pytest.raises(SimulatedCrash):
        snapshot(godata, mirror_dir, side="a", now=datetime.now(UTC), previous=None)
    monkeypatch.undo()

    # The new objects were written ...
    new_sha = hashlib.sha256(b"<cruise generation='2'/>\n").hexdigest()
    assert (mirror_dir / "objects" / new_sha).exists()
    # ... but the manifest in force is the previous one, and restore gives generation 1 exactly.
    assert (mirror_dir / "manifest.json").read_bytes() == manifest_1
    result = restore(mirror_dir, standby_godata, side="b")
    assert result.outcome is RestoreOutcome.RESTORED
    assert synced_view(standby_godata) == generation_1
    assert not (standby_godata / "config/.tmp-1-abc").exists()

    # The next cycle completes: generation 2 in force and the leftovers of 1 cleaned up.
    manifest_2 = snapshot(
        godata, mirror_dir, side="a", now=datetime.now(UTC), previous=None, after_generation=1
    )
    assert manifest_2.generation == 2
    referenced = {e.sha256 for e in manifest_2.files.values()}
    assert {p.name for p in (mirror_dir / "objects").iterdir()} == referenced


def test_cli_target_must_exist(mirror_dir: Path, tmp_path: Path, cli_main: CliMain) -> None:
    assert (
        cli_main(["restore", "--source", str(mirror_dir), "--target", str(tmp_path / "nope")]) == 2
    )


def test_own_mirror_is_restored_into_a_data_dir_without_configuration(
    mirror_dir: Path, godata: Path, tmp_path: Path, cli_main: CliMain
) -> None:
    """A new data volume (a cluster bootstrapping from a backup, a lost volume): nothing local can
    be newer than the mirror, whoever wrote it."""
    empty = tmp_path / "new-godata"
    empty.mkdir()
    code = cli_main(["restore", "--source", str(mirror_dir), "--target", str(empty), "--side", "a"])
    assert code == 0
    assert synced_view(empty) == synced_view(godata)


def test_wait_for_waits_for_the_file_and_gives_up_in_time(
    mirror_dir: Path, tmp_path: Path, cli_main: CliMain, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new-godata"
    target.mkdir()
    marker = tmp_path / "recovered-from"
    arguments = ["restore", "--source", str(mirror_dir), "--target", str(target)]
    code = cli_main([*arguments, "--wait-for", str(marker), "--wait-timeout", "0.5"])
    assert code == 1 and "did not appear in time" in capsys.readouterr().err
    assert list(target.iterdir()) == []  # nothing restored without the marker
    marker.write_text("20261202t020000z\n")
    assert cli_main([*arguments, "--wait-for", str(marker)]) == 0
    assert (target / "config" / "cruise-config.xml").exists()
