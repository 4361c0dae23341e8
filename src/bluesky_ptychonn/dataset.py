"""In-memory containers for a ptychography data set and a reconstruction.

These are the objects that pass between the simulator (`sim`), iterative reconstruction
(`recon`), training (`model`) and storage (`storage`: CXI, Tiled). They hold arrays in the
package's conventions (see `geometry`): patterns centred (zero frequency at the centre),
positions (N, 2) as (y, x) metres of the beam on the object, complex images (row=y, column=x).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import PixelGrid, as_positions_m, object_pixel_size_m, wavelength_m


@dataclass
class ComplexImage:
    """A complex image on a metric grid (an object transmission or a reconstruction).

    Attributes:
        array: (H, W) complex array, row = y, column = x.
        pixel_size_m: pixel side in metres.
        origin_m: (y, x) metres of the centre of pixel [0, 0].
    """

    array: np.ndarray
    pixel_size_m: float
    origin_m: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 2:
            raise ValueError(f"a complex image must be 2-D, got shape {self.array.shape}")
        if not self.pixel_size_m > 0:
            raise ValueError(f"pixel_size_m must be positive, got {self.pixel_size_m!r}")
        self.origin_m = (float(self.origin_m[0]), float(self.origin_m[1]))

    @property
    def grid(self) -> PixelGrid:
        return PixelGrid(self.pixel_size_m, self.origin_m, self.array.shape)

    @property
    def phase(self) -> np.ndarray:
        """Phase in radians."""
        return np.angle(self.array)

    @property
    def amplitude(self) -> np.ndarray:
        """Modulus (transmission amplitude, dimensionless)."""
        return np.abs(self.array)


@dataclass
class PtychoDataset:
    """Diffraction patterns, scan positions and geometry of one ptychographic scan.

    Attributes:
        patterns: (N, H, W) photon counts, zero frequency at the centre of each pattern.
        positions_m: (N, 2) (y, x) positions of the beam centre on the object, metres.
        energy_ev: photon energy in eV.
        distance_m: sample-to-detector distance in metres.
        detector_pixel_size_m: side of one (binned) detector pixel in metres.
        probe: (H, W) complex probe on the object-pixel grid, or None when unknown.
        valid_mask: (H, W) bool, True where detector pixels are valid; None means all valid.
        ground_truth: the simulated object, when known.
        metadata: free-form provenance (sample, detector, scan pattern, simulation settings).
    """

    patterns: np.ndarray
    positions_m: np.ndarray
    energy_ev: float
    distance_m: float
    detector_pixel_size_m: float
    probe: np.ndarray | None = None
    valid_mask: np.ndarray | None = None
    ground_truth: ComplexImage | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patterns = np.asarray(self.patterns)
        if self.patterns.ndim != 3:
            raise ValueError(f"patterns must be (N, H, W), got shape {self.patterns.shape}")
        if self.patterns.shape[0] == 0:
            raise ValueError("the data set holds no diffraction patterns")
        self.positions_m = as_positions_m(self.positions_m)
        if self.positions_m.shape[0] != self.patterns.shape[0]:
            raise ValueError(
                f"{self.patterns.shape[0]} patterns but {self.positions_m.shape[0]} positions"
            )
        wavelength_m(self.energy_ev)  # validates the energy
        if not (self.distance_m > 0 and self.detector_pixel_size_m > 0):
            raise ValueError("distance_m and detector_pixel_size_m must be positive")
        if self.probe is not None:
            self.probe = np.asarray(self.probe)
            if self.probe.shape[-2:] != self.pattern_shape:
                raise ValueError(
                    f"probe shape {self.probe.shape} does not match patterns {self.pattern_shape}"
                )
        if self.valid_mask is not None:
            self.valid_mask = np.asarray(self.valid_mask, dtype=bool)
            if self.valid_mask.shape != self.pattern_shape:
                raise ValueError(
                    f"valid_mask shape {self.valid_mask.shape} does not match {self.pattern_shape}"
                )

    @property
    def n_patterns(self) -> int:
        return int(self.patterns.shape[0])

    @property
    def pattern_shape(self) -> tuple[int, int]:
        return (int(self.patterns.shape[1]), int(self.patterns.shape[2]))

    @property
    def wavelength_m(self) -> float:
        return wavelength_m(self.energy_ev)

    @property
    def object_pixel_size_m(self) -> float:
        """Real-space pixel size implied by the geometry (square patterns assumed)."""
        return object_pixel_size_m(
            self.energy_ev, self.distance_m, self.detector_pixel_size_m, self.pattern_shape[1]
        )


@dataclass
class Reconstruction:
    """The result of a reconstruction (iterative or stitched CNN patches).

    Attributes:
        object: the complex object on its grid.
        probe: (H, W) or (modes, H, W) complex probe, or None (CNN mosaics have none).
        positions_m: (N, 2) (y, x) metres, possibly refined.
        error_history: one value per iteration (algorithm-defined data error), may be empty.
        algorithm: e.g. "epie", "ap", "ptychonn-stitch".
        settings: the options the algorithm ran with, JSON-serialisable.
    """

    object: ComplexImage
    probe: np.ndarray | None = None
    positions_m: np.ndarray | None = None
    error_history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    algorithm: str = "unknown"
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.error_history = np.asarray(self.error_history, dtype=np.float64).ravel()
        if self.positions_m is not None:
            self.positions_m = as_positions_m(self.positions_m)
