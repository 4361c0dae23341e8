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


def default_weight(shape: tuple[int, int]) -> np.ndarray:
    """The weight used when nothing is known of the beam: a Gaussian half the patch wide."""
    return gaussian_weight(shape, fwhm_px=shape[0] / 2)


def probe_patch_weight(
    probe: np.ndarray, patch_shape: tuple[int, int], pixel_scale: float = 1.0, floor: float = 1e-3
) -> np.ndarray:
    """The probe's intensity on a network patch's grid, max 1: the stitching weight of a patch.

    Args:
        probe: (h, w) or (modes, h, w) complex probe on the readout grid (the data's object
            pixels), or already an (H, W) real intensity / weight on the patch grid.
        patch_shape: (H, W) of the network's patches.
        pixel_scale: patch pixel / readout pixel: h / H for a cropping network (the intensity
            is averaged over s x s blocks), 1 for a binning one (the central (H, W) is kept).
        floor: values below this fraction of the peak become 0 (see `probe_weight`).

    Raises:
        ValueError: a probe that fits neither way, or one without intensity.
    """
    probe = np.asarray(probe)
    intensity = np.abs(probe) ** 2 if np.iscomplexobj(probe) else np.abs(probe).astype(float)
    if intensity.ndim == 3:
        intensity = intensity.sum(axis=0)
    h, w = intensity.shape
    big_h, big_w = (int(n) for n in patch_shape)
    scale = int(round(pixel_scale))
    if (h, w) == (big_h, big_w):
        pass
    elif scale > 1 and abs(pixel_scale - scale) < 1e-6 and (h, w) == (big_h * scale, big_w * scale):
        intensity = intensity.reshape(big_h, scale, big_w, scale).mean(axis=(1, 3))
    elif scale == 1 and h >= big_h and w >= big_w:
        top, left = h // 2 - big_h // 2, w // 2 - big_w // 2
        intensity = intensity[top : top + big_h, left : left + big_w]
    else:
        raise ValueError(
            f"a {h}x{w} probe does not fit {big_h}x{big_w} patches of {pixel_scale:g} readout "
            "pixels"
        )
    return probe_weight(np.sqrt(intensity), floor=floor)
