"""How good is a reconstruction, without a ground truth: the check before it becomes labels.

`assess_reconstruction(dataset, reconstruction_or_task, options)` returns a JSON-ready
`ReconstructionAssessment`:

* **data error** of the final object and probe (the iterations' normalised amplitude misfit,
  recomputed for the final state) against the **Poisson noise floor** the true object and
  probe would reach on these counts, computed from the model's intensities
  (`ReconstructionTask.data_error`): converged reconstructions of simulated scans measured
  1.16-1.54 times it (they also fit some noise, and predict fewer photons in dark pixels
  than the truth), the real Siemens star 1.98, stuck ones 2.5 to 50;
* **error trend**: last iteration's error over the lowest one (a run that wandered off its
  best);
* **half-scan FRC resolution**: the scan is split into its two interleaved halves (even and
  odd positions in scan order), each half is reconstructed on the full result's object grid,
  starting from the full result's probe (so both halves share the probe and their objects
  the gauge), and the Fourier ring correlation of the two objects over their commonly
  illuminated area (phase offset and ramp removed, `metrics.fourier_ring_correlation`) gives
  the half-period resolution at the half-bit (default) or 1/7 threshold. Two extra
  reconstructions, each of half the data: skip with ``half_scan=False``.

``passed`` is True when every judged quantity is within its `AssessmentThresholds`;
``reasons`` says, one sentence each, what failed. The continual-learning loop refuses labels
from a reconstruction that did not pass.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dataset import ComplexImage, PtychoDataset, Reconstruction
from ..metrics import fit_phase_ramp, fourier_ring_correlation
from .options import APOptions, EPIEOptions, ProbeOptions, options_from_dict
from .quality import illuminated_mask
from .task import ReconstructionDiverged, ReconstructionTask

FRC_THRESHOLDS = ("half-bit", "1/7")


@dataclass
class AssessmentThresholds:
    """Limits a reconstruction must meet to pass (all explicit, all configurable).

    Attributes:
        max_noise_ratio: the data error may be at most this many times the Poisson noise
            floor (dimensionless). Converged reconstructions of simulated 2e5-photon scans
            measured 1.16-1.54, the real Siemens-star scan 1.98 (real data carry what the
            model lacks: raise this for an instrument whose good reconstructions sit
            higher), stuck ones 2.5 (the zone-plate donut) to 50 (a wrong probe).
        max_error_trend: the last iteration's error may be at most this many times the lowest
            (dimensionless; a reshuffled order wobbles by about 1 %).
        max_resolution_px: the half-scan FRC resolution (half period) may be at most this many
            object pixels; None does not judge it (it is still reported).
        frc_threshold: "half-bit" (van Heel & Schatz 2005; for two half data sets) or "1/7".
    """

    max_noise_ratio: float = 2.0
    max_error_trend: float = 1.2
    max_resolution_px: float | None = 4.0
    frc_threshold: str = "half-bit"

    def validate(self) -> None:
        if not self.max_noise_ratio > 0:
            raise ValueError(f"max_noise_ratio must be positive, got {self.max_noise_ratio!r}")
        if not self.max_error_trend >= 1:
            raise ValueError(f"max_error_trend must be >= 1, got {self.max_error_trend!r}")
        if self.max_resolution_px is not None and not self.max_resolution_px > 0:
            raise ValueError(
                f"max_resolution_px must be positive or None, got {self.max_resolution_px!r}"
            )
        if self.frc_threshold not in FRC_THRESHOLDS:
            raise ValueError(
                f"frc_threshold must be one of {FRC_THRESHOLDS}, got {self.frc_threshold!r}"
            )


@dataclass
class ReconstructionAssessment:
    """A ground-truth-free verdict on a reconstruction (JSON-ready through `to_dict`).

    Attributes:
        passed: every judged quantity within its threshold.
        reasons: one sentence per failed check (empty when passed).
        data_error: final normalised amplitude misfit sum (|Psi| - sqrt(I))^2 / sum I.
        noise_floor: the misfit a perfect model would reach on these Poisson counts.
        noise_ratio: data_error / noise_floor.
        error_trend: last iteration's error / the lowest iteration error (1 = ended at best).
        iterations: iterations the reconstruction ran.
        half_scan_frc_resolution_m: half-period resolution (m) where the FRC of the two
            half-scan objects crosses the threshold; the pixel size when it never does (Nyquist
            limited); None when skipped or when the FRC is below the threshold everywhere.
        half_scan_frc_resolution_px: the same in object pixels.
        frc_threshold: "half-bit" or "1/7".
        frc_frequency, frc: the curve (fraction of Nyquist, correlation), for plots.
        seconds: wall time of the assessment (s).
        thresholds: the `AssessmentThresholds` used, as a dict.
    """

    passed: bool
    reasons: list[str]
    data_error: float
    noise_floor: float
    noise_ratio: float
    error_trend: float | None
    iterations: int
    half_scan_frc_resolution_m: float | None = None
    half_scan_frc_resolution_px: float | None = None
    frc_threshold: str = "half-bit"
    frc_frequency: list[float] = field(default_factory=list)
    frc: list[float] = field(default_factory=list)
    seconds: float = 0.0
    thresholds: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (NaN and infinities become None)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, list):
                return [clean(v) for v in value]
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return clean(dataclasses.asdict(self))


def _options_of(
    reconstruction: Reconstruction, options: EPIEOptions | APOptions | None
) -> EPIEOptions | APOptions:
    if options is not None:
        return options
    settings = {k: v for k, v in reconstruction.settings.items() if k != "run"}
    if settings:
        try:
            return options_from_dict(settings)
        except (TypeError, ValueError):
            pass
    return EPIEOptions()


def _frozen_task(
    dataset: PtychoDataset,
    options: EPIEOptions | APOptions,
    obj: ComplexImage,
    probe: np.ndarray,
) -> ReconstructionTask:
    """A task holding ``obj`` and ``probe`` as they are (no rescaling), to evaluate them."""
    from .api import make_task

    frozen = EPIEOptions(
        iterations=0,
        probe=ProbeOptions(
            update=False,
            rescale_to_data=False,
            trial_iterations=0,
            modes=1 if np.ndim(probe) == 2 else int(np.shape(probe)[0]),
        ),
        subpixel=options.subpixel,
        device=options.device,
    )
    return make_task(dataset, frozen, initial_object=obj, initial_probe=probe)


def _at_positions(dataset: PtychoDataset, reconstruction: Reconstruction) -> PtychoDataset:
    """The scan at the reconstruction's (possibly refined) positions."""
    positions = reconstruction.positions_m
    if positions is None or np.shape(positions) != np.shape(dataset.positions_m):
        return dataset
    return dataclasses.replace(dataset, positions_m=np.asarray(positions, dtype=np.float64))


def _half(dataset: PtychoDataset, parity: int) -> PtychoDataset:
    keep = np.arange(dataset.n_patterns) % 2 == parity
    return dataclasses.replace(
        dataset,
        patterns=np.asarray(dataset.patterns)[keep],
        positions_m=np.asarray(dataset.positions_m)[keep],
    )


def half_scan_frc(
    dataset: PtychoDataset,
    reconstruction: Reconstruction,
    options: EPIEOptions | APOptions,
    *,
    illumination_threshold: float = 0.1,
):
    """FRC of the objects reconstructed from the two interleaved halves of the scan.

    Each half (even, odd positions in scan order) is reconstructed with ``options`` on the
    full reconstruction's object grid, from free space and the full result's probe. The FRC
    is taken over the bounding box of the area both halves illuminate above
    ``illumination_threshold`` of their peak, after removing each object's mean, phase
    offset and phase ramp there and zeroing the rest of the box.

    Returns:
        (FRCResult, pixel size in m).
    """
    from .api import reconstruct

    grid_image = reconstruction.object
    free = ComplexImage(
        np.ones_like(grid_image.array, dtype=np.complex64),
        grid_image.pixel_size_m,
        grid_image.origin_m,
    )
    objects, masks = [], []
    dataset = _at_positions(dataset, reconstruction)
    if getattr(options, "positions", None) is not None and options.positions.correct:
        # the halves use the full result's refined positions as they are
        options = dataclasses.replace(
            options, positions=dataclasses.replace(options.positions, correct=False)
        )
    for parity in (0, 1):
        half = _half(dataset, parity)
        result = reconstruct(half, options, initial_object=free, initial_probe=reconstruction.probe)
        objects.append(result.object.array)
        masks.append(
            illuminated_mask(result.probe, half.positions_m, result.object, illumination_threshold)
        )
    common = masks[0] & masks[1]
    if common.sum() < 64:
        raise ValueError("the two half scans share too small an illuminated area for an FRC")
    rows = np.flatnonzero(common.any(axis=1))
    cols = np.flatnonzero(common.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    region = common[box]
    images = []
    for obj in objects:
        z = np.asarray(obj[box], dtype=np.complex128)
        a, b, c = fit_phase_ramp(z, region)
        r, q = np.indices(z.shape)
        z = z * np.exp(-1j * (a * r + b * q + c))
        z = np.where(region, z - z[region].mean(), 0)
        images.append(z)
    return fourier_ring_correlation(images[0], images[1]), grid_image.pixel_size_m


def assess_reconstruction(
    dataset: PtychoDataset,
    result: Reconstruction | ReconstructionTask,
    options: EPIEOptions | APOptions | None = None,
    *,
    half_scan: bool = True,
    thresholds: AssessmentThresholds | None = None,
) -> ReconstructionAssessment:
    """Judge a reconstruction without a ground truth (see the module docstring).

    Args:
        dataset: the scan that was reconstructed (patterns, positions, geometry).
        result: the `Reconstruction`, or the task that made it.
        options: the options it ran with (for the half-scan reconstructions and the
            sub-pixel setting); default the task's, or read from the result's settings.
        half_scan: also reconstruct the two interleaved half scans and measure their FRC
            resolution (costs about one more full reconstruction).
        thresholds: the limits for ``passed``; default `AssessmentThresholds()`.

    Returns:
        A `ReconstructionAssessment`.
    """
    started = time.perf_counter()
    thresholds = AssessmentThresholds() if thresholds is None else thresholds
    thresholds.validate()
    if isinstance(result, ReconstructionTask):
        options = result.options if options is None else options
        reconstruction = result.result()
    else:
        reconstruction = result
        options = _options_of(reconstruction, options)
    if reconstruction.probe is None:
        raise ValueError("the reconstruction has no probe: nothing to judge the data with")
    probe = np.asarray(reconstruction.probe)
    dataset = _at_positions(dataset, reconstruction)
    task = _frozen_task(dataset, options, reconstruction.object, probe)
    data_error, floor = task.data_error()
    ratio = data_error / floor if floor > 0 else math.inf
    history = np.asarray(reconstruction.error_history, dtype=np.float64)
    trend = float(history[-1] / history.min()) if history.size and history.min() > 0 else None

    reasons = []
    if not math.isfinite(data_error):
        reasons.append("the data error of the final object and probe is not finite")
    elif ratio > thresholds.max_noise_ratio:
        reasons.append(
            f"the data error {data_error:.3g} is {ratio:.2f} times the Poisson noise floor "
            f"{floor:.3g} (the limit is {thresholds.max_noise_ratio:g}): the object and probe "
            "do not explain the data"
        )
    if trend is not None and trend > thresholds.max_error_trend:
        reasons.append(
            f"the last iteration's error is {trend:.2f} times the lowest (the limit is "
            f"{thresholds.max_error_trend:g}): the reconstruction moved away from its best"
        )

    assessment = ReconstructionAssessment(
        passed=False,
        reasons=reasons,
        data_error=float(data_error),
        noise_floor=float(floor),
        noise_ratio=float(ratio),
        error_trend=trend,
        iterations=int(history.size),
        frc_threshold=thresholds.frc_threshold,
        thresholds=dataclasses.asdict(thresholds),
    )
    if half_scan:
        try:
            frc, pixel = half_scan_frc(dataset, reconstruction, options)
        except ReconstructionDiverged as error:
            reasons.append(f"a half-scan reconstruction failed: {error}")
            assessment.passed = False
            assessment.seconds = time.perf_counter() - started
            return assessment
        if thresholds.frc_threshold == "1/7":
            frc = dataclasses.replace(frc, threshold=np.full_like(frc.frc, 1.0 / 7.0))
        assessment.frc_frequency = [float(f) for f in frc.frequency]
        assessment.frc = [float(v) for v in np.nan_to_num(frc.frc)]
        crossing = frc.crossing_frequency()
        above = np.nan_to_num(frc.frc - frc.threshold, nan=-1.0)
        if crossing is not None and crossing > 0:
            resolution_px = 1.0 / crossing
        elif above[1:].min() >= 0:
            resolution_px = 1.0  # above the threshold up to Nyquist
        else:
            resolution_px = None
        assessment.half_scan_frc_resolution_px = resolution_px
        assessment.half_scan_frc_resolution_m = (
            None if resolution_px is None else resolution_px * pixel
        )
        limit = thresholds.max_resolution_px
        if limit is not None:
            if resolution_px is None:
                reasons.append(
                    f"the two half-scan reconstructions do not agree at any frequency (their "
                    f"FRC stays below the {thresholds.frc_threshold} threshold)"
                )
            elif resolution_px > limit:
                reasons.append(
                    f"the half-scan FRC resolution is {resolution_px:.1f} px "
                    f"({resolution_px * pixel * 1e9:.0f} nm; the limit is {limit:g} px): the "
                    "two halves of the scan agree only on coarse features"
                )
    assessment.passed = not reasons
    assessment.seconds = time.perf_counter() - started
    return assessment
