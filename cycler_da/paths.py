"""Where generated data lives: one data directory, never inside the source tree."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "CYCLER_DATA_DIR"
PACKAGE_DATA = Path(__file__).parent / "data"


def data_dir() -> Path:
    """The cache directory for generated data: ``$CYCLER_DATA_DIR`` or ``~/.cache/cycler``."""
    root = os.environ.get(DATA_DIR_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "cycler"
    path.mkdir(parents=True, exist_ok=True)
    return path
