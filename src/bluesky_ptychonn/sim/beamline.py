"""`SimBeamline`: sample, probe, detector and geometry of a simulated nanoprobe beamline.

It answers the questions a real beamline answers by measuring: the diffraction pattern at a
beam position (y, x) in metres, as the detector delivers it (counts, dtype, mask); and, since
it is a simulation, the ground-truth object patch there. The simulated detectors, the
simulated IOC and the demo all draw their frames from one `SimBeamline`.

Grids: the forward model runs on the detector's native crop (``sim_shape``, e.g. 512x512 for
the Medipix3), with object pixel size ``lambda z / (crop * pitch)``. Binning by b keeps the
object pixel size and shrinks the window to ``readout_shape`` (crop / b): ground-truth patches
and the probe handed to reconstructions live on that readout grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..dataset import ComplexImage, PtychoDataset
from ..geometry import PixelGrid, as_positions_m, object_pixel_size_m, wavelength_m
from .detector import DetectorModel, detector_preset
from .forward import FarFieldModel
from .probe import edge_intensity_fraction, fit_to_shape, focused_probe, probe_size_m
from .samples import make_sample

DEFAULT_OBJECT_PIXEL_SIZE_M = 10e-9
MAX_EDGE_INTENSITY_FRACTION = 0.05  # beyond this much probe power near the window's edge: warn


@dataclass
class SimBeamlineConfig:
    """Everything that defines a simulated beamline; printable, JSON-serialisable.

    Attributes:
        detector: detector preset name ("eiger", "medipix3").
        energy_ev: photon energy in eV.
        distance_m: sample-detector distance in metres; None chooses the distance that
            gives ``DEFAULT_OBJECT_PIXEL_SIZE_M`` (10 nm) object pixels.
        beam_size_m: focal spot FWHM in metres.
        defocus_m: sample distance from the focus in metres (0: in focus). The default
            250 um turns the 60 nm zone-plate focus into a ~0.36 um ring ("donut"), the kind
            of probe PtychoNN's published experiments used.
        probe_kind: "zone-plate", "airy" or "gaussian".
        central_stop: zone-plate central stop over outer diameter.
        photons: incident photons per frame (flux x exposure time).
        sample: sample kind ("etched", "siemens-star", "letters", "circuit", "image").
        material: material name of the sample's features.
        thickness_m: feature depth in metres.
        field_of_view_m: (height, width) of the sample region in metres that scans may visit
            (the sample array adds one detector window around it).
        sample_options: extra options of the sample kind (e.g. {"n_spokes": 36}).
        seed: seed of the sample's random features and of the counting noise.
    """

    detector: str = "eiger"
    energy_ev: float = 10_000.0
    distance_m: float | None = None
    beam_size_m: float = 60e-9
    defocus_m: float = 250e-6
    probe_kind: str = "zone-plate"
    central_stop: float = 0.3
    photons: float = 1e6
    sample: str = "etched"
    material: str = "gold"
    thickness_m: float = 500e-9
    field_of_view_m: tuple[float, float] = (4e-6, 4e-6)
    sample_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting."""
        wavelength_m(self.energy_ev)
        if self.distance_m is not None and not self.distance_m > 0:
            raise ValueError(f"distance_m must be positive, got {self.distance_m!r}")
        if not (np.isfinite(self.beam_size_m) and self.beam_size_m > 0):
            raise ValueError(
                f"beam size must be a positive length in metres, got {self.beam_size_m!r}"
            )
        if not (np.isfinite(self.photons) and self.photons > 0):
            raise ValueError(f"photons per frame must be positive, got {self.photons!r}")
        if not all(np.isfinite(f) and f > 0 for f in self.field_of_view_m):
            raise ValueError(
                f"field_of_view_m must be positive lengths, got {self.field_of_view_m!r}"
            )
        detector_preset(self.detector)


class SimBeamline:
    """A simulated beamline that delivers diffraction patterns at (y, x) positions in metres.

    Args:
        config: the beamline's settings.
        detector: a detector model that overrides ``config.detector`` (e.g. a modified preset).
        probe: a complex probe on the simulation grid (object pixels) that overrides the
            focused probe of the config; it is centre-cropped/padded to the grid and scaled to
            ``config.photons``.
        sample: a complex transmission that overrides the generated sample; it must have the
            beamline's object pixel size.
    """

    def __init__(
        self,
        config: SimBeamlineConfig | None = None,
        *,
        detector: DetectorModel | None = None,
        probe: np.ndarray | None = None,
        sample: ComplexImage | None = None,
    ):
        self.config = config or SimBeamlineConfig()
        self.config.validate()
        cfg = self.config
        self.detector = detector or detector_preset(cfg.detector)
        n_sim = self.detector.crop_px
        if cfg.distance_m is None:
            cfg.distance_m = (
                DEFAULT_OBJECT_PIXEL_SIZE_M
                * n_sim
                * self.detector.pixel_size_m
                / wavelength_m(cfg.energy_ev)
            )
        self.pixel_size_m = object_pixel_size_m(
            cfg.energy_ev, cfg.distance_m, self.detector.pixel_size_m, n_sim
        )
        self.sim_shape = (n_sim, n_sim)
        self.readout_shape = self.detector.readout_shape

        if probe is None:
            unit_probe = focused_probe(
                self.sim_shape,
                self.pixel_size_m,
                cfg.energy_ev,
                cfg.beam_size_m,
                kind=cfg.probe_kind,
                central_stop=cfg.central_stop,
                defocus_m=cfg.defocus_m,
            )
        else:
            unit_probe = fit_to_shape(np.asarray(probe), self.sim_shape)
            if unit_probe.ndim != 2:
                raise ValueError("SimBeamline takes a single-mode (H, W) probe")
            unit_probe = unit_probe / np.sqrt(np.sum(np.abs(unit_probe) ** 2))
        window_probe = fit_to_shape(unit_probe, self.readout_shape)
        spill = edge_intensity_fraction(window_probe)
        if spill > MAX_EDGE_INTENSITY_FRACTION:
            warnings.warn(
                f"{spill:.1%} of the probe's intensity lies in the outer 10% of the "
                f"{self.readout_shape[0]}-pixel window: patterns will alias; reduce defocus or "
                "beam size, or move the detector further away",
                stacklevel=2,
            )
        self.probe = (unit_probe * np.sqrt(cfg.photons)).astype(np.complex64)

        if sample is None:
            fov_px = [int(np.ceil(f / self.pixel_size_m)) for f in cfg.field_of_view_m]
            shape = (fov_px[0] + n_sim, fov_px[1] + n_sim)
            sample = make_sample(
                cfg.sample,
                shape,
                self.pixel_size_m,
                cfg.energy_ev,
                material_name=cfg.material,
                thickness_m=cfg.thickness_m,
                seed=cfg.seed,
                **cfg.sample_options,
            )
        elif not np.isclose(sample.pixel_size_m, self.pixel_size_m, rtol=1e-6, atol=0):
            raise ValueError(
                f"sample pixel size {sample.pixel_size_m:.4g} m differs from the beamline's "
                f"object pixel size {self.pixel_size_m:.4g} m"
            )
        self.sample = sample
        self._model = FarFieldModel(sample.array, sample.grid, self.probe)
        self._frames_served = 0  # frame counter that seeds the noise of unseeded calls

    # ---- geometry ---------------------------------------------------------------------------
    @property
    def energy_ev(self) -> float:
        return self.config.energy_ev

    @property
    def distance_m(self) -> float:
        return float(self.config.distance_m)

    @property
    def beam_size_on_sample_m(self) -> float:
        """Half-power diameter (m) of the probe at the sample: the size that sets the overlap."""
        return probe_size_m(self.probe, self.pixel_size_m)

    @property
    def probe_on_readout_grid(self) -> np.ndarray:
        """The probe on the readout window (centre crop), in sqrt(photons) per pixel."""
        return fit_to_shape(self.probe, self.readout_shape)

    @property
    def scan_limits_m(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((y_min, y_max), (x_min, x_max)) in metres where the beam stays on the sample."""
        h, w = self.config.field_of_view_m
        return ((-h / 2, h / 2), (-w / 2, w / 2))

    # ---- measurement --------------------------------------------------------------------------
    def expected_intensity(self, positions_m: np.ndarray) -> np.ndarray:
        """(B, crop, crop) expected photons per native detector pixel at each position."""
        return self._model.intensities(as_positions_m(positions_m))

    def frame_generators(self, frame_ids: np.ndarray, seed: int | None = None) -> list:
        """One random generator per frame, seeded by (seed, frame id): reproducible noise that
        does not depend on how frames are batched."""
        base = self.config.seed if seed is None else seed
        return [np.random.default_rng((base, 0x5EED, int(i))) for i in frame_ids]

    def _next_generators(self, count: int) -> list:
        ids = np.arange(self._frames_served, self._frames_served + count) + 2**32
        self._frames_served += count
        return self.frame_generators(ids)

    def patterns(
        self,
        positions_m: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        noise: bool = True,
    ) -> np.ndarray:
        """(B, r, r) frames as delivered by the detector (counts, detector dtype), centred.

        Args:
            positions_m: (B, 2) (y, x) beam positions in metres.
            rng: random generator of the counting noise (default: fresh noise for every frame
                the beamline serves, seeded by the config's seed and a frame counter).
            noise: False returns the noiseless expectation (float32), still masked,
                saturated and binned.
        """
        expected = self.expected_intensity(positions_m)
        if not noise:
            return self.detector.read_out(expected, None)
        return self.detector.read_out(expected, rng or self._next_generators(len(expected)))

    def pattern(self, y_m: float, x_m: float, rng: np.random.Generator | None = None) -> np.ndarray:
        """One frame at beam position (y, x) in metres."""
        return self.patterns(np.array([[y_m, x_m]]), rng)[0]

    def ground_truth_patches(self, positions_m: np.ndarray) -> np.ndarray:
        """(B, r, r) complex object patches on the readout window, beam centre on (r//2, r//2)."""
        return self._model.object_patches(as_positions_m(positions_m), self.readout_shape)

    def stream(
        self, positions_m: np.ndarray, batch_size: int = 64, seed: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index of first frame, (b, r, r) frames) over a scan, batch by batch.

        With ``seed`` the noise of frame i is fixed by (seed, i), whatever the batch size.
        """
        positions_m = as_positions_m(positions_m)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, positions_m.shape[0], batch_size):
            batch = positions_m[start : start + batch_size]
            if seed is None:
                rngs = self._next_generators(len(batch))
            else:
                rngs = self.frame_generators(np.arange(start, start + len(batch)), seed)
            yield start, self.detector.read_out(self.expected_intensity(batch), rngs)

    def measure(
        self, positions_m: np.ndarray, *, batch_size: int = 64, seed: int | None = None
    ) -> PtychoDataset:
        """A complete simulated scan as a `PtychoDataset`, with the ground truth attached."""
        positions_m = as_positions_m(positions_m)
        frames = np.empty((positions_m.shape[0], *self.readout_shape), dtype=self.detector.dtype)
        for start, batch in self.stream(positions_m, batch_size, seed):
            frames[start : start + batch.shape[0]] = batch
        return PtychoDataset(
            patterns=frames,
            positions_m=positions_m,
            energy_ev=self.energy_ev,
            distance_m=self.distance_m,
            detector_pixel_size_m=self.detector.readout_pixel_size_m,
            probe=self.probe_on_readout_grid,
            valid_mask=self.detector.readout_valid_mask,
            ground_truth=self.sample,
            metadata=self.describe(),
        )

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description of the beamline (config, derived geometry, detector)."""
        config = asdict(self.config)
        config["field_of_view_m"] = list(config["field_of_view_m"])
        return {
            "simulated": True,
            "config": config,
            "object_pixel_size_m": self.pixel_size_m,
            "beam_size_on_sample_m": self.beam_size_on_sample_m,
            "detector": {
                "name": self.detector.name,
                "readout_shape": list(self.readout_shape),
                "readout_pixel_size_m": self.detector.readout_pixel_size_m,
                "bin_factor": self.detector.bin_factor,
                "max_frame_rate_hz": self.detector.max_frame_rate_hz,
                "saturation_counts": self.detector.saturation_counts,
                "dtype": self.detector.dtype,
            },
        }

    def object_grid(self) -> PixelGrid:
        return self.sample.grid
