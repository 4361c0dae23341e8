"""Arrays to PNG for the browser view: colour maps, robust ranges, a bounded size.

Pure functions (numpy and Pillow). A panel is encoded once per update of the board and served
to every browser as the same bytes; large canvases are shrunk by striding to at most
``max_side_px`` pixels a side before encoding, so encoding costs a few milliseconds whatever
the scan's size.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

__all__ = ["encode_png", "shrink", "to_rgb"]

MAX_SIDE_PX = 512


@lru_cache(maxsize=8)
def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 colour table of a matplotlib colour map."""
    from matplotlib import colormaps

    table = colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return (table * 255 + 0.5).astype(np.uint8)


def shrink(image: np.ndarray, max_side_px: int = MAX_SIDE_PX) -> np.ndarray:
    """``image`` strided down so that neither side exceeds ``max_side_px``."""
    step = max(1, -(-max(image.shape[:2]) // max_side_px))
    return image[::step, ::step] if step > 1 else image


def to_rgb(
    image: np.ndarray,
    *,
    cmap: str = "gray",
    log: bool = False,
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """(R, C) values -> (R, C, 3) uint8 colours.

    Args:
        image: the values (NaN and ``mask == False`` pixels are drawn black).
        cmap: a matplotlib colour map name.
        log: show ``log10(1 + value)`` (detector counts).
        mask: pixels to show (others black), e.g. ``weights > 0`` of a mosaic.
        percentiles: the range shown, from these percentiles of the shown pixels.
    """
    values = np.asarray(image, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"an image must be 2-D, got shape {values.shape}")
    if log:
        values = np.log10(1.0 + np.clip(values, 0, None))
    shown = np.isfinite(values)
    if mask is not None:
        shown &= np.asarray(mask, dtype=bool)
    rgb = np.zeros((*values.shape, 3), np.uint8)
    if not shown.any():
        return rgb
    lo, hi = np.percentile(values[shown], percentiles)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    index = np.clip((np.nan_to_num(values) - lo) * scale, 0, 255).astype(np.uint8)
    rgb[shown] = _lut(cmap)[index[shown]]
    return rgb


def encode_png(rgb: np.ndarray) -> bytes:
    """(R, C, 3) uint8 -> PNG bytes (fast compression: speed over size)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
