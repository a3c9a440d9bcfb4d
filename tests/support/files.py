"""Writing files into the fake ``/godata`` trees of the GoCD-side tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def write(path: Path, content: bytes | str) -> Path:
    """Create ``path`` (and its parents) with ``content``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


WriteFile = Callable[[Path, bytes | str], Path]
