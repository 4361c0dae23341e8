"""Judging a reconstruction against a ground truth after removing ptychography's gauges.

`reference_on_grid` samples a ground-truth `ComplexImage` on a reconstruction's grid (nearest
whole-pixel offset; the sub-pixel rest is one of the gauges `metrics.align_to_reference`
removes), `illuminated_mask` marks the well-lit scanned area, and `phase_error_rad` combines
them with `metrics.phase_rms_error`.
"""

from __future__ import annotations

import numpy as np

from ..dataset import ComplexImage, Reconstruction
from ..geometry import patch_corners
from ..metrics import phase_rms_error
from ..sim.forward import extract_patches


def reference_on_grid(reference: ComplexImage, like: ComplexImage) -> np.ndarray:
    """``reference`` on the grid of ``like`` (same pixel size), nearest whole-pixel offset.

    Pixels outside the reference are free space (1).
    """
    if not np.isclose(reference.pixel_size_m, like.pixel_size_m, rtol=1e-6, atol=0.0):
        raise ValueError(
            f"pixel sizes differ: reference {reference.pixel_size_m:.6g} m, "
            f"reconstruction {like.pixel_size_m:.6g} m"
        )
    offset = np.round(reference.grid.to_pixels(np.array([like.origin_m]))[0]).astype(np.int64)
    return extract_patches(reference.array.astype(np.complex128), offset[None], like.array.shape)[0]


def resampled_on_grid(image: ComplexImage, like: ComplexImage) -> np.ndarray:
    """``image`` on the grid of ``like``, resampled first when their pixel sizes differ.

    A truth or an ePIE object on the coarser canvas of a cropping network's mosaic, say; the
    resampling is linear on the real and imaginary parts, anti-aliased when it shrinks.
    """
    if not np.isclose(like.pixel_size_m, image.pixel_size_m, rtol=1e-6, atol=0):
        from skimage.transform import rescale

        factor = image.pixel_size_m / like.pixel_size_m
        array = np.asarray(image.array)
        resampled = rescale(array.real, factor) + 1j * rescale(array.imag, factor)
        image = ComplexImage(resampled, like.pixel_size_m, image.origin_m)
    return reference_on_grid(image, like)


def illuminated_mask(
    probe: np.ndarray,
    positions_m: np.ndarray,
    like: ComplexImage,
    threshold: float = 0.1,
) -> np.ndarray:
    """Bool mask of ``like``'s grid where the summed probe intensity exceeds ``threshold`` x max."""
    probe = np.asarray(probe)
    intensity = np.abs(probe) ** 2
    if intensity.ndim == 3:  # probe modes: their intensities add
        intensity = intensity.sum(axis=0)
    h, w = intensity.shape
    corners, _ = patch_corners(like.grid.to_pixels(positions_m), (h, w))
    total = np.zeros(like.array.shape)
    for r, c in corners:
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + h, total.shape[0]), min(c + w, total.shape[1])
        if r1 > r0 and c1 > c0:
            total[r0:r1, c0:c1] += intensity[r0 - r : r1 - r, c0 - c : c1 - c]
    return total > threshold * total.max()


def phase_error_rad(
    reconstruction: Reconstruction,
    ground_truth: ComplexImage,
    *,
    probe: np.ndarray | None = None,
    threshold: float = 0.1,
) -> float:
    """RMS phase error (rad) over the illuminated area after removing phase offset, shift, ramp.

    Args:
        reconstruction: with positions and a probe (or pass ``probe``).
        ground_truth: the true object (same pixel size).
        probe: illumination used for the mask; default the reconstruction's.
        threshold: mask where summed probe intensity > threshold x its maximum.
    """
    probe = reconstruction.probe if probe is None else probe
    if probe is None or reconstruction.positions_m is None:
        raise ValueError("the mask needs a probe and positions")
    reference = reference_on_grid(ground_truth, reconstruction.object)
    mask = illuminated_mask(probe, reconstruction.positions_m, reconstruction.object, threshold)
    return phase_rms_error(reconstruction.object, reference, mask)
