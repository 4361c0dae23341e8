"""What the studies share: the simulated scans, the model, and one way of scoring an image.

Scoring: every image (the network's mosaic, an ePIE object) is brought onto the object grid ePIE
makes for the scan (the mosaic through `recon.seed.seed_object`, the same resampling that seeds
ePIE) and compared with the ground truth there by `metrics.compare` (shift, phase ramp and
global phase removed) over the well-lit scanned area (summed probe intensity above
`REGION_THRESHOLD` of its maximum). The keys are those of `metrics.compare`, plus
``nrmse_scale_free`` (NRMSE after the optimal complex scale: the object-probe scale is a gauge
of ptychography, and ePIE normalises its object to unit RMS amplitude).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import ComplexImage, PtychoDataset
from ..metrics import compare, nrmse
from ..recon.quality import illuminated_mask, reference_on_grid

log = logging.getLogger(__name__)

REGION_THRESHOLD = 0.3
"""Scored region: summed probe intensity above this fraction of its maximum."""

DEMO_LETTERS = {"letter_height_m": (0.4e-6, 1.2e-6)}
"""The demo's test sample: letters the etched training set never had (docs/live-pipeline.md)."""

PAPER = {
    "refine": {
        "source": "review of PtychoNN (Fig. 3): NRMSE of the phase image",
        "network_only_nrmse": 0.08,
        "network_plus_10_epie_nrmse": 0.03,
        "epie_200_nrmse": 0.02,
        "speed_up_at_matching_quality": 20.0,
    },
    "overlap": {
        "source": "PtychoNN edge paper, Fig. 3A",
        "epie_below_80_percent_at_overlap": 0.6,
        "network_accuracy_at_overlap_0": "> 0.8",
        "step_ratio_for_80_percent": 2.5,
        "step_ratio_for_90_percent": 5.0,
    },
    "dose": {
        "source": "PtychoNN edge paper, Fig. 4 and Supplementary Fig. 1",
        "upscaled_10x_accuracy": 0.86,
        "retrained_accuracy_at_about_10_photons": "> 0.8",
    },
}


@dataclass
class Scene:
    """The simulated beamline a study scans (see `sim.SimBeamlineConfig`)."""

    sample: str = "letters"
    sample_options: dict = field(default_factory=lambda: dict(DEMO_LETTERS))
    photons: float = 1e6
    field_of_view_m: float = 4e-6
    seed: int = 0

    def beamline(self) -> Any:
        from ..sim import SimBeamline, SimBeamlineConfig

        config = SimBeamlineConfig(
            sample=self.sample,
            sample_options=dict(self.sample_options),
            photons=self.photons,
            field_of_view_m=(self.field_of_view_m, self.field_of_view_m),
            seed=self.seed,
        )
        return SimBeamline(config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spiral_scan(beamline: Any, extent_m: float, overlap: float) -> PtychoDataset:
    """A spiral over a disc of diameter ``extent_m`` at the given overlap ratio."""
    from ..sim.scans import scan_positions

    positions = scan_positions("spiral", (extent_m, extent_m), beamline.beam_size_on_sample_m,
                               overlap)  # fmt: skip
    return beamline.measure(positions)


def raster_scan(
    beamline: Any, extent_m: float, overlap: float, jitter_fraction: float = 0.1
) -> PtychoDataset:
    """A raster over a square of side ``extent_m`` at the given overlap ratio (any below 1),
    each point jittered by up to ``jitter_fraction`` of the step (no raster grid pathology)."""
    from ..sim.scans import scan_positions

    positions = scan_positions("raster", (extent_m, extent_m), beamline.beam_size_on_sample_m,
                               overlap, jitter_fraction=jitter_fraction)  # fmt: skip
    return beamline.measure(positions)


QUICK_RECIPE = {"n_patterns": 3000, "n_samples": 8, "epochs": 6}
"""The quick studies' model: the demo recipe on fewer patterns and epochs (about a minute to
train on two cores, cached like the demo model)."""


def study_model(model: str | Path | None, quick: bool) -> Path:
    """The model a study runs: the one given, else the cached demo model (quick: a smaller one
    of the same recipe), trained first when the cache has none."""
    if model is not None:
        return Path(model)
    from ..model.demo_model import DemoModelRecipe, ensure_demo_model

    recipe = DemoModelRecipe(**QUICK_RECIPE) if quick else DemoModelRecipe()
    return ensure_demo_model(recipe)


def object_grid_like(dataset: PtychoDataset, margin_px: int | None = None) -> Any:
    from ..recon.options import ObjectOptions
    from ..recon.prepare import object_grid

    margin = ObjectOptions().margin_px if margin_px is None else margin_px
    return object_grid(
        dataset.positions_m, dataset.object_pixel_size_m, dataset.pattern_shape, margin
    )


def score(image: ComplexImage, dataset: PtychoDataset, *, probe: np.ndarray | None = None) -> dict:
    """`metrics.compare` of an image on ePIE's grid with the truth (see the module docstring).

    Args:
        image: on the data's object grid (an ePIE object, or a mosaic through `seed_object`).
        dataset: the scan, with its ground truth and probe.
        probe: the illumination that defines the scored region (default the data set's).
    """
    if dataset.ground_truth is None:
        raise ValueError("scoring needs a simulated scan with its ground truth")
    truth = reference_on_grid(dataset.ground_truth, image)
    probe = dataset.probe if probe is None else probe
    region = illuminated_mask(probe, dataset.positions_m, image, REGION_THRESHOLD)
    scores = compare(image.array, truth, region)
    scores["nrmse_scale_free"] = float(nrmse(image.array, truth, region, scale_invariant=True))
    scores["region_pixels"] = int(region.sum())
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in scores.items()}  # fmt: skip


class Stopwatch:
    """``with Stopwatch() as t: ...; t.seconds``: wall time of a block, s; ``t.cpu_seconds``:
    this process's CPU time over the block, s (on a shared machine the wall time follows the
    other jobs' load, the CPU time of a one-thread run much less)."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.seconds = self.cpu_seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu_started


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, allow_nan=False, default=float) + "\n")
    return out


def figures_dir() -> Path:
    """The repository's ``docs/figures`` (editable install), else ``./docs/figures``."""
    here = Path(__file__).resolve().parents[3] / "docs" / "figures"
    return here if here.is_dir() else Path.cwd() / "docs" / "figures"
