"""`RegionMap`: what the agent knows about its region, on a coarse grid of cells.

Cells are ``cell_fraction * beam_size`` wide; a cell centre is a candidate beam position.
The map holds, per cell: whether a measured (or pending) footprint covers it, the distance
to the nearest measured or pending point (m), and the measured phase structure and network
uncertainty as weighted sums (value x weight, weight), so that point summaries (`ingest`) and
whole mosaics (`observe_mosaic`) feed the same arrays. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import PixelGrid

COVERAGE_MARGIN_CELLS = 0.5


def wrapped_gradient_magnitude(phase_rad: np.ndarray, pixel_size_m: float) -> np.ndarray:
    """|grad phase| in rad/m with wrapped differences (phase jumps of 2 pi are not edges)."""
    phase = np.asarray(phase_rad, dtype=np.float64)
    gy = np.zeros_like(phase)
    gx = np.zeros_like(phase)
    gy[:-1] = np.angle(np.exp(1j * np.diff(phase, axis=0)))
    gx[:, :-1] = np.angle(np.exp(1j * np.diff(phase, axis=1)))
    return np.hypot(gy, gx) / pixel_size_m


def patch_structure(
    phase_rad: np.ndarray, pixel_size_m: float, weight: np.ndarray | None = None
) -> float:
    """The structure of one phase patch: weighted RMS of |grad phase|, rad/m.

    ``weight`` (same shape; e.g. the probe's intensity) says where the patch is trusted
    (default: the central half of the patch).
    """
    phase = np.asarray(phase_rad, dtype=np.float64)
    if phase.ndim != 2:
        raise ValueError(f"a phase patch is 2-D, got shape {phase.shape}")
    if weight is None:
        weight = np.zeros(phase.shape)
        h, w = phase.shape
        weight[h // 4 : h - h // 4, w // 4 : w - w // 4] = 1.0
    weight = np.asarray(weight, dtype=np.float64)
    if weight.shape != phase.shape:
        raise ValueError(f"weight {weight.shape} and phase {phase.shape} differ in shape")
    gradient = wrapped_gradient_magnitude(phase, pixel_size_m)
    total = weight.sum()
    if not total > 0:
        raise ValueError("the patch weight is zero everywhere")
    return float(np.sqrt(np.sum(weight * gradient**2) / total))


def disc(radius_cells: float) -> np.ndarray:
    """A boolean disc of the given radius in cells (odd square)."""
    r = int(np.ceil(radius_cells))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= radius_cells**2 + 1e-9


@dataclass
class CellGrid:
    """The region's cells: ``shape`` cells of ``cell_m`` with centre of cell [0, 0] at
    ``origin_m`` (y, x), m."""

    origin_m: tuple[float, float]
    cell_m: float
    shape: tuple[int, int]

    @classmethod
    def over(cls, region_m: tuple[float, float, float, float], cell_m: float) -> CellGrid:
        y0, y1, x0, x1 = region_m
        rows = max(1, int(np.floor((y1 - y0) / cell_m + 1e-9)) + 1)
        cols = max(1, int(np.floor((x1 - x0) / cell_m + 1e-9)) + 1)
        # centre the lattice in the region: both edges equally far from the outer cells
        oy = y0 + ((y1 - y0) - (rows - 1) * cell_m) / 2
        ox = x0 + ((x1 - x0) - (cols - 1) * cell_m) / 2
        return cls((oy, ox), cell_m, (rows, cols))

    @property
    def centres_m(self) -> tuple[np.ndarray, np.ndarray]:
        """(Y, X) arrays of cell-centre positions, m."""
        ys = self.origin_m[0] + self.cell_m * np.arange(self.shape[0])
        xs = self.origin_m[1] + self.cell_m * np.arange(self.shape[1])
        return np.meshgrid(ys, xs, indexing="ij")

    def to_cell(self, y_m: float, x_m: float) -> tuple[int, int]:
        """The (row, col) of the cell nearest to (y, x), clipped into the grid."""
        r = int(round((y_m - self.origin_m[0]) / self.cell_m))
        c = int(round((x_m - self.origin_m[1]) / self.cell_m))
        return min(max(r, 0), self.shape[0] - 1), min(max(c, 0), self.shape[1] - 1)

    def position_m(self, row: int, col: int) -> tuple[float, float]:
        return (self.origin_m[0] + row * self.cell_m, self.origin_m[1] + col * self.cell_m)


class RegionMap:
    """Coverage, distances, structure and uncertainty over a region (module docstring).

    Args:
        region_m: (y_min, y_max, x_min, x_max), m.
        cell_m: cell size, m.
        footprint_m: diameter of a point's footprint (the beam size), m.
    """

    def __init__(
        self, region_m: tuple[float, float, float, float], cell_m: float, footprint_m: float
    ):
        self.grid = CellGrid.over(region_m, cell_m)
        self.footprint_m = float(footprint_m)
        # conservative by half a cell: a cell counts as covered only when all of it lies
        # (nearly) inside a footprint, so that no sliver between footprints is taken as seen
        self.footprint = disc(max(footprint_m / 2 / cell_m - COVERAGE_MARGIN_CELLS, 0.5))
        shape = self.grid.shape
        self.covered = np.zeros(shape, dtype=bool)
        self.nearest_m = np.full(shape, np.inf)
        self.structure_sum = np.zeros(shape)
        self.structure_weight = np.zeros(shape)
        self.uncertainty_sum = np.zeros(shape)
        self.uncertainty_weight = np.zeros(shape)
        self._cy, self._cx = self.grid.centres_m

    # ---- points ---------------------------------------------------------------------------
    def _footprint_slices(self, row: int, col: int) -> tuple[slice, slice, slice, slice]:
        r = self.footprint.shape[0] // 2
        rows, cols = self.grid.shape
        r0, r1 = max(row - r, 0), min(row + r + 1, rows)
        c0, c1 = max(col - r, 0), min(col + r + 1, cols)
        return (
            slice(r0, r1),
            slice(c0, c1),
            slice(r0 - (row - r), r1 - (row - r)),
            slice(c0 - (col - r), c1 - (col - r)),
        )

    def mark(self, y_m: float, x_m: float) -> None:
        """A point is measured or pending there: its footprint is covered."""
        row, col = self.grid.to_cell(y_m, x_m)
        sr, sc, kr, kc = self._footprint_slices(row, col)
        self.covered[sr, sc] |= self.footprint[kr, kc]
        np.minimum(self.nearest_m, np.hypot(self._cy - y_m, self._cx - x_m), out=self.nearest_m)

    def rebuild(self, points_m: np.ndarray) -> None:
        """Coverage and distances from scratch for these (N, 2) (y, x) points, m."""
        self.covered[:] = False
        self.nearest_m[:] = np.inf
        for y, x in np.asarray(points_m, dtype=np.float64).reshape(-1, 2):
            self.mark(y, x)

    def add_value(
        self, kind: str, y_m: float, x_m: float, value: float, weight: float = 1.0
    ) -> None:
        """Spread a point's scalar (``"structure"`` rad/m or ``"uncertainty"`` rad) over its
        footprint."""
        total, weights = self._arrays(kind)
        row, col = self.grid.to_cell(y_m, x_m)
        sr, sc, kr, kc = self._footprint_slices(row, col)
        mask = self.footprint[kr, kc]
        total[sr, sc][mask] += weight * value
        weights[sr, sc][mask] += weight

    def set_map(self, kind: str, values: np.ndarray, weights: np.ndarray) -> None:
        """Replace a map with per-cell means and weights (e.g. from a mosaic)."""
        total, w = self._arrays(kind)
        values = np.nan_to_num(np.asarray(values, dtype=np.float64))
        total[:] = values * weights
        w[:] = weights

    def _arrays(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        if kind == "structure":
            return self.structure_sum, self.structure_weight
        if kind == "uncertainty":
            return self.uncertainty_sum, self.uncertainty_weight
        raise ValueError(f"unknown map {kind!r}: 'structure' or 'uncertainty'")

    @property
    def has_uncertainty(self) -> bool:
        return bool(self.uncertainty_weight.any())


def block_means(
    values: np.ndarray, valid: np.ndarray, source: PixelGrid, target: CellGrid
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over the ``valid`` source pixels that fall into each target cell,
    and the fraction of each cell's pixels that were valid (the weight)."""
    rows, cols = np.indices(values.shape)
    y = source.origin_m[0] + rows * source.pixel_size_m
    x = source.origin_m[1] + cols * source.pixel_size_m
    r = np.rint((y - target.origin_m[0]) / target.cell_m).astype(np.int64)
    c = np.rint((x - target.origin_m[1]) / target.cell_m).astype(np.int64)
    inside = (r >= 0) & (r < target.shape[0]) & (c >= 0) & (c < target.shape[1])
    index = (r * target.shape[1] + c)[inside]
    n = target.shape[0] * target.shape[1]
    count = np.bincount(index, minlength=n).astype(np.float64)
    keep = valid[inside].astype(np.float64)
    good = np.bincount(index, weights=keep, minlength=n)
    total = np.bincount(index, weights=keep * values[inside], minlength=n)
    mean = np.divide(total, good, out=np.zeros(n), where=good > 0)
    weight = np.divide(good, count, out=np.zeros(n), where=count > 0)
    return mean.reshape(target.shape), weight.reshape(target.shape)
