"""Arrays to PNG for the browser view: colour maps, robust ranges, a bounded size.

Pure functions (numpy and Pillow). A panel is an 8-bit indexed image (index 0: not measured,
drawn black; 1-255: the colour map over the range shown) encoded as a palette PNG, one byte a
pixel whatever the colour map. It is encoded once per update of the board and served to every
browser as the same bytes; large canvases are shrunk by striding to at most ``max_side_px``
pixels a side first, and the range shown comes from a sample of at most ``RANGE_SAMPLES``
pixels, so a panel costs a few milliseconds whatever the scan's size.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

__all__ = ["encode_png", "shrink", "to_indexed"]

MAX_SIDE_PX = 512
RANGE_SAMPLES = 16_384  # pixels sampled for the percentiles of the range shown


@lru_cache(maxsize=8)
def palette(name: str) -> bytes:
    """A PNG palette: black, then 255 colours of a matplotlib colour map (768 bytes)."""
    from matplotlib import colormaps

    table = colormaps[name](np.linspace(0.0, 1.0, 255))[:, :3]
    colours = np.vstack([np.zeros((1, 3)), table])
    return (colours * 255 + 0.5).astype(np.uint8).tobytes()


def shrink(image: np.ndarray, max_side_px: int = MAX_SIDE_PX) -> np.ndarray:
    """``image`` strided down so that neither side exceeds ``max_side_px``."""
    step = max(1, -(-max(image.shape[:2]) // max_side_px))
    return image[::step, ::step] if step > 1 else image


def to_indexed(
    image: np.ndarray,
    *,
    log: bool = False,
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """(R, C) values -> (R, C) uint8 palette indices (0: not shown; 1-255: low to high).

    Args:
        image: the values (NaN pixels and ``mask == False`` pixels get index 0).
        log: show ``log10(1 + value)`` (detector counts).
        mask: pixels to show, e.g. ``weights > 0`` of a mosaic.
        percentiles: the range shown, from these percentiles of (a sample of) the shown pixels.
    """
    values = np.asarray(image, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"an image must be 2-D, got shape {values.shape}")
    if log:
        values = np.log10(1.0 + np.clip(values, 0, None))
    shown = np.isfinite(values)
    if mask is not None:
        shown &= np.asarray(mask, dtype=bool)
    index = np.zeros(values.shape, np.uint8)
    picked = values[shown]
    if not picked.size:
        return index
    sample = picked[:: max(1, picked.size // RANGE_SAMPLES)]
    lo, hi = np.percentile(sample, percentiles)
    scale = 254.0 / (hi - lo) if hi > lo else 0.0
    index[shown] = (np.clip((picked - lo) * scale, 0, 254) + 1).astype(np.uint8)
    return index


def encode_png(index: np.ndarray, cmap: str = "gray") -> bytes:
    """(R, C) uint8 palette indices -> PNG bytes with ``cmap``'s palette (speed over size)."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(index, dtype=np.uint8), "P")
    picture.putpalette(palette(cmap))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
