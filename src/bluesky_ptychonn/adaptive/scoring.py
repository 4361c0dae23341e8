"""Pure score functions of the agent: what a point at each cell would add.

    score = unmeasured * (w_explore + w_structure * S + w_uncertainty * U) - travel

with ``unmeasured`` the share of the point's footprint not yet covered, ``S`` and ``U`` the
structure and uncertainty predicted at the cell from measured cells nearby (normalised
convolution: a Gaussian-weighted mean of what was measured within ``structure_length_m``;
where nothing was measured nearby, the mean over everything measured), each divided by its
90th percentile so that weights are comparable, and ``travel`` the stage's move from the
previous point in beam sizes times ``travel_cost_per_beam``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SUPPORT_MIN = 1e-3  # Gaussian-weighted measured weight below which a cell counts as unknown
NORMALISE_PERCENTILE = 90.0
CLIP = 2.0  # normalised structure / uncertainty are clipped to [0, CLIP]


def unmeasured_fraction(covered: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Share (0..1) of each cell's footprint not yet covered (outside the region counts as
    covered: nothing to gain there)."""
    kernel = footprint.astype(np.float64) / footprint.sum()
    return ndimage.correlate((~covered).astype(np.float64), kernel, mode="constant", cval=0.0)


def update_unmeasured(
    unmeasured: np.ndarray, covered: np.ndarray, footprint: np.ndarray, row: int, col: int
) -> None:
    """Recompute `unmeasured_fraction` in place where a footprint marked at (row, col) can
    have changed it (a window of two footprint radii), so a batch costs O(batch) windows."""
    r = footprint.shape[0] // 2
    rows, cols = covered.shape
    r0, r1 = max(row - 2 * r, 0), min(row + 2 * r + 1, rows)
    c0, c1 = max(col - 2 * r, 0), min(col + 2 * r + 1, cols)
    p0, p1 = max(r0 - r, 0), min(r1 + r, rows)
    q0, q1 = max(c0 - r, 0), min(c1 + r, cols)
    window = unmeasured_fraction(covered[p0:p1, q0:q1], footprint)
    unmeasured[r0:r1, c0:c1] = window[r0 - p0 : r1 - p0, c0 - q0 : c1 - q0]


def predicted(total: np.ndarray, weight: np.ndarray, sigma_cells: float) -> np.ndarray:
    """Normalised-convolution prediction of a measured quantity, normalised to its 90th
    percentile and clipped to [0, CLIP]; zeros when nothing was measured."""
    known = weight > 0
    if not known.any():
        return np.zeros_like(total)
    means = total[known] / weight[known]
    scale = float(np.percentile(means, NORMALISE_PERCENTILE))
    if not scale > 0:
        scale = float(means.max()) if means.max() > 0 else 1.0
    num = ndimage.gaussian_filter(total, sigma_cells, mode="constant")
    den = ndimage.gaussian_filter(weight, sigma_cells, mode="constant")
    prior = float(np.sum(total) / np.sum(weight))
    pred = np.where(den > SUPPORT_MIN, num / np.maximum(den, SUPPORT_MIN), prior)
    return np.clip(pred / scale, 0.0, CLIP)


def admissible(
    nearest_m: np.ndarray,
    beam_size_m: float,
    mode: str,
    min_overlap: float,
    max_overlap: float,
    min_distance_m: float,
) -> np.ndarray:
    """Cells where a new point keeps the mode's overlap with the nearest measured/pending one.

    ``no_overlap``: at least ``min_distance_m`` away. ``overlap``:
    between ``beam * (1 - max_overlap)`` and ``beam * (1 - min_overlap)`` away; anywhere for
    the first point.
    """
    tolerance = 1e-9 * beam_size_m
    if mode == "no_overlap":
        return nearest_m >= min_distance_m - tolerance
    if not np.isfinite(nearest_m).any():
        return np.ones(nearest_m.shape, dtype=bool)
    lo = beam_size_m * (1 - max_overlap) - tolerance
    hi = beam_size_m * (1 - min_overlap) + tolerance
    return (nearest_m >= lo) & (nearest_m <= hi)


def travel_m(cy: np.ndarray, cx: np.ndarray, from_m: tuple[float, float] | None) -> np.ndarray:
    """Distance of each cell centre from the previous position, m (0 without one)."""
    if from_m is None:
        return np.zeros(cy.shape)
    return np.hypot(cy - from_m[0], cx - from_m[1])
