"""Step *labels*: a finished scan -> ePIE -> labels at each position, with a frozen holdout.

`labels_step` runs on a worker (Dask, Slurm) and talks to it through files only: it reads the
scan (CXI), reconstructs it with the package's ePIE (seeded by the live mosaic where there is
one), refuses a reconstruction that diverged (NaN, an error that grew, an amplitude far from
physical), cuts labels at every position with each patch's phase offset removed
(`model.data.training_set_from_reconstruction`), marks a seeded fraction of them as holdout
(never trained on), and writes:

* ``<out>.npz``: ``frames`` (N, h, w) counts, ``labels`` (N, 2, H, W) phase (rad) and
  amplitude, ``weights`` (H, W) probe intensity on the label grid, ``positions_m`` (N, 2),
  ``holdout`` (N,) bool; read back with ``allow_pickle=False``;
* ``<out>.json``: the lineage (scan uid, reconstruction options and result, label settings);
* ``<out>-recon.cxi``: the scan with its reconstruction.

It returns a JSON-ready summary. Nothing here is pickled to disk.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_AMPLITUDE = 3.0
"""Largest plausible median object amplitude of an X-ray transmission sample (dimensionless;
1 is free space). A reconstruction far above it has traded probe power for object amplitude."""

ERROR_GROWTH = 2.0
"""A reconstruction whose final data error exceeds this factor times its best has diverged."""


class LabelsRefused(ValueError):
    """The scan cannot give labels (diverged reconstruction, wrong pattern size, no positions)."""


@dataclass
class LabelSet:
    """Labels of one scan on the network's output grid (see the module docstring)."""

    frames: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    positions_m: np.ndarray
    holdout: np.ndarray
    label_pixel_size_m: float
    lineage: dict[str, Any]

    @property
    def n_pairs(self) -> int:
        return int(self.frames.shape[0])

    def save(self, stem: str | Path) -> Path:
        """Write ``<stem>.npz`` and ``<stem>.json``; return the npz path."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        npz = stem.with_suffix(".npz")
        tmp = stem.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            frames=self.frames,
            labels=self.labels.astype(np.float32),
            weights=self.weights.astype(np.float32),
            positions_m=self.positions_m.astype(np.float64),
            holdout=self.holdout.astype(bool),
            label_pixel_size_m=np.float64(self.label_pixel_size_m),
        )
        tmp.replace(npz)
        stem.with_suffix(".json").write_text(json.dumps(self.lineage, indent=2, default=str))
        return npz

    @classmethod
    def load(cls, path: str | Path) -> LabelSet:
        path = Path(path).with_suffix(".npz")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        lineage_path = path.with_suffix(".json")
        lineage = json.loads(lineage_path.read_text()) if lineage_path.is_file() else {}
        return cls(
            frames=arrays["frames"],
            labels=arrays["labels"],
            weights=arrays["weights"],
            positions_m=arrays["positions_m"],
            holdout=arrays["holdout"].astype(bool),
            label_pixel_size_m=float(arrays["label_pixel_size_m"]),
            lineage=lineage,
        )

    def part(self, holdout: bool) -> tuple[np.ndarray, np.ndarray]:
        """(frames, labels) of the holdout part (True) or the trainable part (False)."""
        index = self.holdout if holdout else ~self.holdout
        return self.frames[index], self.labels[index]


def holdout_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """(n,) bool: a seeded ``fraction`` of the pairs (at least one, leaving two to train)."""
    if n < 3:
        raise LabelsRefused(f"a scan of {n} patterns is too small to label (at least 3)")
    count = min(max(1, int(round(n * fraction))), n - 2)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:count]] = True
    return mask


def check_reconstruction(reconstruction: Any) -> dict[str, float]:
    """Refuse a reconstruction that diverged; return its health figures.

    Raises:
        LabelsRefused: NaN in the object, a final data error above `ERROR_GROWTH` times the
            best one, or a median illuminated amplitude above `MAX_AMPLITUDE`.
    """
    history = np.asarray(reconstruction.error_history, dtype=np.float64)
    array = np.asarray(reconstruction.object.array)
    if not np.all(np.isfinite(array)) or (history.size and not np.all(np.isfinite(history))):
        raise LabelsRefused("the reconstruction diverged: NaN or infinite values")
    figures: dict[str, float] = {}
    if history.size:
        best, last = float(history.min()), float(history[-1])
        figures.update(data_error=last, best_data_error=best)
        if last > ERROR_GROWTH * best:
            raise LabelsRefused(
                f"the reconstruction diverged: its data error grew from {best:.3g} to {last:.3g} "
                f"(more than {ERROR_GROWTH:g}x its best)"
            )
    amplitude = np.abs(array)
    lit = amplitude[amplitude > 0]
    median = float(np.median(lit)) if lit.size else 0.0
    figures["median_amplitude"] = median
    if median > MAX_AMPLITUDE:
        raise LabelsRefused(
            f"the reconstruction diverged: median object amplitude {median:.3g} is far from "
            f"physical (at most {MAX_AMPLITUDE:g} expected)"
        )
    return figures


def _assessment(
    dataset: Any, reconstruction: Any, options: Any, quality: dict[str, Any]
) -> dict[str, Any]:
    """The ground-truth-free quality check (`recon.assessment`) with the loop's thresholds."""
    from ..recon.assessment import AssessmentThresholds, assess_reconstruction

    quality = dict(quality)
    half_scan = bool(quality.pop("half_scan", False))
    thresholds = AssessmentThresholds(**quality)
    return assess_reconstruction(
        dataset, reconstruction, options, half_scan=half_scan, thresholds=thresholds
    ).to_dict()


def seed_from_mosaic(mosaic: Any, dataset: Any, options: Any) -> tuple[Any, str]:
    """The live mosaic (`ComplexImage`) on the ePIE object grid of ``dataset``, and a note.

    `recon.seed.seed_object` resamples it to the data's object pixel size (a cropping
    network's patches are coarser) onto the grid ePIE builds from the positions, with the
    grid margin of ``options``. Returns ``(None, why)`` when the mosaic covers too little of
    the scan (another region) or is not a finite image: the labels are then reconstructed
    from scratch, and the lineage says why.
    """
    from ..recon.seed import seed_object

    try:
        seed = seed_object(dataset, mosaic, margin_px=int(options.object.margin_px))
    except (ValueError, TypeError) as error:
        return None, f"live mosaic ignored: {error}"
    return seed, (
        f"seeded by the live mosaic ({mosaic.pixel_size_m * 1e9:.3g} nm pixels resampled to "
        f"the data's {dataset.object_pixel_size_m * 1e9:.3g} nm)"
    )


def _reconstruct_and_check(
    dataset: Any, options: Any, initial_object: Any, quality: dict[str, Any], scan_uid: str
) -> tuple[Any, dict[str, float], dict[str, Any]]:
    """ePIE of a scan and its checks; LabelsRefused when it fails or fails them."""
    from ..recon import reconstruct

    try:
        reconstruction = reconstruct(dataset, options, initial_object=initial_object)
    except (FloatingPointError, RuntimeError) as error:
        raise LabelsRefused(f"the reconstruction of scan {scan_uid} failed: {error}") from None
    health = check_reconstruction(reconstruction)
    assessment = _assessment(dataset, reconstruction, options, quality)
    if not assessment["passed"]:
        reasons = "; ".join(assessment.get("reasons", [])) or "quality check failed"
        raise LabelsRefused(f"the reconstruction of scan {scan_uid} failed its check: {reasons}")
    return reconstruction, health, assessment


def labels_step(
    scan_path: str,
    out_stem: str,
    *,
    preprocessing: dict[str, Any],
    recon: dict[str, Any],
    holdout_fraction: float,
    seed: int,
    scan_uid: str,
    quality: dict[str, Any] | None = None,
    initial_object_path: str | None = None,
    seeded_iterations: int | None = None,
) -> dict[str, Any]:
    """Reconstruct one scan and write its labels (see the module docstring); worker side.

    Args:
        scan_path: CXI file of the scan (patterns, positions, geometry; a probe if known).
        out_stem: path without suffix of the files written.
        preprocessing: `Preprocessing.to_dict()` of the network the labels are for.
        recon: ePIE options (`recon.options.options_to_dict` form; missing keys: defaults).
        holdout_fraction, seed: the frozen holdout draw.
        scan_uid: the run's uid (lineage).
        quality: `recon.assessment.AssessmentThresholds` fields plus ``half_scan`` (bool): the
            check a reconstruction must pass to give labels.
        initial_object_path: a CXI file whose reconstruction (the live mosaic) seeds ePIE
            (`seed_from_mosaic`); a seed that does not overlap the scan is ignored and the
            lineage says why.
        seeded_iterations: ePIE iterations when seeded (None: ``recon``'s).

    Raises:
        LabelsRefused: no positions, a diverged reconstruction, patterns of another size than
            the network's frames.
    """
    from ..model.data import training_set_from_reconstruction
    from ..model.preprocessing import Preprocessing
    from ..recon import options_from_dict
    from ..storage.cxi import read_cxi, read_reconstruction, write_cxi

    started = time.perf_counter()
    dataset = read_cxi(scan_path)
    prep = Preprocessing.from_dict(dict(preprocessing))
    if dataset.positions_m is None or dataset.positions_m.shape[0] != dataset.n_patterns:
        raise LabelsRefused(f"scan {scan_uid} has no position for every pattern")
    if tuple(dataset.pattern_shape) != tuple(prep.frame_shape):
        raise LabelsRefused(
            f"scan {scan_uid} has {dataset.pattern_shape[0]}x{dataset.pattern_shape[1]} "
            f"patterns but the network takes {prep.frame_shape[0]}x{prep.frame_shape[1]} frames"
        )
    options = options_from_dict(dict(recon))
    options.validate()
    initial_object, seed_note = None, None
    if initial_object_path:
        initial_object, seed_note = seed_from_mosaic(
            read_reconstruction(initial_object_path).object, dataset, options
        )
    unseeded = options_from_dict(dict(recon))
    if initial_object is not None and seeded_iterations:
        options.iterations = int(seeded_iterations)
    try:
        reconstruction, health, assessment = _reconstruct_and_check(
            dataset, options, initial_object, quality or {}, scan_uid
        )
    except LabelsRefused as error:
        if initial_object is None:
            raise
        # a seed only saves iterations: a seeded run that fails (a network image far from the
        # object, a probe guess the skipped probe trial would have replaced) starts again bare
        seed_note = (
            f"{seed_note}; the seeded reconstruction was refused ({error}): "
            "reconstructed from scratch"
        )
        initial_object, options = None, unseeded
        reconstruction, health, assessment = _reconstruct_and_check(
            dataset, options, None, quality or {}, scan_uid
        )
    recon_seconds = time.perf_counter() - started
    training_set = training_set_from_reconstruction(reconstruction, dataset, prep)
    holdout = holdout_mask(len(training_set), holdout_fraction, seed)
    lineage = {
        "scan_uid": scan_uid,
        "scan_path": str(scan_path),
        "reconstruction": {
            "algorithm": reconstruction.algorithm,
            "settings": reconstruction.settings,
            "health": health,
            "assessment": assessment,
            "seeded_by_mosaic": initial_object is not None,
            "seed": seed_note,
        },
        "labels": training_set.metadata,
        "preprocessing": prep.to_dict(),
        "holdout_fraction": holdout_fraction,
        "seed": seed,
    }
    label_set = LabelSet(
        frames=np.asarray(training_set.frames),
        labels=training_set.labels,
        weights=training_set.weights,
        positions_m=np.asarray(reconstruction.positions_m, dtype=np.float64),
        holdout=holdout,
        label_pixel_size_m=training_set.label_pixel_size_m,
        lineage=lineage,
    )
    stem = Path(out_stem)
    path = label_set.save(stem)
    recon_path = write_cxi(
        stem.with_name(stem.name + "-recon.cxi"), dataset, reconstruction, overwrite=True
    )
    return {
        "labels_path": str(path),
        "reconstruction_path": str(recon_path),
        "n_pairs": label_set.n_pairs,
        "n_holdout": int(holdout.sum()),
        "data_error": health.get("data_error"),
        "recon_seconds": round(recon_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "lineage": lineage,
    }
