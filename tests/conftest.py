"""Suite-wide setup: the shared helpers in ``tests/support`` are importable as ``support``."""

import sys
from pathlib import Path

_TESTS_DIR = str(Path(__file__).parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
