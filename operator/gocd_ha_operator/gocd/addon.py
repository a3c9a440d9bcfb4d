"""``gocd-ha-operator install-addon``: the business-continuity add-on jar for GoCD <= 20.5.

Up to 20.5 business continuity was a commercial add-on that GoCD loaded from ``/godata/addons``.
The jar is no longer distributed publicly, so users host it themselves and give the operator its
URL and SHA-256. This init container places it, and the checksum is the only thing that makes
the download trustworthy: the jar runs inside the GoCD server with access to every secret. So
nothing is placed until the downloaded bytes match; a mismatch exits non-zero and names both
digests. A jar already installed with the right checksum is not downloaded again (pods restart
often; the URL may be slow or gone).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Final

from gocd_ha_operator.api.constants import GOCD_ADDONS_DIR
from gocd_ha_operator.gocd.mirror import ensure_dir, finish_temp, fsync_dir, open_temp, sha256_of

log = logging.getLogger(__name__)

#: Per-socket-operation timeout; a stalled server fails instead of hanging the pod's start.
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
#: Whole-download deadline (the add-on jar is a few MB).
DEFAULT_DEADLINE_SECONDS: Final = 300.0
#: Refuse anything larger: a wrong URL must not fill ``/godata``.
MAX_ADDON_BYTES: Final = 256 * 1024 * 1024
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_JAR_NAME: Final = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*\.jar$")
_CHUNK: Final = 256 * 1024

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class AddonInstallError(RuntimeError):
    """The add-on could not be installed; nothing was placed in the target."""


class InstallOutcome(Enum):
    ALREADY_INSTALLED = "already installed"
    INSTALLED = "installed"


@dataclass(frozen=True)
class InstallResult:
    outcome: InstallOutcome
    path: Path


def jar_name_from_url(url: str) -> str:
    """The file name to install as: the last path segment of ``url``, which must be a ``.jar``.

    GoCD loaded every ``*.jar`` in the add-ons dir, so the name matters; it also must not be able
    to point outside the target directory.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise AddonInstallError(f"the add-on URL must be http:// or https://, got {url!r}")
    name = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])
    if not _JAR_NAME.match(name):
        raise AddonInstallError(
            f"the add-on URL must end in a file name like go-business-continuity-20.4.0.jar, "
            f"got {name!r}"
        )
    return name


def normalise_sha256(value: str) -> str:
    digest = value.strip().lower()
    digest = digest.removeprefix("sha256:")
    if not _HEX64.match(digest):
        raise AddonInstallError("--sha256 must be 64 hexadecimal digits")
    return digest


def _download(url: str, handle: BinaryIO, *, timeout: float, deadline: float) -> tuple[str, int]:
    """Stream ``url`` into ``handle``; return SHA-256 and size. Bounded in time and size."""
    digest = hashlib.sha256()
    size = 0
    started = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": "gocd-ha-operator"})  # noqa: S310
    # The scheme was checked to be http(s) by jar_name_from_url before we get here.
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > MAX_ADDON_BYTES:
                raise AddonInstallError(f"download is larger than {MAX_ADDON_BYTES} bytes")
            if time.monotonic() - started > deadline:
                raise AddonInstallError(f"download took longer than {deadline:.0f} seconds")
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest(), size


def install_addon(
    url: str,
    expected_sha256: str,
    target_dir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
) -> InstallResult:
    """Install the jar at ``url`` into ``target_dir`` if it is not there with that checksum."""
    name = jar_name_from_url(url)
    expected = normalise_sha256(expected_sha256)
    destination = target_dir / name
    if destination.is_file():
        present, _ = sha256_of(destination)
        if present == expected:
            return InstallResult(InstallOutcome.ALREADY_INSTALLED, destination)
        log.info("%s is present with a different checksum; downloading it again", destination)
    ensure_dir(target_dir)
    tmp, handle = open_temp(target_dir)
    try:
        try:
            actual, size = _download(url, handle, timeout=timeout, deadline=deadline)
        except urllib.error.HTTPError as exc:
            raise AddonInstallError(f"download failed: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise AddonInstallError(f"download failed: {exc.reason}") from None
        except TimeoutError:
            raise AddonInstallError(f"download timed out after {timeout:.0f} seconds") from None
        except OSError as exc:
            raise AddonInstallError(f"download failed: {exc}") from None
        if actual != expected:
            raise AddonInstallError(
                f"checksum mismatch for {name}: expected sha256 {expected}, "
                f"downloaded {size} bytes with sha256 {actual}; nothing was installed"
            )
        finish_temp(handle, tmp)
        os.replace(tmp, destination)
    except BaseException:
        handle.close()
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target_dir)
    others = sorted(
        p.name for p in target_dir.glob("*.jar") if p.name != name and p.name.startswith("go-")
    )
    if others:
        log.warning(
            "other add-on jars are present in %s and GoCD loads all of them: %s",
            target_dir,
            ", ".join(others),
        )
    return InstallResult(InstallOutcome.INSTALLED, destination)


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="http(s) URL of the add-on jar")
    parser.add_argument("--sha256", required=True, metavar="HEX", help="its SHA-256 (hex)")
    parser.add_argument(
        "--target",
        type=Path,
        default=Path(GOCD_ADDONS_DIR),
        help="the GoCD add-ons dir (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="network timeout per operation (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = install_addon(args.url, args.sha256, args.target, timeout=args.timeout)
    except AddonInstallError as exc:
        log.error("%s", exc)
        print(f"install-addon: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        message = f"cannot write to {args.target}: {exc.strerror or exc}"
        log.error("%s", message)
        print(f"install-addon: {message}", file=sys.stderr)
        return EXIT_FAILED
    log.info("add-on %s: %s", result.outcome.value, result.path)
    return 0
