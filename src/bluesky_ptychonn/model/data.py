"""Training pairs: diffraction frames and (phase, amplitude) labels on the network's output grid.

Two sources, one label convention:

* `simulate_training_set`: the simulated beamline (`sim`) measures random samples (random
  etched layers by default, as the seeds trained) at random positions; labels are the ground
  truth object patches.
* `training_set_from_reconstruction`: an iterative reconstruction and the diffraction data it
  came from; labels are the reconstructed object cropped at each scan position, so that
  finished scans become training data (continual learning).

Label convention (both sources): the object patch whose pixel (H // 2, W // 2) holds the beam
centre, on the network's output grid (`Preprocessing.object_patch_geometry`: cropping the frame
coarsens the object pixels, binning shrinks the field of view), with the patch's own phase
offset removed: each patch is multiplied by ``exp(-i angle(sum(w * patch)))`` where ``w`` is the
probe intensity on the label grid (the patch's illuminated part decides its phase reference;
uniform weights when the probe is unknown). That is the amplitude- and illumination-weighted
circular mean phase, a gauge the network can learn, since diffraction intensities do not
depend on a global phase. Labels are (N, 2, H, W) float32: channel 0 phase in radians, channel 1
amplitude (dimensionless), the layout of the model output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dataset import PtychoDataset, Reconstruction
from ..geometry import as_positions_m
from ..sim import SimBeamline, SimBeamlineConfig
from ..sim.forward import FarFieldModel
from .preprocessing import Preprocessing

DEFAULT_DEFOCUS_M = 250e-6
DEFAULT_PHOTONS = 1e6


@dataclass
class TrainingSet:
    """Diffraction frames and labels for training or evaluation.

    Attributes:
        frames: (N, h, w) detector frames (photon counts, centred), before preprocessing.
        labels: (N, 2, H, W) float32, channel 0 phase (rad), channel 1 amplitude.
        weights: (H, W) float32 probe intensity on the label grid, normalised to max 1 (the
            illuminated part of each patch); all ones when the probe is unknown.
        label_pixel_size_m: pixel size of the labels in metres.
        metadata: provenance (source, sample kinds, seeds, beamline settings), JSON-ready.
        probe: (h, w) complex probe on the frame's object grid in sqrt(photons) that the
            frames were measured with (saved with a model for its physics check), or None.
    """

    frames: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    label_pixel_size_m: float
    metadata: dict[str, Any] = field(default_factory=dict)
    probe: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.frames.ndim != 3 or self.labels.ndim != 4 or self.labels.shape[1] != 2:
            raise ValueError(
                f"frames must be (N, h, w) and labels (N, 2, H, W), got {self.frames.shape} "
                f"and {self.labels.shape}"
            )
        if self.frames.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.frames.shape[0]} frames but {self.labels.shape[0]} labels")
        self.weights = np.asarray(self.weights, dtype=np.float32)
        if self.weights.shape != self.labels.shape[-2:]:
            raise ValueError(
                f"weights {self.weights.shape} do not match labels {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def subset(self, index: np.ndarray | slice) -> TrainingSet:
        return TrainingSet(
            self.frames[index],
            self.labels[index],
            self.weights,
            self.label_pixel_size_m,
            dict(self.metadata),
            self.probe,
        )

    @staticmethod
    def concatenate(parts: list[TrainingSet]) -> TrainingSet:
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if (
                p.labels.shape[1:] != first.labels.shape[1:]
                or p.frames.shape[1:] != first.frames.shape[1:]
            ):
                raise ValueError("training sets of different frame or label shapes")
            if not np.isclose(p.label_pixel_size_m, first.label_pixel_size_m, rtol=1e-3, atol=0.0):
                raise ValueError("training sets of different label pixel sizes")
        weights = np.mean([p.weights for p in parts], axis=0)
        return TrainingSet(
            np.concatenate([p.frames for p in parts]),
            np.concatenate([p.labels for p in parts]),
            weights / max(float(weights.max()), 1e-30),
            first.label_pixel_size_m,
            {"parts": [p.metadata for p in parts]},
            first.probe,
        )


# --------------------------------------------------------------------------------------------
# Label geometry and phase gauge
# --------------------------------------------------------------------------------------------


def remove_phase_offset(patches: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Patches (B, H, W) complex times ``exp(-i angle(sum(weights * patch)))`` each.

    The subtracted offset is the circular mean phase weighted by amplitude and ``weights``
    (e.g. the probe intensity); uniform weights when None.
    """
    patches = np.asarray(patches)
    w = np.ones(patches.shape[-2:]) if weights is None else np.asarray(weights)
    total = np.einsum("bij,ij->b", patches, w.astype(patches.real.dtype))
    phase = np.angle(total)
    return patches * np.exp(-1j * phase)[:, None, None].astype(patches.dtype)


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a
    b, h, w = a.shape
    return a.reshape(b, h // f, f, w // f, f).mean(axis=(2, 4))


def _label_patches(
    extract: Callable[[np.ndarray, tuple[int, int]], np.ndarray],
    positions_m: np.ndarray,
    pixel_size_m: float,
    preprocessing: Preprocessing,
) -> np.ndarray:
    """Complex patches on the label grid with the beam centre on pixel (H // 2, W // 2).

    ``extract(positions, shape)`` returns patches on the frame's object grid (pixel
    ``pixel_size_m``) with the object point at each position on pixel (shape // 2).
    """
    frame_shape, input_shape = preprocessing.frame_shape, preprocessing.input_shape
    if preprocessing.reduce == "bin" or preprocessing.factor == 1:
        return extract(positions_m, input_shape)
    f = preprocessing.factor
    # block (H//2, W//2) of f x f fine pixels must be centred on the beam: its centre lies
    # (f - 1) / 2 fine pixels after fine pixel (h//2, w//2), so move the patches by that much
    shifted = positions_m - (f - 1) / 2 * pixel_size_m
    return _block_mean(extract(shifted, frame_shape), f)


def label_weights(probe: np.ndarray | None, preprocessing: Preprocessing) -> np.ndarray:
    """(H, W) probe intensity on the label grid, max 1; ones when the probe is unknown.

    Args:
        probe: (h, w) or (modes, h, w) complex probe on the frame's object grid (the readout
            window), or None.
    """
    if probe is None:
        return np.ones(preprocessing.input_shape, dtype=np.float32)
    probe = np.asarray(probe)
    intensity = np.abs(probe) ** 2
    if intensity.ndim == 3:
        intensity = intensity.sum(axis=0)
    if intensity.shape != preprocessing.frame_shape:
        return np.ones(preprocessing.input_shape, dtype=np.float32)
    h, w = preprocessing.input_shape
    if preprocessing.reduce == "bin":
        top, left = intensity.shape[0] // 2 - h // 2, intensity.shape[1] // 2 - w // 2
        intensity = intensity[top : top + h, left : left + w]
    else:
        intensity = _block_mean(intensity[None], preprocessing.factor)[0]
    peak = float(intensity.max())
    if not peak > 0:
        return np.ones(preprocessing.input_shape, dtype=np.float32)
    return (intensity / peak).astype(np.float32)


def labels_from_patches(patches: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Complex patches (B, H, W) -> (B, 2, H, W) float32 labels (phase offset removed)."""
    patches = remove_phase_offset(patches, weights)
    return np.stack([np.angle(patches), np.abs(patches)], axis=1).astype(np.float32)


def illuminated_mask(weights: np.ndarray, fraction: float = 0.9) -> np.ndarray:
    """Bool (H, W): the smallest set of brightest pixels holding ``fraction`` of the intensity,
    filled to its bounding disc about the patch centre (where the network can see the object).
    """
    w = np.asarray(weights, dtype=np.float64)
    if np.all(w == w.flat[0]):
        return np.ones(w.shape, dtype=bool)
    rows, cols = np.indices(w.shape)
    r = np.hypot(rows - w.shape[0] // 2, cols - w.shape[1] // 2)
    order = np.argsort(r.ravel())
    cumulative = np.cumsum(w.ravel()[order]) / w.sum()
    radius = r.ravel()[order][np.searchsorted(cumulative, fraction)]
    return r <= max(radius, 4.0)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def simulate_training_set(
    n_patterns: int,
    preprocessing: Preprocessing,
    *,
    sample: str = "etched",
    n_samples: int = 8,
    detector: str = "eiger",
    defocus_m: float = DEFAULT_DEFOCUS_M,
    photons: float = DEFAULT_PHOTONS,
    field_of_view_m: tuple[float, float] = (3e-6, 3e-6),
    sample_options: dict[str, Any] | None = None,
    seed: int = 0,
    beamline_options: dict[str, Any] | None = None,
) -> TrainingSet:
    """Simulated frames and ground-truth labels from ``n_samples`` random samples.

    Each sample is a new random instance (seed ``seed * 1000 + k``) of ``sample``; the frames
    are spread evenly over the samples, at uniformly random beam positions inside the scan
    limits, with Poisson noise.

    Args:
        n_patterns: number of frames in all.
        preprocessing: gives the frame shape (must be the detector's readout shape) and the
            label grid.
        sample: sample kind ("etched", "siemens-star", "letters", "image").
        n_samples: number of distinct random samples.
        detector: detector preset ("eiger", "medipix3").
        defocus_m: sample distance from the probe focus in metres (250 um: the seeds' donut).
        photons: incident photons per frame.
        field_of_view_m: (height, width) in metres of each sample's scanned region.
        sample_options: options of the sample kind (e.g. {"n_spokes": 36}).
        seed: seed of the samples, the positions and the noise.
        beamline_options: further `SimBeamlineConfig` fields (e.g. {"beam_size_m": 80e-9}).
    """
    if n_patterns < 1 or n_samples < 1:
        raise ValueError("n_patterns and n_samples must be at least 1")
    n_samples = min(n_samples, n_patterns)
    counts = np.full(n_samples, n_patterns // n_samples)
    counts[: n_patterns % n_samples] += 1
    rng = np.random.default_rng(seed)
    frames, labels, weights = [], [], None
    label_pixel = probe = None
    configs = []
    for k, n in enumerate(counts):
        config = SimBeamlineConfig(
            detector=detector,
            defocus_m=defocus_m,
            photons=photons,
            sample=sample,
            field_of_view_m=tuple(field_of_view_m),
            sample_options=dict(sample_options or {}),
            seed=int(seed) * 1000 + k,
            **(beamline_options or {}),
        )
        beamline = SimBeamline(config)
        if beamline.readout_shape != preprocessing.frame_shape:
            raise ValueError(
                f"the {detector!r} detector delivers {beamline.readout_shape} frames but the "
                f"preprocessing expects {preprocessing.frame_shape}"
            )
        (y0, y1), (x0, x1) = beamline.scan_limits_m
        positions = np.stack([rng.uniform(y0, y1, n), rng.uniform(x0, x1, n)], axis=1)
        frames.append(beamline.patterns(positions, rng))
        if weights is None:
            probe = beamline.probe_on_readout_grid
            weights = label_weights(probe, preprocessing)
            label_pixel = preprocessing.object_patch_geometry(beamline.pixel_size_m)[0]

        def extract(pos: np.ndarray, shape: tuple[int, int], bl: SimBeamline = beamline):
            patches = bl.ground_truth_patches(pos)
            if shape == patches.shape[-2:]:
                return patches
            h, w = patches.shape[-2:]
            top, left = h // 2 - shape[0] // 2, w // 2 - shape[1] // 2
            return patches[:, top : top + shape[0], left : left + shape[1]]

        patches = _label_patches(extract, positions, beamline.pixel_size_m, preprocessing)
        labels.append(labels_from_patches(patches, weights))
        configs.append(beamline.describe()["config"])
    return TrainingSet(
        np.concatenate(frames),
        np.concatenate(labels),
        weights,
        float(label_pixel),
        {
            "source": "simulation",
            "sample": sample,
            "n_samples": int(n_samples),
            "n_patterns": int(n_patterns),
            "seed": int(seed),
            "beamline": configs[0],
        },
        probe,
    )


def training_set_from_reconstruction(
    reconstruction: Reconstruction,
    data: PtychoDataset,
    preprocessing: Preprocessing,
    *,
    use_reconstruction_positions: bool = True,
    normalise_amplitude: bool = True,
) -> TrainingSet:
    """Labels cropped from a reconstructed object at each scan position of its data.

    The object is cut at each position with the beam centre on the patch centre (the
    simulator's sub-pixel convention, `FarFieldModel.object_patches`), brought to the label
    grid, and each patch's phase offset is removed (module docstring).

    Args:
        reconstruction: the iterative result; its object must have the data's object pixel
            size ``lambda z / (h d)``.
        data: the diffraction frames (N, h, w) and positions it was reconstructed from.
        preprocessing: frame shape (must be the data's pattern shape) and label grid.
        use_reconstruction_positions: crop at the reconstruction's (possibly refined)
            positions when it has them, else at the data's.
        normalise_amplitude: divide amplitudes by their 99.9th percentile inside the
            illuminated region when that exceeds 1 (the sigmoid output stays below 1); the
            factor is recorded in the metadata.
    """
    if data.pattern_shape != preprocessing.frame_shape:
        raise ValueError(
            f"the data's patterns are {data.pattern_shape} but the preprocessing expects "
            f"{preprocessing.frame_shape} frames"
        )
    obj = reconstruction.object
    pixel = data.object_pixel_size_m
    if not np.isclose(obj.pixel_size_m, pixel, rtol=1e-3, atol=0.0):
        raise ValueError(
            f"the reconstruction's pixel size {obj.pixel_size_m:.4g} m differs from the data's "
            f"object pixel size {pixel:.4g} m (lambda z / (N d)); they must describe one scan"
        )
    positions = data.positions_m
    if use_reconstruction_positions and reconstruction.positions_m is not None:
        if reconstruction.positions_m.shape != positions.shape:
            raise ValueError(
                f"the reconstruction has {reconstruction.positions_m.shape[0]} positions, the "
                f"data {positions.shape[0]}"
            )
        positions = reconstruction.positions_m
    positions = as_positions_m(positions)
    probe = reconstruction.probe if reconstruction.probe is not None else data.probe
    if probe is not None and np.asarray(probe).shape[-2:] != data.pattern_shape:
        probe = data.probe
    weights = label_weights(probe, preprocessing)
    square = max(data.pattern_shape)
    model = FarFieldModel(obj.array, obj.grid, np.ones((square, square), dtype=np.complex64))

    def extract(pos: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return model.object_patches(pos, shape)

    patches = _label_patches(extract, positions, pixel, preprocessing)
    labels = labels_from_patches(patches, weights)
    amplitude_factor = 1.0
    if normalise_amplitude:
        mask = illuminated_mask(weights)
        high = float(np.percentile(labels[:, 1][:, mask], 99.9))
        if high > 1.0:
            amplitude_factor = 1.0 / high
            labels[:, 1] *= amplitude_factor
    return TrainingSet(
        np.asarray(data.patterns),
        labels,
        weights,
        float(preprocessing.object_patch_geometry(pixel)[0]),
        {
            "source": "reconstruction",
            "algorithm": reconstruction.algorithm,
            "n_patterns": int(data.n_patterns),
            "amplitude_factor": amplitude_factor,
            "data": {k: v for k, v in data.metadata.items() if isinstance(v, (str, int, float))},
        },
        None if probe is None else np.asarray(probe),
    )
