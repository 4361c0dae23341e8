"""From a `PtychoDataset` to the arrays an iterative engine needs, with every input checked.

`prepare` validates the data (finite counts, probe shape, positions inside the object), lays
out the object grid (a `PixelGrid` that covers all positions plus the window and a margin),
turns positions into integer patch corners and sub-pixel offsets, and builds the initial
probe (given, or from the data) and object (given, e.g. a CNN mosaic, or free space). Pure
numpy: the engines move the result to their device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dataset import ComplexImage, PtychoDataset
from ..geometry import PixelGrid, patch_corners
from ..sim.forward import far_field
from .options import ObjectOptions, ProbeOptions

PIXEL_SIZE_RTOL = 1e-6


@dataclass
class PreparedScan:
    """Arrays of one scan on the reconstruction's grids (numpy, package conventions).

    Attributes:
        amplitudes: (N, H, W) float32 sqrt(counts), centred (zero frequency at (H//2, W//2)).
        valid: (H, W) bool, True where detector pixels are measured.
        grid: the object grid (pixel size in metres, origin (y, x) m of pixel [0, 0], shape).
        corners: (N, 2) int64 (row, col) of each window's pixel [0, 0] on the object grid.
        offsets: (N, 2) float64 sub-pixel offsets of the beam from the window centre (pixels).
        probe: (H, W) complex64 initial probe in sqrt(photons) per pixel, centred, or
            (M, H, W) modes when a mixed-state probe was given (the task adds or drops modes).
        object: (R, C) complex64 initial object on ``grid``.
        positions_m: (N, 2) (y, x) beam positions in metres.
        mean_counts: mean total counts of a pattern (photons).
        probe_source: "given", "dataset" or "data" (built from the mean pattern).
    """

    amplitudes: np.ndarray
    valid: np.ndarray
    grid: PixelGrid
    corners: np.ndarray
    offsets: np.ndarray
    probe: np.ndarray
    object: np.ndarray
    positions_m: np.ndarray
    mean_counts: float
    probe_source: str

    @property
    def n_frames(self) -> int:
        return int(self.amplitudes.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (int(self.amplitudes.shape[1]), int(self.amplitudes.shape[2]))


def check_patterns(patterns: np.ndarray) -> np.ndarray:
    """(N, H, W) float32 counts; ValueError naming the frames that hold NaN or infinity."""
    patterns = np.asarray(patterns)
    if patterns.ndim != 3 or patterns.shape[0] == 0:
        raise ValueError(f"patterns must be a non-empty (N, H, W) array, got {patterns.shape}")
    if patterns.dtype.kind not in "biuf":
        raise ValueError(f"patterns must be real counts, got dtype {patterns.dtype}")
    data = patterns.astype(np.float32, copy=False)
    finite = np.isfinite(data).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(
            f"{bad.size} of {data.shape[0]} diffraction patterns hold NaN or infinite values "
            f"(frames {shown}); mask or drop them before reconstructing"
        )
    return data


ASSUMED_OVERLAP = 0.8
"""Overlap ratio 1 - step / beam size assumed when the probe size is guessed from a scan.

On the Siemens-star data (true overlap about 0.78) a guessed probe larger than the true one
converged as well as the file's probe, a smaller one (overlap 0.7 or less) much worse."""

HALF_POWER_PER_CONE = 0.69
"""Half-power diameter of a defocused annular zone-plate beam over its geometric diameter."""


def bright_field_radius_px(patterns: np.ndarray, fraction: float = 0.9) -> float:
    """Radius (detector pixels from the centre) holding ``fraction`` of the mean counts."""
    mean = np.mean(np.asarray(patterns, dtype=np.float64), axis=0)
    h, w = mean.shape
    rows, cols = np.indices((h, w))
    radius = np.hypot(rows - h // 2, cols - w // 2).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(np.maximum(mean.ravel()[order], 0))
    if cumulative[-1] <= 0:
        raise ValueError("the patterns hold no counts: cannot build a probe from the data")
    return float(radius[order][np.searchsorted(cumulative, fraction * cumulative[-1])])


def probe_diameter_guess_px(
    positions_px: np.ndarray, frame_shape: tuple[int, int], overlap: float = ASSUMED_OVERLAP
) -> float:
    """Geometric beam diameter (object pixels) a scan was probably designed for.

    The half-power beam size is the median nearest-neighbour step / (1 - overlap); the
    geometric (cone) diameter is that over `HALF_POWER_PER_CONE`, capped at 3/4 of the window.
    0 for a single position.
    """
    positions_px = np.asarray(positions_px, dtype=np.float64)
    if positions_px.shape[0] < 2:
        return 0.0
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(positions_px).query(positions_px, k=2)
    step = float(np.median(distances[:, 1]))
    diameter = step / (1.0 - overlap) / HALF_POWER_PER_CONE
    return min(diameter, 0.75 * min(frame_shape))


def probe_from_patterns(
    patterns: np.ndarray,
    valid: np.ndarray | None = None,
    diameter_px: float | None = None,
) -> np.ndarray:
    """A first probe guess from the data (and the scan geometry), as ptychodus and pty-chi do.

    The far-field modulus of the probe is taken from the mean pattern, sqrt(mean I), which
    fixes the numerical aperture (the bright-field disk, a central stop's shadow). With no
    ``diameter_px`` the phase is flat: a focused probe. With it, the far field gets the
    quadratic (Fresnel) phase of the defocus at which a cone of that aperture is
    ``diameter_px`` wide, ``phi(k) = -pi D |k|^2 / (2 rho N)`` (k and the bright-field radius
    rho in detector pixels, N the pattern side): overlapping scans are run out of focus with a
    beam several steps wide, and a probe of about the right size is a far better start than a
    focused one. Scaled so that sum |P|^2 is the mean total counts (photons).

    Args:
        patterns: (N, H, W) counts, centred.
        valid: (H, W) bool of measured pixels (unmeasured ones get zero modulus).
        diameter_px: beam diameter in object pixels (see `probe_diameter_guess_px`).
    """
    patterns = np.asarray(patterns)
    mean = np.maximum(np.mean(patterns, axis=0, dtype=np.float64), 0.0)
    if valid is not None:
        mean = np.where(valid, mean, 0.0)
    amplitude = np.sqrt(mean)
    if not amplitude.any():
        raise ValueError("the patterns hold no counts: cannot build a probe from the data")
    far = amplitude.astype(np.complex128)
    h, w = mean.shape
    if diameter_px:
        rho = max(bright_field_radius_px(patterns), 1.0)
        focal_px = max(h, w) / (2.0 * rho)  # about the focused spot size
        if diameter_px > focal_px:
            rows, cols = np.indices((h, w))
            k2 = (rows - h // 2) ** 2 + (cols - w // 2) ** 2
            far = far * np.exp(-1j * np.pi * diameter_px * k2 / (2.0 * rho * max(h, w)))
    # inverse of the centred unitary far_field: conj(F(conj(x)))
    probe = np.conj(far_field(np.conj(far).astype(np.complex64)))
    return scale_probe(probe, float(np.mean(np.sum(patterns, axis=(1, 2), dtype=np.float64))))


def probe_from_data(scan: PreparedScan, overlap: float = ASSUMED_OVERLAP) -> np.ndarray:
    """`probe_from_patterns` for a prepared scan, its beam sized for ``overlap`` (complex64).

    The beam diameter is `probe_diameter_guess_px` of the scan's positions at ``overlap``
    (1 - step / beam size); scaled so that sum |P|^2 is the mean counts of a pattern.
    """
    patterns = np.square(scan.amplitudes, dtype=np.float32)
    diameter = probe_diameter_guess_px(
        scan.grid.to_pixels(scan.positions_m), scan.frame_shape, overlap
    )
    probe = probe_from_patterns(patterns, scan.valid, diameter)
    return scale_probe(probe, scan.mean_counts)


def scale_probe(probe: np.ndarray, photons: float) -> np.ndarray:
    """``probe`` scaled so that sum |P|^2 = ``photons``."""
    power = float(np.sum(np.abs(probe) ** 2))
    if not power > 0:
        raise ValueError("the probe carries no intensity")
    return (probe * np.sqrt(photons / power)).astype(np.complex64)


def object_grid(
    positions_m: np.ndarray, pixel_size_m: float, frame_shape: tuple[int, int], margin_px: int
) -> PixelGrid:
    """The smallest grid (plus ``margin_px`` on every side) that holds every window.

    The first position's row and column fall on whole pixels of the grid; windows are
    ``frame_shape`` with the beam on pixel (H//2, W//2).
    """
    positions_m = np.asarray(positions_m, dtype=np.float64)
    lo = positions_m.min(axis=0)
    hi = positions_m.max(axis=0)
    half = np.array([frame_shape[0] // 2, frame_shape[1] // 2])
    origin = lo - (half + margin_px) * pixel_size_m
    span_px = np.ceil((hi - lo) / pixel_size_m - 1e-9).astype(int)
    # patch_corners rounds positions: +1 covers rounding up at the far end
    shape = span_px + np.array(frame_shape) + 2 * margin_px + 1
    return PixelGrid(
        float(pixel_size_m), (float(origin[0]), float(origin[1])), (int(shape[0]), int(shape[1]))
    )


def windows_outside(
    corners: np.ndarray, frame_shape: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """Indices of windows that do not lie entirely inside an object of ``shape``."""
    corners = np.asarray(corners)
    inside = (
        (corners[:, 0] >= 0)
        & (corners[:, 1] >= 0)
        & (corners[:, 0] + frame_shape[0] <= shape[0])
        & (corners[:, 1] + frame_shape[1] <= shape[1])
    )
    return np.flatnonzero(~inside)


def _initial_object(
    initial_object: ComplexImage | None, grid_options: ObjectOptions, dataset: PtychoDataset
) -> tuple[np.ndarray, PixelGrid]:
    pixel = dataset.object_pixel_size_m
    if initial_object is None:
        grid = object_grid(
            dataset.positions_m, pixel, dataset.pattern_shape, int(grid_options.margin_px)
        )
        return np.ones(grid.shape, dtype=np.complex64), grid
    if not isinstance(initial_object, ComplexImage):
        raise TypeError(
            f"initial_object must be a ComplexImage, got {type(initial_object).__name__}"
        )
    if not np.isclose(initial_object.pixel_size_m, pixel, rtol=PIXEL_SIZE_RTOL, atol=0.0):
        raise ValueError(
            f"initial object pixel size {initial_object.pixel_size_m:.6g} m differs from the "
            f"data's object pixel size {pixel:.6g} m"
        )
    array = np.asarray(initial_object.array)
    if not np.all(np.isfinite(array)):
        raise ValueError("the initial object holds NaN or infinite values")
    return array.astype(np.complex64), PixelGrid(pixel, initial_object.origin_m, array.shape)


def prepare(
    dataset: PtychoDataset,
    object_options: ObjectOptions,
    probe_options: ProbeOptions,
    *,
    initial_object: ComplexImage | None = None,
    initial_probe: np.ndarray | None = None,
) -> PreparedScan:
    """Check a data set and lay out everything an engine needs (see `PreparedScan`).

    Args:
        dataset: patterns (centred counts), positions (y, x) m and geometry.
        object_options, probe_options: grid margin, probe initialisation.
        initial_object: start from this object (e.g. a stitched CNN mosaic) on its own grid,
            which must have the data's object pixel size and hold every window.
        initial_probe: (H, W) complex probe on the readout grid; default the data set's.

    Raises:
        ValueError: NaN/inf in the patterns, a probe of the wrong shape or with NaN, a window
            outside the initial object, mismatched pixel sizes.
    """
    patterns = check_patterns(dataset.patterns)
    n, h, w = patterns.shape
    if dataset.positions_m.shape != (n, 2):
        raise ValueError(f"{n} patterns but positions of shape {dataset.positions_m.shape}")
    valid = (
        np.ones((h, w), bool)
        if dataset.valid_mask is None
        else np.asarray(dataset.valid_mask, bool)
    )
    if valid.shape != (h, w):
        raise ValueError(f"valid_mask shape {valid.shape} does not match patterns {(h, w)}")
    mean_counts = float(np.mean(np.sum(np.where(valid, patterns, 0), axis=(1, 2))))

    obj, grid = _initial_object(initial_object, object_options, dataset)
    corners, offsets = patch_corners(grid.to_pixels(dataset.positions_m), (h, w))
    outside = windows_outside(corners, (h, w), grid.shape)
    if outside.size:
        shown = ", ".join(str(i) for i in outside[:10]) + (" ..." if outside.size > 10 else "")
        raise ValueError(
            f"{outside.size} of {n} positions put the {h}x{w} window outside the "
            f"{grid.shape[0]}x{grid.shape[1]} object (positions {shown}); enlarge the initial "
            "object or drop those positions"
        )

    source = "given"
    probe = initial_probe
    if probe is None and probe_options.initial == "auto" and dataset.probe is not None:
        probe, source = dataset.probe, "dataset"
    if probe_options.initial == "data":
        probe = None
    if probe is None:
        diameter = probe_diameter_guess_px(grid.to_pixels(dataset.positions_m), (h, w))
        probe, source = probe_from_patterns(patterns, valid, diameter), "data"
    else:
        probe = np.asarray(probe)
        if probe.ndim == 3 and probe.shape[0] == 1:
            probe = probe[0]
        if probe.ndim not in (2, 3) or probe.shape[-2:] != (h, w) or probe.shape[0] == 0:
            raise ValueError(
                f"probe shape {probe.shape} does not match the patterns' {(h, w)} (a probe is "
                "(H, W), or (M, H, W) for M modes)"
            )
        if not np.all(np.isfinite(probe)):
            raise ValueError("the probe holds NaN or infinite values")
        if not np.any(probe):
            raise ValueError("the probe is zero everywhere")
        probe = probe.astype(np.complex64)
        if probe_options.rescale_to_data:
            probe = scale_probe(probe, mean_counts)

    amplitudes = np.sqrt(np.maximum(patterns, 0.0)).astype(np.float32)
    return PreparedScan(
        amplitudes=amplitudes,
        valid=valid,
        grid=grid,
        corners=corners,
        offsets=offsets,
        probe=probe,
        object=obj,
        positions_m=np.asarray(dataset.positions_m, dtype=np.float64),
        mean_counts=mean_counts,
        probe_source=source,
    )
