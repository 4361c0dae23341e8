"""Scan trajectories in metres: Fermat spiral, raster (with jitter), sparse grid by overlap.

Every function returns an (N, 2) float64 array of (y, x) beam positions in metres, in the
order they are measured. The overlap ratio is the seeds' definition, ``1 - step / beam_size``,
where ``step`` is the distance to the nearest neighbouring position: 0 means touching patches,
negative values leave gaps, and it must stay below 1.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

MAX_POINTS = 10_000_000


def step_from_overlap(beam_size_m: float, overlap: float) -> float:
    """Nearest-neighbour step (m) that gives the overlap ratio ``1 - step / beam_size_m``."""
    if not (np.isfinite(beam_size_m) and beam_size_m > 0):
        raise ValueError(f"beam size must be a positive length in metres, got {beam_size_m!r}")
    if not np.isfinite(overlap) or overlap >= 1:
        raise ValueError(f"overlap ratio must be below 1 (1 - step/beam size), got {overlap!r}")
    return beam_size_m * (1.0 - overlap)


def nearest_neighbour_distances(positions_m: np.ndarray) -> np.ndarray:
    """Distance (m) from each position to its nearest other position."""
    positions_m = np.asarray(positions_m, dtype=np.float64)
    if positions_m.shape[0] < 2:
        raise ValueError("nearest-neighbour distances need at least two positions")
    distances, _ = cKDTree(positions_m).query(positions_m, k=2)
    return distances[:, 1]


def overlap_ratio(positions_m: np.ndarray, beam_size_m: float) -> float:
    """Overlap ratio ``1 - step / beam_size_m`` with step the median nearest-neighbour distance."""
    step = float(np.median(nearest_neighbour_distances(positions_m)))
    return 1.0 - step / beam_size_m


def _check_count(n_points: int) -> None:
    if n_points < 1:
        raise ValueError("the scan has no points: enlarge the area or shrink the step")
    if n_points > MAX_POINTS:
        raise ValueError(f"the scan would have {n_points} points (limit {MAX_POINTS})")


def _unit_spiral(n_points: int) -> np.ndarray:
    golden_angle = np.pi * (3.0 - np.sqrt(5.0))
    index = np.arange(n_points, dtype=np.float64)
    radius = np.sqrt(index)
    theta = index * golden_angle
    return np.stack([radius * np.sin(theta), radius * np.cos(theta)], axis=1)


def _unit_spiral_step(n_points: int) -> float:
    """Median nearest-neighbour distance of the unit-scale spiral (about 1.9 for large N)."""
    if n_points < 2:
        return 1.0
    return float(np.median(nearest_neighbour_distances(_unit_spiral(n_points))))


def fermat_spiral(
    radius_m: float,
    *,
    step_m: float | None = None,
    n_points: int | None = None,
    centre_m: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Fermat spiral (golden-angle, uniform density) filling a disc.

    Give exactly one of ``step_m`` (median nearest-neighbour distance, m) or ``n_points``.

    Args:
        radius_m: radius of the scanned disc in metres.
        step_m: nearest-neighbour distance in metres; use `step_from_overlap` to set it from
            the beam size and an overlap ratio.
        n_points: number of points instead of a step.
        centre_m: (y, x) centre of the spiral in metres.
    """
    if not (np.isfinite(radius_m) and radius_m >= 0):
        raise ValueError(f"spiral radius must be a non-negative length in metres, got {radius_m!r}")
    if (step_m is None) == (n_points is None):
        raise ValueError("give exactly one of step_m or n_points")
    if n_points is not None:
        _check_count(int(n_points))
        n = int(n_points)
        scale = radius_m / np.sqrt(max(n - 1, 1))
    else:
        if not (np.isfinite(step_m) and step_m > 0):
            raise ValueError(f"step must be a positive length in metres, got {step_m!r}")
        n = 2
        for _ in range(4):  # the unit spiral's step depends weakly on N: iterate to agreement
            scale = step_m / _unit_spiral_step(n)
            n_new = int(np.floor((radius_m / scale) ** 2)) + 1
            _check_count(n_new)
            if n_new == n:
                break
            n = n_new
        scale = step_m / _unit_spiral_step(n)
    return _unit_spiral(n) * scale + np.asarray(centre_m, dtype=np.float64)


def raster_scan(
    extent_m: tuple[float, float],
    step_m: float | tuple[float, float],
    *,
    jitter_fraction: float = 0.0,
    snake: bool = True,
    centre_m: tuple[float, float] = (0.0, 0.0),
    seed: int | None = 0,
) -> np.ndarray:
    """A rectangular grid, row by row (y outer, x inner).

    Args:
        extent_m: (height, width) of the scanned rectangle in metres; points span it.
        step_m: grid step in metres, one value or (y, x).
        jitter_fraction: each point moves by a uniform random offset of up to this fraction of
            the step along each axis, which breaks the raster's periodic artefacts.
        snake: reverse every other row (the motors do not fly back).
        centre_m: (y, x) centre in metres.
        seed: seed of the jitter.
    """
    step_y, step_x = (step_m, step_m) if np.isscalar(step_m) else step_m
    if not all(np.isfinite(s) and s > 0 for s in (step_y, step_x)):
        raise ValueError(f"raster step must be positive lengths in metres, got {step_m!r}")
    height, width = extent_m
    if not all(np.isfinite(e) and e >= 0 for e in (height, width)):
        raise ValueError(f"raster extent must be non-negative lengths in metres, got {extent_m!r}")
    if not 0 <= jitter_fraction < 0.5:
        raise ValueError(f"jitter_fraction must lie in [0, 0.5), got {jitter_fraction}")
    n_rows = int(np.floor(height / step_y + 1e-9)) + 1
    n_cols = int(np.floor(width / step_x + 1e-9)) + 1
    _check_count(n_rows * n_cols)
    ys = (np.arange(n_rows) - (n_rows - 1) / 2) * step_y
    xs = (np.arange(n_cols) - (n_cols - 1) / 2) * step_x
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    if snake:
        xx[1::2] = xx[1::2, ::-1]
    positions = np.stack([yy.ravel(), xx.ravel()], axis=1)
    if jitter_fraction > 0:
        rng = np.random.default_rng(seed)
        positions += (
            rng.uniform(-1, 1, positions.shape) * jitter_fraction * np.array([step_y, step_x])
        )
    return positions + np.asarray(centre_m, dtype=np.float64)


def sparse_grid(
    extent_m: tuple[float, float],
    beam_size_m: float,
    overlap: float,
    *,
    centre_m: tuple[float, float] = (0.0, 0.0),
    snake: bool = True,
) -> np.ndarray:
    """A raster whose step is set by the overlap ratio ``1 - step / beam_size_m``.

    Overlap 0 gives touching patches (the sparse scans a CNN can image and iterative
    reconstruction cannot); negative overlaps leave gaps between patches.
    """
    step = step_from_overlap(beam_size_m, overlap)
    return raster_scan(extent_m, step, snake=snake, centre_m=centre_m)


SCAN_PATTERNS = ("spiral", "raster", "sparse")


def scan_positions(
    pattern: str,
    extent_m: tuple[float, float],
    beam_size_m: float,
    overlap: float,
    *,
    jitter_fraction: float = 0.0,
    centre_m: tuple[float, float] = (0.0, 0.0),
    seed: int | None = 0,
) -> np.ndarray:
    """One entry point for the named patterns, each set by the beam size and overlap ratio.

    A spiral fills the disc inscribed in ``extent_m``; raster and sparse fill the rectangle.
    """
    step = step_from_overlap(beam_size_m, overlap)
    if pattern == "spiral":
        return fermat_spiral(min(extent_m) / 2, step_m=step, centre_m=centre_m)
    if pattern == "raster":
        return raster_scan(
            extent_m, step, jitter_fraction=jitter_fraction, centre_m=centre_m, seed=seed
        )
    if pattern == "sparse":
        return sparse_grid(extent_m, beam_size_m, overlap, centre_m=centre_m)
    raise ValueError(f"unknown scan pattern {pattern!r}; known: {SCAN_PATTERNS}")
