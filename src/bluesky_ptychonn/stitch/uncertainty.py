"""The phase uncertainty of a mosaic, and a mosaic weighted by it.

* `UncertaintyMosaic`: where a `Mosaic` averages patches with weights ``w`` (the probe-shaped
  weight, times ``v`` in the inverse-variance mode), the phase of a pixel is about
  ``sum(w phi) / sum(w)``; with each patch's stated uncertainty ``sigma`` (one standard
  deviation, rad) the mosaic's is

      independent errors:  sqrt(sum(w^2 sigma^2)) / sum(w)
      correlated errors:   sum(w sigma) / sum(w)              (the default, an upper bound)

  The network's errors in overlapping patches of one sample are far from independent (one
  network, the same feature seen twice), so the default states the weighted mean sigma;
  ``bench uncertainty`` measures the coverage of both on stitched scans.
* `InverseVarianceMosaic`: a `Mosaic` that weights every pixel of every patch by
  ``w (0.1 rad / sigma)^2`` instead of ``w``: confident pixels dominate where patches
  overlap. The same compiled
  pass does the work (`accumulate`), the phase through an amplitude scaled by the variance
  weight, plus one more pass for the weight sums the amplitude needs.

Both reuse `accumulate` and the canvas geometry of `Mosaic`; numpy and numba only.
"""

from __future__ import annotations

import numpy as np

from ..geometry import PixelGrid, as_positions_m, patch_corners
from .accumulate import accumulate
from .mosaic import MIN_OVERLAP_WEIGHT, Mosaic, MosaicSnapshot

ERROR_MODELS = ("correlated", "independent")
REFERENCE_SIGMA_RAD = 0.1
"""Stated sigma (rad) at which the inverse-variance weight is 1 (the probe weight alone)."""


def _sigma_stack(sigma: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    sigma = np.ascontiguousarray(sigma, dtype=np.float32).reshape(shape)
    if not np.all(np.isfinite(sigma)) or sigma.min(initial=0.0) < 0:
        raise ValueError("phase uncertainties must be finite and non-negative")
    return sigma


class UncertaintyMosaic:
    """Accumulates the stated phase uncertainty of patches on a mosaic's canvas.

    Args:
        grid: the canvas (the `Mosaic`'s grid).
        weight: (H, W) the patch weight the `Mosaic` uses.
    """

    def __init__(self, grid: PixelGrid, weight: np.ndarray):
        self.grid = grid
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.patch_shape = self.weight.shape
        self._square = np.ascontiguousarray(self.weight**2)
        # plane 2 of each: sum w v sigma, sum (w v sigma)^2 and sum w v (v = 1 unless the
        # patches were weighted by their variance too)
        self._linear = np.zeros((4, *grid.shape), dtype=np.float32)
        self._quadratic = np.zeros((4, *grid.shape), dtype=np.float32)
        self._weights = np.zeros((4, *grid.shape), dtype=np.float32)

    def add(
        self, sigma: np.ndarray, positions_m: np.ndarray, variance_weight: np.ndarray | None = None
    ) -> None:
        """Add (B, H, W) phase uncertainties (rad) of patches at (B, 2) (y, x) metres.

        ``variance_weight`` (B, H, W): the extra per-pixel weight an `InverseVarianceMosaic`
        gave the same patches (None: the plain probe weight).
        """
        positions_m = as_positions_m(np.atleast_2d(positions_m))
        sigma = _sigma_stack(sigma, (positions_m.shape[0], *self.patch_shape))
        corners, _ = patch_corners(self.grid.to_pixels(positions_m), self.patch_shape)
        zeros = np.zeros_like(sigma)
        v = np.ones_like(sigma) if variance_weight is None else variance_weight
        accumulate(self._linear, zeros, sigma * v, self.weight, corners)
        accumulate(self._quadratic, zeros, np.square(sigma * v), self._square, corners)
        accumulate(self._weights, zeros, v, self.weight, corners)

    def sigma(self, errors: str = "correlated") -> np.ndarray:
        """(R, C) float32 one standard deviation of the mosaic's phase (rad); NaN where no
        patch landed."""
        if errors not in ERROR_MODELS:
            raise ValueError(f"errors must be one of {ERROR_MODELS}, got {errors!r}")
        weights = self._weights[2]
        measured = weights > MIN_OVERLAP_WEIGHT
        safe = np.where(measured, weights, 1.0)
        if errors == "correlated":
            value = self._linear[2] / safe
        else:
            value = np.sqrt(np.maximum(self._quadratic[2], 0.0)) / safe
        return np.where(measured, value, np.nan).astype(np.float32)


class InverseVarianceMosaic(Mosaic):
    """A `Mosaic` weighting each patch pixel by ``w / sigma^2`` (see the module docstring).

    `add_with_uncertainty` takes the phase uncertainty with the patches; plain `add` (no
    uncertainty) weights as `Mosaic` does.
    """

    def __init__(self, grid: PixelGrid, weight: np.ndarray, **options):
        super().__init__(grid, weight, **options)
        self._v_canvas = np.zeros((4, *grid.shape), dtype=np.float32)  # plane 2: sum w v

    @staticmethod
    def variance_weights(sigma: np.ndarray) -> np.ndarray:
        """(B, H, W) float32 weights ``(REFERENCE_SIGMA_RAD / sigma)^2``, within 1e-3..1e3.

        One reference for every patch, so confident patches outweigh unsure ones; a patch
        without a stated sigma weighs as one stated at the reference."""
        sigma = np.maximum(np.asarray(sigma, dtype=np.float32), 1e-6)
        v = np.square(np.float32(REFERENCE_SIGMA_RAD) / sigma)
        return np.clip(v, 1e-3, 1e3).astype(np.float32)

    def add(self, phase, amplitude, positions_m):  # type: ignore[override]
        phase = np.asarray(phase, dtype=np.float32)
        if phase.ndim == 2:
            phase = phase[None]
        return self.add_with_uncertainty(phase, amplitude, None, positions_m)

    def add_with_uncertainty(
        self,
        phase: np.ndarray,
        amplitude: np.ndarray | None,
        sigma: np.ndarray | None,
        positions_m: np.ndarray,
    ) -> np.ndarray:
        """`Mosaic.add` with per-pixel weights from the stated sigma (rad); returns the
        rotations."""
        phase = np.ascontiguousarray(phase, dtype=np.float32)
        if phase.ndim == 2:
            phase = phase[None]
        unit = np.ones_like(phase) if amplitude is None else np.asarray(amplitude, np.float32)
        v = (
            np.ones_like(phase)
            if sigma is None
            else self.variance_weights(_sigma_stack(sigma, phase.shape))
        )
        positions = as_positions_m(np.atleast_2d(positions_m))
        rotations = super().add(phase, unit.reshape(phase.shape) * v, positions)
        corners, _ = patch_corners(self.grid.to_pixels(positions), self.patch_shape)
        accumulate(self._v_canvas, np.zeros_like(phase), v, self.weight, corners)
        return rotations

    def snapshot(self, model_version: str = "", **metrics) -> MosaicSnapshot:
        snap = super().snapshot(model_version, **metrics)
        v_sums = self._v_canvas[2]
        measured = v_sums > MIN_OVERLAP_WEIGHT
        # the canvas holds sum w A v: the amplitude is its mean over the weights w v
        snap.amplitude = np.where(
            measured, self._canvas[2] / np.where(measured, v_sums, 1.0), 0.0
        ).astype(np.float32)
        return snap
