"""Where paperlab keeps derived artifacts: converted models, trained toy models, features."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(area: str = "") -> Path:
    """``$PAPERLAB_CACHE/<area>``, by default ``~/.cache/paperlab/<area>`` (not created here)."""
    root = os.environ.get("PAPERLAB_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "paperlab"
    return base / area if area else base
