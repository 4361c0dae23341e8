"""A stitched network image as the starting object of an iterative reconstruction.

The network's mosaic and ePIE's object live on different grids: a cropping network's patches
have coarser pixels (the demo model's are 4x the data's object pixel), and the mosaic's canvas
covers the scan with its own origin. `initial_object_from_mosaic` resamples a complex mosaic
onto the grid ePIE will use:

* amplitude and phase are resampled apart: the amplitude linearly, the phase through its unit
  phasor (cos and sin resampled linearly, then the angle), so a phase that wraps between two
  mosaic pixels is not smeared through zero; when the target pixels are coarser the three are
  smoothed first (a Gaussian of sigma 0.5 x the size ratio, against aliasing);
* pixels the mosaic never measured (zero weight) are filled neutrally, with the measured
  area's median amplitude and its mean phase (a flat, free-space-like object in the mosaic's
  own phase gauge), blended over the measured area's edge so that no step is introduced;
* a mosaic that does not cover the scanned region (another scan region, another sample
  position) is refused with a `ValueError` before any iteration: at least ``min_overlap`` of
  the scan positions must fall on measured mosaic pixels.

`seed_object` does this for a data set (the grid is the one ePIE would make from the data,
`prepare.object_grid`), returning a `ComplexImage` for ``reconstruct(..., initial_object=)``.
numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..dataset import ComplexImage, PtychoDataset
from ..geometry import PixelGrid, as_positions_m
from .options import ObjectOptions
from .prepare import object_grid

__all__ = ["MIN_OVERLAP", "initial_object_from_mosaic", "measured_mask", "seed_object"]

MIN_OVERLAP = 0.5
"""The smallest fraction of scan positions that must fall on measured mosaic pixels."""

MEASURED_FRACTION = 0.05
"""A mosaic pixel counts as measured where its weight exceeds this fraction of the weights'
90th percentile (or, without weights, where its amplitude is above zero)."""


def measured_mask(mosaic: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Bool (R, C): the mosaic pixels that hold a measurement.

    Args:
        mosaic: (R, C) complex mosaic (a `MosaicSnapshot` is 0 where nothing was stitched).
        weights: (R, C) summed stitching weights; None: measured where ``|mosaic| > 0``.
    """
    if weights is None:
        return np.abs(mosaic) > 0
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != mosaic.shape:
        raise ValueError(f"weights {weights.shape} do not match the mosaic {mosaic.shape}")
    positive = weights[weights > 0]
    if positive.size == 0:
        return np.zeros(mosaic.shape, dtype=bool)
    return weights > MEASURED_FRACTION * np.percentile(positive, 90)


def _sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, smooth_px: float) -> np.ndarray:
    """``image`` (real) at fractional pixel coordinates, linear, 0 outside."""
    if smooth_px > 0:
        image = ndimage.gaussian_filter(image, smooth_px, mode="nearest")
    return ndimage.map_coordinates(image, [rows, cols], order=1, mode="constant", cval=0.0)


def initial_object_from_mosaic(
    mosaic: np.ndarray,
    mosaic_pixel_m: float,
    mosaic_origin_m: tuple[float, float],
    *,
    pixel_size_m: float,
    shape: tuple[int, int],
    origin_m: tuple[float, float],
    weights: np.ndarray | None = None,
    positions_m: np.ndarray | None = None,
    min_overlap: float = MIN_OVERLAP,
) -> np.ndarray:
    """Resample a complex mosaic onto an ePIE object grid (see the module docstring).

    Args:
        mosaic: (R, C) complex stitched image (phase in radians, amplitude dimensionless).
        mosaic_pixel_m: the mosaic's pixel size, m.
        mosaic_origin_m: (y, x) m of the centre of the mosaic's pixel [0, 0].
        pixel_size_m: the target grid's pixel size, m (the data's object pixel size).
        shape: (rows, cols) of the target grid.
        origin_m: (y, x) m of the centre of the target's pixel [0, 0].
        weights: (R, C) the mosaic's summed stitching weights; None: measured where
            ``|mosaic| > 0``.
        positions_m: (N, 2) (y, x) m scan positions: the region that must be covered; None:
            the target grid itself.
        min_overlap: the smallest covered fraction of that region (0..1].

    Returns:
        (rows, cols) complex64 array on the target grid.

    Raises:
        ValueError: a mosaic that is not 2-D complex-valued and finite, pixel sizes that are
            not positive, or a mosaic that covers less than ``min_overlap`` of the region.
    """
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2 or mosaic.size == 0:
        raise ValueError(f"the mosaic must be a 2-D image, got shape {mosaic.shape}")
    if not np.all(np.isfinite(mosaic)):
        raise ValueError("the mosaic holds NaN or infinite values")
    if not (mosaic_pixel_m > 0 and pixel_size_m > 0):
        raise ValueError(
            f"pixel sizes must be positive, got mosaic {mosaic_pixel_m!r} m, "
            f"target {pixel_size_m!r} m"
        )
    if not 0 < min_overlap <= 1:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap!r}")
    shape = (int(shape[0]), int(shape[1]))
    source = PixelGrid(float(mosaic_pixel_m), tuple(mosaic_origin_m), mosaic.shape)
    target = PixelGrid(float(pixel_size_m), tuple(origin_m), shape)
    measured = measured_mask(mosaic, weights)
    if not measured.any():
        raise ValueError("the mosaic holds no measured pixel")

    # the region the seed must cover, in mosaic pixels
    if positions_m is None:
        rows, cols = np.indices(shape).reshape(2, -1)
        region_m = target.to_metres(np.stack([rows, cols], axis=1).astype(np.float64))
        what = "the object grid"
    else:
        region_m = as_positions_m(positions_m)
        what = "the scan positions"
    at = np.round(source.to_pixels(region_m)).astype(np.int64)
    inside = (
        (at[:, 0] >= 0)
        & (at[:, 0] < mosaic.shape[0])
        & (at[:, 1] >= 0)
        & (at[:, 1] < mosaic.shape[1])
    )
    covered = np.zeros(len(at), dtype=bool)
    covered[inside] = measured[at[inside, 0], at[inside, 1]]
    fraction = float(covered.mean())
    if fraction < min_overlap:
        lo_s, hi_s = source.to_metres(
            np.array([[0, 0], [mosaic.shape[0] - 1, mosaic.shape[1] - 1]])
        )
        lo_t, hi_t = region_m.min(axis=0), region_m.max(axis=0)

        def span(lo: np.ndarray, hi: np.ndarray) -> str:
            return (
                f"y {lo[0] * 1e6:.2f}..{hi[0] * 1e6:.2f} um, "
                f"x {lo[1] * 1e6:.2f}..{hi[1] * 1e6:.2f} um"
            )

        raise ValueError(
            f"the initial object covers {100 * fraction:.0f} % of {what} (at least "
            f"{100 * min_overlap:.0f} % needed): it spans {span(lo_s, hi_s)}, the scan "
            f"{span(lo_t, hi_t)}; is it from another scan region?"
        )

    # target pixel centres in mosaic pixel coordinates
    rows, cols = np.indices(shape, dtype=np.float64)
    centres_m = target.to_metres(np.stack([rows.ravel(), cols.ravel()], axis=1))
    at = source.to_pixels(centres_m)
    r, c = at[:, 0].reshape(shape), at[:, 1].reshape(shape)
    ratio = pixel_size_m / mosaic_pixel_m
    smooth = 0.5 * ratio if ratio > 1.0 else 0.0
    mask = measured.astype(np.float64)
    amplitude = np.where(measured, np.abs(mosaic), 0.0)
    phasor = np.where(measured, np.exp(1j * np.angle(mosaic)), 0.0)
    cover = _sample(mask, r, c, smooth)
    amp = _sample(amplitude, r, c, smooth)
    cos = _sample(phasor.real, r, c, smooth)
    sin = _sample(phasor.imag, r, c, smooth)
    # normalised convolution: the measured pixels' average, unmeasured ones not counted
    safe = np.where(cover > 1e-6, cover, 1.0)
    amp, cos, sin = amp / safe, cos / safe, sin / safe
    phase = np.arctan2(sin, cos)

    fill_amplitude = float(np.median(np.abs(mosaic[measured])))
    mean_phasor = np.sum(np.abs(mosaic[measured]) * np.exp(1j * np.angle(mosaic[measured])))
    fill_phase = float(np.angle(mean_phasor)) if mean_phasor != 0 else 0.0
    blend = np.clip(cover / 0.5, 0.0, 1.0)  # full trust once half the footprint is measured
    amp = blend * amp + (1.0 - blend) * fill_amplitude
    seeded = blend * np.exp(1j * phase) + (1.0 - blend) * np.exp(1j * fill_phase)
    out = amp * np.exp(1j * np.angle(seeded))
    return out.astype(np.complex64)


def seed_object(
    dataset: PtychoDataset,
    mosaic: ComplexImage,
    *,
    weights: np.ndarray | None = None,
    margin_px: int | None = None,
    min_overlap: float = MIN_OVERLAP,
) -> ComplexImage:
    """A mosaic resampled onto the object grid ePIE makes for ``dataset`` (see module doc).

    Args:
        dataset: the scan (positions and geometry give the grid).
        mosaic: the stitched image on its own grid (pixel size, origin).
        weights: the mosaic's stitching weights (None: measured where ``|mosaic| > 0``).
        margin_px: the grid's margin; default `ObjectOptions`'s.
        min_overlap: see `initial_object_from_mosaic`.
    """
    if not isinstance(mosaic, ComplexImage):
        raise TypeError(f"mosaic must be a ComplexImage, got {type(mosaic).__name__}")
    margin = ObjectOptions().margin_px if margin_px is None else int(margin_px)
    grid = object_grid(
        dataset.positions_m, dataset.object_pixel_size_m, dataset.pattern_shape, margin
    )
    array = initial_object_from_mosaic(
        mosaic.array,
        mosaic.pixel_size_m,
        mosaic.origin_m,
        pixel_size_m=grid.pixel_size_m,
        shape=grid.shape,
        origin_m=grid.origin_m,
        weights=weights,
        positions_m=dataset.positions_m,
        min_overlap=min_overlap,
    )
    return ComplexImage(array, grid.pixel_size_m, grid.origin_m)
