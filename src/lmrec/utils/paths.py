"""Where lmrec keeps its cache. ``LMREC_CACHE_DIR`` overrides the default ``~/.cache/lmrec``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str | None = None) -> Path:
    """The cache root (or a sub-folder of it), created on first use."""
    root = Path(os.environ.get("LMREC_CACHE_DIR") or Path.home() / ".cache" / "lmrec")
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path
