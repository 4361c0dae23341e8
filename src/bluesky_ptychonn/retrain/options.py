"""Settings of the continual-learning loop, as typed dataclasses (JSON / TOML ready).

Defaults follow the paper (Babu et al. 2023): retrain when the structural similarity of the
model in service to the new labels is more than 10 % off, 50 more epochs with a cyclic learning
rate, Adam and MAE, the weights with the lowest loss on 10 % held out; when the model agrees with
the labels, reconstruction and retraining are suspended and the data are checked again hourly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

RECON_DEFAULTS: dict[str, Any] = {"algorithm": "epie", "iterations": 100, "progress": False}
"""The loop's ePIE settings (`recon.options.EPIEOptions` fields; the package's defaults else).

Kept as a plain mapping so that the RunEngine-side parts of the loop never import torch; the
labelling step builds and validates the option set on its worker."""


QUALITY_DEFAULTS: dict[str, Any] = {"half_scan": False, "max_noise_ratio": 2.5}
"""The loop's check of a reconstruction before it gives labels. The noise-ratio limit is 2.5,
not `recon.assessment`'s 2.0: the real Siemens star (shared/data) converges at 2.0 (measured
2.02 with the loop's ePIE, 100 iterations), simulated converged runs at 1.2-1.5, and runs stuck
in a wrong probe at 2.5-50."""


@dataclass
class GateOptions:
    """When the model in service is retrained.

    Attributes:
        tolerance_ssim: largest tolerated mismatch ``1 - mean phase SSIM`` (dimensionless) of
            the model in service against the new labels' held-out part, over the illuminated
            region. The paper's example: 0.10.
        tolerance_phase_rad: also retrain when the mean absolute phase error (rad, illuminated
            region) exceeds this; None: SSIM only.
        recheck_interval_s: while suspended, runs that finish sooner than this after the last
            check are skipped (no reconstruction at all); the next one is checked (s). The
            paper's example: hourly.
        holdout_fraction: fraction of each scan's labels frozen as holdout: never trained on,
            used to judge a challenger against the model in service.
        max_failed_challengers: after this many challengers in a row that did not beat the
            model in service, its own level on the frozen holdout becomes its validated level
            (the gate then measures drift from what it does, instead of retraining at every
            scan); until then each scan adds its labels and a new challenger is trained.
        residual_rise: early trigger: a run whose live physics residual (or stated phase
            uncertainty) over its last ``quality_window_frames`` frames rises above this
            factor times its first window's is reconstructed and checked even while the gate
            is suspended (`gate.LiveQuality`); None: no early trigger.
        quality_window_frames: frames per window of that comparison (median of each).
    """

    tolerance_ssim: float = 0.10
    tolerance_phase_rad: float | None = None
    recheck_interval_s: float = 3600.0
    holdout_fraction: float = 0.1
    max_failed_challengers: int = 3
    residual_rise: float | None = 1.5
    quality_window_frames: int = 50

    def validate(self) -> None:
        if self.residual_rise is not None and not self.residual_rise > 1:
            raise ValueError(f"residual_rise must exceed 1, got {self.residual_rise!r}")
        if int(self.quality_window_frames) != self.quality_window_frames or (
            self.quality_window_frames < 1
        ):
            raise ValueError(
                f"quality_window_frames must be a positive int, got {self.quality_window_frames!r}"
            )
        if not 0 < self.tolerance_ssim < 1:
            raise ValueError(f"tolerance_ssim must lie in (0, 1), got {self.tolerance_ssim!r}")
        if self.tolerance_phase_rad is not None and not self.tolerance_phase_rad > 0:
            raise ValueError(
                f"tolerance_phase_rad must be positive, got {self.tolerance_phase_rad!r}"
            )
        if not self.recheck_interval_s >= 0:
            raise ValueError(f"recheck_interval_s must be >= 0, got {self.recheck_interval_s!r}")
        failures = self.max_failed_challengers
        if int(failures) != failures or failures < 1:
            raise ValueError(f"max_failed_challengers must be a positive int, got {failures!r}")
        if not 0 < self.holdout_fraction < 0.5:
            raise ValueError(
                f"holdout_fraction must lie in (0, 0.5), got {self.holdout_fraction!r}"
            )


@dataclass
class ScratchModel:
    """The network built when no model is in service (the start of an experiment).

    Attributes:
        architecture: a `model.architectures` preset name ("edge" or "ptychonn").
        input_px: side of the network input (pixels); smaller frames set it.
        reduce: how larger frames become the input: ``"crop"`` (same field of view, object
            pixels coarser by frame / input: a 32-pixel crop of 128-pixel patterns images at
            4x ePIE's pixel, which caps the live image at 1.8x ePIE's phase error in `bench
            continual`) or ``"bin"`` (ePIE's object pixels, a field of view smaller by the bin
            factor, which must still hold the probe; the frame side must be a multiple of
            ``input_px``).
        base_channels, depth, batch_norm: as `ModelConfig.preset`.
        epochs: training epochs from scratch.
    """

    architecture: str = "edge"
    input_px: int = 32
    reduce: str = "crop"
    base_channels: int = 8
    depth: int = 3
    batch_norm: bool = True
    epochs: int = 60


@dataclass
class TrainOptions:
    """How a challenger is trained (warm start from the model in service, or from scratch).

    Attributes:
        epochs: fine-tuning epochs (the paper: 50).
        batch_size, learning_rate: Adam batch and peak of the cyclic learning rate.
        replay_pairs: at most this many pairs from earlier scans' labels join the new ones
            (so the model does not forget); drawn evenly over the earlier scans.
        min_improvement: a challenger is promoted only when its holdout phase error is below
            ``(1 - min_improvement)`` times the model in service's.
        threads: CPU threads for torch in the training step (None: the Dask worker's
            ``threads_per_worker``, or torch's default outside a worker).
        seed: seed of the split, shuffling, replay draw and initial weights.
    """

    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    replay_pairs: int = 4000
    min_improvement: float = 0.0
    threads: int | None = None
    seed: int = 0
    scratch: ScratchModel = field(default_factory=ScratchModel)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.replay_pairs < 0:
            raise ValueError(f"replay_pairs must be >= 0, got {self.replay_pairs!r}")
        if not 0 <= self.min_improvement < 1:
            raise ValueError(f"min_improvement must lie in [0, 1), got {self.min_improvement!r}")


@dataclass
class PromoteOptions:
    """How a promoted model reaches the endpoint.

    Attributes:
        onnx: also export ONNX (what the endpoint's ONNX Runtime / TensorRT engines load).
        int8: also ship an int8 graph calibrated on the scans' measured frames (set it when
            the endpoint runs int8: it then loads that graph at the hot swap instead of
            quantising on simulated patterns while the scan streams).
        push_attempts: attempts at the endpoint's hot swap before the push is left pending
            (retried at the next scan); the model stays registered either way.
        push_retry_s: first wait between attempts (doubles each time), s.
        push_timeout_s: reply timeout of one hot swap, s.
    """

    onnx: bool = True
    int8: bool = False
    push_attempts: int = 3
    push_retry_s: float = 0.5
    push_timeout_s: float = 120.0


@dataclass
class SeedOptions:
    """Starting the labels' ePIE from the run's live mosaic (the network's stitched image).

    Attributes:
        live_mosaic: seed ePIE with the run's final live mosaic when one exists (resampled to
            the data's object pixel size; areas the network did not see start neutral).
        iterations: ePIE iterations of a seeded reconstruction (None: ``recon``'s). A seed
            close to the answer needs fewer (the paper's review: network + 10 iterations
            near 200 from scratch; `bench continual` measures the loop's figure).
    """

    live_mosaic: bool = True
    iterations: int | None = None

    def validate(self) -> None:
        if self.iterations is not None and int(self.iterations) < 1:
            raise ValueError(f"seed.iterations must be >= 1 or None, got {self.iterations!r}")


@dataclass
class LoopOptions:
    """Everything the loop needs; `from_mapping` reads a TOML table / JSON object.

    Attributes:
        gate, train, promote: see their classes.
        recon: ePIE settings for the labels (see `RECON_DEFAULTS`).
        quality: the check a reconstruction must pass to give labels:
            `recon.assessment.AssessmentThresholds` fields (``max_noise_ratio``,
            ``max_error_trend``, ``max_resolution_px``, ``frc_threshold``) and ``half_scan``
            (also reconstruct the two half scans and judge their FRC resolution: about one
            more reconstruction). Default `QUALITY_DEFAULTS`: the data error and its trend.
        seed: seeding the labels' ePIE with the live mosaic (`SeedOptions`).
        step_retries: reruns of a step that raised (a diverged ePIE diverges again: 0). A step
            whose worker died is rerun by the scheduler regardless.
    """

    gate: GateOptions = field(default_factory=GateOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    promote: PromoteOptions = field(default_factory=PromoteOptions)
    recon: dict[str, Any] = field(default_factory=lambda: dict(RECON_DEFAULTS))
    quality: dict[str, Any] = field(default_factory=lambda: dict(QUALITY_DEFAULTS))
    seed: SeedOptions = field(default_factory=SeedOptions)
    step_retries: int = 0

    def validate(self) -> None:
        self.gate.validate()
        self.train.validate()
        self.seed.validate()
        if self.step_retries < 0:
            raise ValueError(f"step_retries must be >= 0, got {self.step_retries!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, table: dict[str, Any]) -> LoopOptions:
        """Options from a plain mapping; unknown keys raise ValueError naming them."""
        table = dict(table)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"unknown continual-learning options {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        nested = {
            "gate": GateOptions,
            "train": TrainOptions,
            "promote": PromoteOptions,
            "seed": SeedOptions,
        }
        for name, sub in nested.items():
            if name in table:
                kwargs[name] = _dataclass_from(sub, table.pop(name), name)
        if "recon" in table:
            recon = dict(RECON_DEFAULTS)
            recon.update(table.pop("recon"))
            kwargs["recon"] = recon
        kwargs.update(table)
        options = cls(**kwargs)
        options.validate()
        return options


def _dataclass_from(cls: type, value: Any, where: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table, got {type(value).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(value) - set(known)
    if unknown:
        raise ValueError(f"unknown {where} options {sorted(unknown)}")
    kwargs = dict(value)
    if cls is TrainOptions and isinstance(kwargs.get("scratch"), dict):
        kwargs["scratch"] = _dataclass_from(ScratchModel, kwargs["scratch"], f"{where}.scratch")
    return cls(**kwargs)
