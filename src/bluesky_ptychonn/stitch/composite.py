"""Images that grow beyond one run: the session's accumulated image and a scalar-field mosaic.

`Composite` puts the final mosaics of many runs on one canvas (one pixel lattice, grown to
cover every run) as the weighted complex mean ``Σ w·A·e^{iφ} / Σ w`` that the live mosaic uses,
so overlapping runs average without phase wrapping. A run at a different pixel size (another
model, another geometry) starts a new composite.

`ValueMosaic` is the weighted mean of a per-pixel scalar (e.g. the model's phase uncertainty in
radians) over patches at beam positions, on a fixed `PixelGrid`: the same placement as the
live mosaic (a patch's pixel (H//2, W//2) at the nearest pixel to its position), no phase.

Pure numpy; positions in metres are converted to pixels only through `geometry.PixelGrid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry import PixelGrid, patch_corners

__all__ = ["Composite", "CompositeImage", "ValueMosaic"]

PIXEL_SIZE_RTOL = 1e-3  # runs whose pixel sizes differ by less share one composite


@dataclass
class CompositeImage:
    """What a `Composite` holds now (copies).

    Attributes:
        phase: (R, C) radians, 0 where nothing was measured.
        amplitude: (R, C) weighted mean amplitude.
        weights: (R, C) summed weights of every run's mosaic (0: never measured).
        grid: where the pixels are (metres).
        runs: run uids accumulated, oldest first.
    """

    phase: np.ndarray
    amplitude: np.ndarray
    weights: np.ndarray
    grid: PixelGrid
    runs: list[str]


class Composite:
    """The accumulated image of a session's runs (see the module docstring)."""

    def __init__(self) -> None:
        self._field: np.ndarray | None = None  # Σ w·A·e^{iφ}, complex64
        self._amplitude: np.ndarray | None = None  # Σ w·A
        self._weights: np.ndarray | None = None  # Σ w
        self._grid: PixelGrid | None = None
        self.runs: list[str] = []

    def add(
        self,
        phase: np.ndarray,
        amplitude: np.ndarray,
        weights: np.ndarray,
        pixel_size_m: float,
        origin_m: tuple[float, float],
        run_uid: str = "",
    ) -> None:
        """Add one run's mosaic (phase in rad, amplitude, weights; pixel [0, 0] at ``origin_m``
        (y, x) metres)."""
        phase = np.asarray(phase, dtype=np.float32)
        shapes = {phase.shape, np.shape(amplitude), np.shape(weights)}
        if phase.ndim != 2 or len(shapes) != 1:
            raise ValueError(
                f"phase, amplitude and weights must be 2-D of one shape, got {phase.shape}, "
                f"{np.shape(amplitude)}, {np.shape(weights)}"
            )
        if not (pixel_size_m > 0 and math.isfinite(pixel_size_m)):
            raise ValueError(f"pixel_size_m must be a positive number, got {pixel_size_m!r}")
        grid = self._grid
        if grid is not None and not math.isclose(
            grid.pixel_size_m, pixel_size_m, rel_tol=PIXEL_SIZE_RTOL
        ):
            self.__init__()  # another pixel size: a new composite
            grid = None
        pixel = pixel_size_m if grid is None else grid.pixel_size_m
        # the run's pixel [0, 0] on the composite's lattice (runs share a lattice when their
        # origins are whole multiples of the pixel size, as Mosaic.covering makes them)
        corner = np.round(np.asarray(origin_m, dtype=float) / pixel).astype(np.int64)
        rows, cols = phase.shape
        if grid is None:
            lo, hi = corner, corner + (rows, cols)
        else:
            here = np.round(np.asarray(grid.origin_m) / pixel).astype(np.int64)
            lo = np.minimum(here, corner)
            hi = np.maximum(here + grid.shape, corner + (rows, cols))
        self._grow(lo, hi, pixel)
        offset = corner - np.round(np.asarray(self._grid.origin_m) / pixel).astype(np.int64)
        window = (slice(offset[0], offset[0] + rows), slice(offset[1], offset[1] + cols))
        w = np.asarray(weights, dtype=np.float32)
        a = np.asarray(amplitude, dtype=np.float32)
        self._field[window] += (w * a * np.exp(1j * phase)).astype(np.complex64)
        self._amplitude[window] += w * a
        self._weights[window] += w
        self.runs.append(run_uid)

    def _grow(self, lo: np.ndarray, hi: np.ndarray, pixel: float) -> None:
        shape = (int(hi[0] - lo[0]), int(hi[1] - lo[1]))
        grid = PixelGrid(pixel, (float(lo[0] * pixel), float(lo[1] * pixel)), shape)
        old, self._grid = self._grid, grid
        if old is not None and old.shape == shape and old.origin_m == grid.origin_m:
            return
        field = np.zeros(shape, np.complex64)
        amplitude = np.zeros(shape, np.float32)
        weights = np.zeros(shape, np.float32)
        if old is not None:
            at = np.round(np.asarray(old.origin_m) / pixel).astype(np.int64) - lo
            window = (slice(at[0], at[0] + old.shape[0]), slice(at[1], at[1] + old.shape[1]))
            field[window], amplitude[window], weights[window] = (
                self._field, self._amplitude, self._weights
            )  # fmt: skip
        self._field, self._amplitude, self._weights = field, amplitude, weights

    def image(self) -> CompositeImage | None:
        """The accumulated image now, or None before the first run."""
        if self._grid is None:
            return None
        measured = self._weights > 0
        amplitude = np.zeros_like(self._amplitude)
        amplitude[measured] = self._amplitude[measured] / self._weights[measured]
        phase = np.where(measured, np.angle(self._field), 0).astype(np.float32)
        return CompositeImage(phase, amplitude, self._weights.copy(), self._grid, list(self.runs))


class ValueMosaic:
    """Weighted mean of a per-pixel scalar over patches on a fixed grid (module docstring).

    Args:
        grid: the canvas (metres <-> pixels).
        weight: (H, W) weight of one patch (e.g. `gaussian_weight`), the patches' shape.
    """

    def __init__(self, grid: PixelGrid, weight: np.ndarray):
        self.grid = grid
        self.weight = np.asarray(weight, dtype=np.float32)
        self._sum = np.zeros(grid.shape, np.float64)
        self._weights = np.zeros(grid.shape, np.float64)
        self.patches = 0

    def add(self, values: np.ndarray, positions_m: np.ndarray) -> None:
        """Add (N, H, W) patches of the scalar whose beam centres sit at (N, 2) (y, x) m."""
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 3 or values.shape[1:] != self.weight.shape:
            raise ValueError(
                f"values must be (N, {self.weight.shape[0]}, {self.weight.shape[1]}), "
                f"got {values.shape}"
            )
        corners, _ = patch_corners(self.grid.to_pixels(positions_m), self.weight.shape)
        rows, cols = self.grid.shape
        h, w = self.weight.shape
        for value, (r, c) in zip(values, corners, strict=True):
            r0, c0, r1, c1 = max(r, 0), max(c, 0), min(r + h, rows), min(c + w, cols)
            if r0 >= r1 or c0 >= c1:
                continue  # entirely outside the canvas
            patch = (slice(r0 - r, r1 - r), slice(c0 - c, c1 - c))
            weight = self.weight[patch]
            self._sum[r0:r1, c0:c1] += weight * value[patch]
            self._weights[r0:r1, c0:c1] += weight
            self.patches += 1

    def mean(self) -> np.ndarray:
        """(R, C) float32 weighted mean, NaN where no patch reached."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._weights > 0, self._sum / self._weights, np.nan).astype(
                np.float32
            )
