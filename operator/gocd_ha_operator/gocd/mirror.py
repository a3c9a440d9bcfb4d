"""The Cold-mode mirror of a GoCD server's files on the shared volume.

Layout of the mirror directory (``/shared/gocd``)::

    manifest.json          what the mirror holds; written last, atomically
    objects/<sha256>       the file contents, named by their SHA-256 (content-addressed)

Why content-addressed: the manifest is the only thing that says which files make up the mirror,
and every object it names is immutable. A writer that crashes after writing new objects but
before replacing the manifest leaves the previous manifest pointing at previous objects that are
all still there (objects are removed only after a new manifest is in place). So a reader never has
to guess whether a file that disagrees with the manifest is "newer" or "corrupt": an object whose
content does not hash to its manifest entry is corrupt, full stop, and unreferenced objects are
leftovers of an interrupted cycle that the next cycle removes.

The file set is the one GoCD's business-continuity feature synced (research gocd.md §1.5):
``config/cruise-config.xml``, ``config/cipher.aes``, ``config/jetty.xml``,
``config/go.feature.toggles`` (when present) and ``plugins/external/*.jar``. Logical names in the
manifest are those paths relative to ``/godata``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"
OBJECTS_DIRNAME: Final = "objects"
CONFIG_DIRNAME: Final = "config"
EXTERNAL_PLUGINS_DIRNAME: Final = "plugins/external"
#: Config files GoCD's business continuity synced, in the order the dashboard listed them.
CONFIG_FILES: Final = ("cruise-config.xml", "cipher.aes", "jetty.xml", "go.feature.toggles")
#: The one file without which a mirror is not a GoCD configuration at all.
REQUIRED_CONFIG_FILE: Final = "cruise-config.xml"
#: ``cipher.aes`` decrypts every secret in the config: files are owner+group (gid 0) only.
FILE_MODE: Final = 0o640
DIR_MODE: Final = 0o750
TEMP_PREFIX: Final = ".tmp-"
_CHUNK: Final = 1024 * 1024
_MTIME_SLACK_NS: Final = 2_000_000_000
_SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
_PLUGIN_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*\.jar$")


class ManifestError(ValueError):
    """``manifest.json`` exists but is not a manifest this version can trust."""


class SourceChangedError(OSError):
    """A source file kept changing while it was copied; the next cycle tries again."""


@dataclass(frozen=True)
class FileEntry:
    """One mirrored file: its logical name (relative to ``/godata``) and what it must hash to."""

    name: str
    sha256: str
    size: int
    mtime_ns: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "mtime": rfc3339(datetime.fromtimestamp(self.mtime_ns / 1e9, UTC)),
            "mtimeNs": self.mtime_ns,
        }


@dataclass(frozen=True)
class Manifest:
    """What a mirror holds, who wrote it and when."""

    sync_time: datetime
    side: str | None
    generation: int
    files: Mapping[str, FileEntry]
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "formatVersion": self.format_version,
            "syncTime": rfc3339(self.sync_time),
            "side": self.side,
            "generation": self.generation,
            "files": {name: self.files[name].to_json() for name in sorted(self.files)},
        }


def rfc3339(moment: datetime) -> str:
    """``2024-05-01T12:00:00Z``: the timestamp form Kubernetes status fields use."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a logical name the mirror may hold.

    Restore writes to ``<target>/<name>``; a manifest is data from a shared volume, so only the
    known config files and plain ``.jar`` names in ``plugins/external`` are ever accepted. This is
    what keeps a tampered manifest from writing outside ``/godata/config`` and the plugin dir.
    """
    if name in {f"{CONFIG_DIRNAME}/{f}" for f in CONFIG_FILES}:
        return True
    prefix = EXTERNAL_PLUGINS_DIRNAME + "/"
    return name.startswith(prefix) and bool(_PLUGIN_NAME_RE.match(name[len(prefix) :]))


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise ManifestError(f"{what} is not a timestamp")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ManifestError(f"{what} {value!r} is not an RFC 3339 UTC timestamp") from None


def manifest_from_json(data: Any) -> Manifest:
    """Validate parsed ``manifest.json``; every problem is a ``ManifestError`` naming the field."""
    if not isinstance(data, dict):
        raise ManifestError("the manifest is not a JSON object")
    version = data.get("formatVersion")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"unsupported manifest formatVersion {version!r} (this version reads {FORMAT_VERSION})"
        )
    side = data.get("side")
    if side is not None and not isinstance(side, str):
        raise ManifestError("side is not a string")
    generation = data.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ManifestError("generation is not a non-negative integer")
    raw_files = data.get("files")
    if not isinstance(raw_files, dict):
        raise ManifestError("files is not an object")
    files: dict[str, FileEntry] = {}
    for name, entry in raw_files.items():
        if not is_valid_name(name):
            raise ManifestError(f"file name {name!r} is not one the mirror may hold")
        if not isinstance(entry, dict):
            raise ManifestError(f"{name}: entry is not an object")
        sha = entry.get("sha256")
        size = entry.get("size")
        mtime_ns = entry.get("mtimeNs")
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise ManifestError(f"{name}: sha256 is not 64 lowercase hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{name}: size is not a non-negative integer")
        if not isinstance(mtime_ns, int) or isinstance(mtime_ns, bool):
            raise ManifestError(f"{name}: mtimeNs is not an integer")
        files[name] = FileEntry(name=name, sha256=sha, size=size, mtime_ns=mtime_ns)
    return Manifest(
        sync_time=_parse_time(data.get("syncTime"), "syncTime"),
        side=side,
        generation=generation,
        files=files,
    )


def read_manifest(mirror_dir: Path) -> Manifest | None:
    """The mirror's manifest, or ``None`` when there is none yet (a brand-new cluster)."""
    try:
        raw = (mirror_dir / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
    return manifest_from_json(data)


def object_path(mirror_dir: Path, sha256: str) -> Path:
    return mirror_dir / OBJECTS_DIRNAME / sha256


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) with ``DIR_MODE``; existing directories keep their mode."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (the directory entry, not just the file, must hit disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_temp(directory: Path) -> tuple[Path, BinaryIO]:
    """A new private temporary file in ``directory`` (same filesystem, so rename is atomic)."""
    while True:
        path = directory / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        return path, os.fdopen(fd, "wb")


def finish_temp(handle: BinaryIO, path: Path) -> None:
    """Flush, fsync and close a temp file and give it the mode it will have once renamed."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.chmod(path, FILE_MODE)


def copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copy ``src`` to ``dst``; return the SHA-256 hex digest and the number of bytes copied."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_of(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of the file at ``path``."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_manifest(mirror_dir: Path, manifest: Manifest) -> None:
    """Replace ``manifest.json`` atomically: temp file, fsync, rename, fsync the directory."""
    body = json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode() + b"\n"
    tmp, handle = open_temp(mirror_dir)
    try:
        handle.write(body)
        finish_temp(handle, tmp)
        os.replace(tmp, mirror_dir / MANIFEST_NAME)
    except BaseException:
        handle.close()
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(mirror_dir)


def source_files(source_dir: Path) -> dict[str, Path]:
    """The files of a GoCD data dir that the mirror holds, by logical name.

    Symlinked files are followed (the image links ``/go-working-dir`` into ``/godata``); anything
    in ``plugins/external`` that is not a plain ``.jar`` name is ignored, as GoCD ignored it.
    """
    found: dict[str, Path] = {}
    for config_name in CONFIG_FILES:
        path = source_dir / CONFIG_DIRNAME / config_name
        if path.is_file():
            found[f"{CONFIG_DIRNAME}/{config_name}"] = path
    plugins = source_dir / EXTERNAL_PLUGINS_DIRNAME
    if plugins.is_dir():
        for path in sorted(plugins.iterdir()):
            name = f"{EXTERNAL_PLUGINS_DIRNAME}/{path.name}"
            if is_valid_name(name) and path.is_file():
                found[name] = path
    return found


def _store_object(mirror_dir: Path, name: str, source: Path) -> FileEntry:
    """Copy ``source`` into the object store; retry when it changes under us."""
    objects = mirror_dir / OBJECTS_DIRNAME
    for _attempt in range(3):
        before = source.stat()
        tmp, handle = open_temp(objects)
        try:
            with source.open("rb") as src:
                sha, size = copy_hashing(src, handle)
            finish_temp(handle, tmp)
            after = source.stat()
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                tmp.unlink(missing_ok=True)
                continue
            os.replace(tmp, objects / sha)
        except BaseException:
            handle.close()
            tmp.unlink(missing_ok=True)
            raise
        return FileEntry(name=name, sha256=sha, size=size, mtime_ns=after.st_mtime_ns)
    raise SourceChangedError(f"{name} kept changing while it was copied")


def snapshot(
    source_dir: Path,
    mirror_dir: Path,
    *,
    side: str | None,
    now: datetime,
    previous: Manifest | None,
    observed: MutableMapping[str, FileEntry] | None = None,
    after_generation: int = 0,
) -> Manifest:
    """Mirror ``source_dir`` into ``mirror_dir`` and return the manifest now in force.

    Order is what makes it crash-safe: (1) every object is written (temp, fsync, rename);
    (2) the manifest is replaced atomically; (3) only then are objects no manifest names removed.
    A failure before (2) raises and leaves the previous manifest and all its objects valid.

    ``previous`` is the manifest this process wrote last: a file whose size and mtime are unchanged
    since then is not read again. (Only this process's own manifest is trusted for that shortcut,
    so an agent's first cycle re-copies everything and repairs a damaged object store.)
    ``observed`` receives each source file's entry as soon as it is known, so a caller can report
    the source's checksums even when the cycle fails halfway. ``after_generation`` is the
    generation already on disk when ``previous`` is None (generations never go backwards).
    """
    found = source_files(source_dir)
    if f"{CONFIG_DIRNAME}/{REQUIRED_CONFIG_FILE}" not in found:
        raise FileNotFoundError(
            f"{source_dir / CONFIG_DIRNAME / REQUIRED_CONFIG_FILE} does not exist "
            "(has the GoCD server started yet?)"
        )
    ensure_dir(mirror_dir)
    ensure_dir(mirror_dir / OBJECTS_DIRNAME)
    entries: dict[str, FileEntry] = {}
    # A file rewritten within the filesystem's timestamp granularity of our last copy could keep
    # its mtime; files that recent are always copied again.
    previous_copy_time = previous.sync_time if previous else now
    for name, path in found.items():
        known = previous.files.get(name) if previous else None
        stat = path.stat()
        if (
            known is not None
            and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
            and stat.st_mtime_ns < _ns(previous_copy_time) - _MTIME_SLACK_NS
            and object_path(mirror_dir, known.sha256).is_file()
        ):
            entry = known
        else:
            entry = _store_object(mirror_dir, name, path)
        entries[name] = entry
        if observed is not None:
            observed[name] = entry
    manifest = Manifest(
        sync_time=now,
        side=side,
        generation=(previous.generation if previous else after_generation) + 1,
        files=entries,
    )
    fsync_dir(mirror_dir / OBJECTS_DIRNAME)
    write_manifest(mirror_dir, manifest)
    remove_unreferenced_objects(mirror_dir, manifest)
    return manifest


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _object_files(mirror_dir: Path) -> Iterator[Path]:
    objects = mirror_dir / OBJECTS_DIRNAME
    if objects.is_dir():
        yield from objects.iterdir()


def remove_unreferenced_objects(mirror_dir: Path, manifest: Manifest) -> list[str]:
    """Delete objects and temp files the manifest does not name; return what was removed.

    Runs only after ``manifest`` is durable: this is how a removed plugin disappears from the
    mirror, and how leftovers of an interrupted cycle are cleaned up.
    """
    keep = {entry.sha256 for entry in manifest.files.values()}
    removed: list[str] = []
    for path in _object_files(mirror_dir):
        if path.name not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path.name)
    removed.extend(remove_temp_files(mirror_dir))
    return removed


def remove_temp_files(directory: Path) -> list[str]:
    """Delete leftovers of an interrupted temp-file write (``.tmp-*``) in ``directory``."""
    removed: list[str] = []
    if directory.is_dir():
        for path in directory.glob(f"{TEMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path.name)
    return removed
