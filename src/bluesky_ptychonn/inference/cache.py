"""Where engines keep what they derive from a model: int8 graphs, TensorRT plans.

Everything cached is keyed by the sha256 of the file it was derived from (plus, for TensorRT,
the GPU and the TensorRT version), so a changed model never meets a stale derivative. The
folder is ``$BLUESKY_PTYCHONN_CACHE`` when set, else ``$XDG_CACHE_HOME/bluesky-ptychonn``
(``~/.cache/bluesky-ptychonn``). Removing it is always safe.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CACHE_ENV = "BLUESKY_PTYCHONN_CACHE"


def cache_dir(kind: str | None = None, root: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder (created), or its ``kind`` sub-folder ("int8", "tensorrt")."""
    if root is None:
        root = os.environ.get(CACHE_ENV)
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "bluesky-ptychonn"
    path = Path(root) / kind if kind else Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def slug(text: str) -> str:
    """A file-name-safe version of ``text`` (GPU names, versions)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "x"
