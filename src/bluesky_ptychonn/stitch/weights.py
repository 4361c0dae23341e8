"""Probe-shaped weights for stitching: where a patch is trusted, and how much."""

from __future__ import annotations

import numpy as np


def probe_weight(probe: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Normalised probe intensity |P|^2 / max, with values below ``floor`` set to zero.

    A CNN patch is only informed where the probe illuminated the sample: weighting by the
    probe's intensity makes the mosaic favour each patch's well-lit centre.
    """
    intensity = np.abs(np.asarray(probe)) ** 2
    if intensity.ndim == 3:
        intensity = intensity.sum(0)
    peak = intensity.max()
    if not peak > 0:
        raise ValueError("the probe carries no intensity")
    weight = intensity / peak
    weight[weight < floor] = 0.0
    return weight.astype(np.float32)


def gaussian_weight(shape: tuple[int, int], fwhm_px: float) -> np.ndarray:
    """A centred Gaussian weight of the given FWHM in pixels (when no probe is known)."""
    if not fwhm_px > 0:
        raise ValueError(f"fwhm_px must be positive, got {fwhm_px}")
    rows, cols = np.indices(shape, dtype=np.float64)
    sigma = fwhm_px / (2 * np.sqrt(2 * np.log(2)))
    r2 = (rows - shape[0] // 2) ** 2 + (cols - shape[1] // 2) ** 2
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)
