"""``gocd-ha-operator restore``: put the mirrored GoCD files in place before a server starts.

This is the init container of the GoCD server of the side that is (becoming) primary in Cold
mode. It must never make things worse than starting with the local files would, so:

- every mirrored object is verified (size and SHA-256 against the manifest) *before* the target
  is touched; a partial or corrupt mirror is refused with a non-zero exit naming the bad file;
- the files are then staged as temp files next to their destinations and renamed into place, so
  a failure while staging also leaves the target as it was;
- no manifest means a brand-new cluster: nothing to restore, exit 0;
- a manifest written by this very side means this server was the primary and is restarting: its
  local files are at least as new as the mirror, so they are kept (exit 0) — unless it has no
  configuration at all (a new data volume: nothing local can be newer);
- ``--wait-for FILE`` (a cluster bootstrapping from a backup): the instance entrypoint puts the
  backup's GoCD files on the shared volume while it recovers the database and then writes FILE;
  the restore waits for it, so the server starts from the files of the backup's moment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

from gocd_ha_operator.api.constants import GOCD_DATA_DIR, GOCD_MIRROR_SUBDIR, SHARED_MOUNT, SIDES
from gocd_ha_operator.gocd.mirror import (
    CONFIG_DIRNAME,
    EXTERNAL_PLUGINS_DIRNAME,
    REQUIRED_CONFIG_FILE,
    FileEntry,
    Manifest,
    ManifestError,
    copy_hashing,
    ensure_dir,
    finish_temp,
    fsync_dir,
    object_path,
    open_temp,
    read_manifest,
    remove_temp_files,
    sha256_of,
)

log = logging.getLogger(__name__)

EXIT_REFUSED = 1
EXIT_USAGE = 2
#: A data dir with this file has a configuration of its own (GoCD wrote or restored it).
CONFIG_FILE: Final = f"{CONFIG_DIRNAME}/{REQUIRED_CONFIG_FILE}"
#: How often ``--wait-for`` looks for its file.
WAIT_POLL_SECONDS: Final = 2.0


class RestoreRefusedError(RuntimeError):
    """The mirror cannot be trusted; the message names the file and the problem."""


class RestoreOutcome(Enum):
    NOTHING_TO_RESTORE = "nothing to restore"
    OWN_MIRROR = "mirror was written by this side; local files are newer"
    RESTORED = "restored"


@dataclass(frozen=True)
class RestoreResult:
    outcome: RestoreOutcome
    manifest: Manifest | None = None
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def verify_mirror(mirror_dir: Path, manifest: Manifest) -> None:
    """Check every object the manifest names; raise on the first one that is missing or wrong."""
    for name in sorted(manifest.files):
        entry = manifest.files[name]
        path = object_path(mirror_dir, entry.sha256)
        try:
            sha, size = sha256_of(path)
        except FileNotFoundError:
            raise RestoreRefusedError(
                f"{name}: its mirrored copy objects/{entry.sha256} is missing (partial mirror)"
            ) from None
        except OSError as exc:
            raise RestoreRefusedError(
                f"{name}: cannot read its mirrored copy: {exc.strerror}"
            ) from None
        if size != entry.size:
            raise RestoreRefusedError(
                f"{name}: mirrored copy has {size} bytes, the manifest says {entry.size}"
            )
        if sha != entry.sha256:
            raise RestoreRefusedError(
                f"{name}: mirrored copy has SHA-256 {sha}, the manifest says {entry.sha256}"
            )


def _stage(mirror_dir: Path, target_dir: Path, entry: FileEntry) -> Path:
    """Copy one verified object to a temp file beside its destination; verify the copy too."""
    destination_dir = (target_dir / entry.name).parent
    ensure_dir(destination_dir)
    tmp, handle = open_temp(destination_dir)
    try:
        with object_path(mirror_dir, entry.sha256).open("rb") as src:
            sha, size = copy_hashing(src, handle)
        finish_temp(handle, tmp)
    except BaseException:
        handle.close()
        tmp.unlink(missing_ok=True)
        raise
    if (sha, size) != (entry.sha256, entry.size):
        tmp.unlink(missing_ok=True)
        raise RestoreRefusedError(f"{entry.name}: mirrored copy changed while it was restored")
    os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
    return tmp


def restore(mirror_dir: Path, target_dir: Path, *, side: str | None = None) -> RestoreResult:
    """Restore the mirror at ``mirror_dir`` into the GoCD data dir ``target_dir``."""
    try:
        manifest = read_manifest(mirror_dir)
    except ManifestError as exc:
        raise RestoreRefusedError(f"manifest: {exc}") from None
    if manifest is None:
        return RestoreResult(RestoreOutcome.NOTHING_TO_RESTORE)
    has_config = (target_dir / CONFIG_FILE).exists()
    if side is not None and manifest.side == side and has_config:
        return RestoreResult(RestoreOutcome.OWN_MIRROR, manifest)
    verify_mirror(mirror_dir, manifest)

    for name in manifest.files:  # leftovers of an earlier restore that was interrupted
        remove_temp_files((target_dir / name).parent)
    staged: dict[str, Path] = {}
    try:
        for name in sorted(manifest.files):
            staged[name] = _stage(mirror_dir, target_dir, manifest.files[name])
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    touched_dirs: set[Path] = set()
    for name, tmp in staged.items():
        os.replace(tmp, target_dir / name)
        touched_dirs.add((target_dir / name).parent)

    removed: list[str] = []
    plugins_dir = target_dir / EXTERNAL_PLUGINS_DIRNAME
    if plugins_dir.is_dir():
        for path in sorted(plugins_dir.iterdir()):
            name = f"{EXTERNAL_PLUGINS_DIRNAME}/{path.name}"
            if path.name.endswith(".jar") and name not in manifest.files and path.is_file():
                path.unlink()
                removed.append(name)
                touched_dirs.add(plugins_dir)
    for directory in touched_dirs:
        fsync_dir(directory)
    return RestoreResult(RestoreOutcome.RESTORED, manifest, tuple(sorted(staged)), tuple(removed))


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(SHARED_MOUNT) / GOCD_MIRROR_SUBDIR,
        help="the mirror on the shared volume (default: %(default)s)",
    )
    parser.add_argument(
        "--target",
        type=Path,
        default=Path(GOCD_DATA_DIR),
        help="the GoCD data dir to restore into (default: %(default)s)",
    )
    parser.add_argument(
        "--side",
        choices=SIDES,
        help="this server's side: a mirror this side wrote itself is not restored",
    )
    parser.add_argument(
        "--wait-for",
        type=Path,
        help="wait until this file exists before restoring (bootstrap from a backup)",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=86400.0,
        help="seconds to wait for --wait-for (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Restore and report; exit 0 when the server may start, 1 when the mirror was refused."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source: Path = args.source
    target: Path = args.target
    if not target.is_dir():
        print(f"restore: target {target} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if args.wait_for is not None:
        deadline = time.monotonic() + args.wait_timeout
        log.info("waiting for %s (the database is being recovered from a backup)", args.wait_for)
        while not args.wait_for.exists():
            if time.monotonic() > deadline:
                print(f"restore: {args.wait_for} did not appear in time", file=sys.stderr)
                return EXIT_REFUSED
            time.sleep(WAIT_POLL_SECONDS)
    try:
        result = restore(source, target, side=args.side)
    except RestoreRefusedError as exc:
        message = f"restore refused, {target} left untouched: {exc}"
        log.error(message)
        print(f"restore: {message}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        message = f"restore failed: {exc.strerror or exc} ({exc.filename or 'unknown file'})"
        log.error(message)
        print(f"restore: {message}", file=sys.stderr)
        return EXIT_REFUSED
    if result.outcome is RestoreOutcome.RESTORED:
        assert result.manifest is not None
        log.info(
            "restored %d files from the mirror synced at %s by side %s (generation %d)%s",
            len(result.written),
            result.manifest.to_json()["syncTime"],
            result.manifest.side or "unknown",
            result.manifest.generation,
            f"; removed plugins not in the mirror: {', '.join(result.removed)}"
            if result.removed
            else "",
        )
    else:
        log.info("%s (%s)", result.outcome.value, source)
    return 0
