"""Units and coordinate conventions: the one place that converts between physical and pixel units.

Conventions (see ARCHITECTURE.md, "Contracts"):

* All lengths are in metres, energies in electronvolts.
* Arrays are indexed (row, column) = (y, x). Position arrays have shape (N, 2) and hold
  **(y, x)** beam positions in metres, in the same order as array indices.
* A position is where the beam centre sits on the object. x grows with the column index,
  y with the row index.
* An object array carries ``origin_m`` = (y, x) of the *centre* of its pixel [0, 0].
  Pixel (r, c) has its centre at ``origin_m + (r, c) * pixel_size_m``.
* A patch of shape (H, W) "at" a position has the beam centre on its pixel (H // 2, W // 2),
  the same pixel that holds zero frequency in a centred diffraction pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLANCK_EV_S = 4.135667696e-15
SPEED_OF_LIGHT_M_S = 299_792_458.0
ELECTRONVOLT_J = 1.602176634e-19
HC_EV_M = PLANCK_EV_S * SPEED_OF_LIGHT_M_S  # 1.23984e-6 eV m


METRES_PER_UNIT = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "nm": 1e-9}
"""Motor engineering units a stage may report, in metres per unit."""


def wavelength_m(energy_ev: float) -> float:
    """Photon wavelength in metres for a photon energy in eV."""
    if not np.isfinite(energy_ev) or energy_ev <= 0:
        raise ValueError(f"photon energy must be a positive number of eV, got {energy_ev!r}")
    return HC_EV_M / float(energy_ev)


def energy_ev_from_joules(energy_j: float) -> float:
    """Photon energy in eV from joules (CXI stores energies in J)."""
    return float(energy_j) / ELECTRONVOLT_J


def object_pixel_size_m(
    energy_ev: float, distance_m: float, detector_pixel_size_m: float, n_pixels: int
) -> float:
    """Real-space pixel size (m) of a far-field pattern of ``n_pixels`` detector pixels.

    ``lambda * z / (N * d)``: the reciprocal of the pattern's angular extent.
    """
    if distance_m <= 0 or detector_pixel_size_m <= 0 or n_pixels <= 0:
        raise ValueError(
            "distance_m, detector_pixel_size_m and n_pixels must be positive, got "
            f"{distance_m!r}, {detector_pixel_size_m!r}, {n_pixels!r}"
        )
    return wavelength_m(energy_ev) * distance_m / (n_pixels * detector_pixel_size_m)


@dataclass(frozen=True)
class PixelGrid:
    """A regular 2-D grid in metres: pixel (r, c) centre at ``origin_m + (r, c) * pixel_size_m``.

    Attributes:
        pixel_size_m: side of one (square) pixel in metres.
        origin_m: (y, x) in metres of the centre of pixel [0, 0].
        shape: (rows, columns).
    """

    pixel_size_m: float
    origin_m: tuple[float, float]
    shape: tuple[int, int]

    def to_pixels(self, positions_m: np.ndarray) -> np.ndarray:
        """(N, 2) (y, x) metres -> (N, 2) fractional (row, column) pixel coordinates."""
        positions_m = np.asarray(positions_m, dtype=np.float64)
        return (positions_m - np.asarray(self.origin_m)) / self.pixel_size_m

    def to_metres(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) fractional (row, column) pixel coordinates -> (N, 2) (y, x) metres."""
        pixels = np.asarray(pixels, dtype=np.float64)
        return pixels * self.pixel_size_m + np.asarray(self.origin_m)

    @property
    def extent_m(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) pixel edges in metres, for ``matplotlib.imshow(extent=...)``
        with ``origin="upper"`` semantics flipped to keep y growing downwards."""
        p = self.pixel_size_m
        y0, x0 = self.origin_m
        rows, cols = self.shape
        return (x0 - p / 2, x0 + (cols - 0.5) * p, y0 + (rows - 0.5) * p, y0 - p / 2)

    @classmethod
    def centred(cls, shape: tuple[int, int], pixel_size_m: float) -> PixelGrid:
        """A grid whose pixel (rows // 2, cols // 2) sits at (0, 0) m."""
        rows, cols = shape
        return cls(pixel_size_m, (-(rows // 2) * pixel_size_m, -(cols // 2) * pixel_size_m), shape)


def patch_corners(
    positions_px: np.ndarray, patch_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Integer top-left corners and sub-pixel remainders of patches centred at pixel positions.

    A patch at fractional pixel position ``p`` has its pixel (H//2, W//2) at ``p``; the integer
    corner is ``round(p) - (H//2, W//2)`` and the remainder ``p - round(p)`` lies in [-0.5, 0.5].

    Returns:
        corners: (N, 2) int64 (row, column) of each patch's pixel [0, 0] in the big array.
        remainders: (N, 2) float64 sub-pixel offsets of the beam centre from the patch centre.
    """
    positions_px = np.atleast_2d(np.asarray(positions_px, dtype=np.float64))
    if positions_px.shape[-1] != 2:
        raise ValueError(f"positions must have shape (N, 2), got {positions_px.shape}")
    if not np.all(np.isfinite(positions_px)):
        raise ValueError("positions contain NaN or infinite values")
    nearest = np.round(positions_px)
    half = np.array([patch_shape[0] // 2, patch_shape[1] // 2])
    return (nearest - half).astype(np.int64), positions_px - nearest


def as_positions_m(positions_m: np.ndarray) -> np.ndarray:
    """Validate and return an (N, 2) float64 array of (y, x) positions in metres."""
    positions = np.asarray(positions_m, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(
            f"positions must be an (N, 2) array of (y, x) metres, got {positions.shape}"
        )
    if positions.shape[0] == 0:
        raise ValueError("positions are empty: a scan needs at least one point")
    if not np.all(np.isfinite(positions)):
        bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
        raise ValueError(f"positions {bad[:10].tolist()} are NaN or infinite")
    return positions
