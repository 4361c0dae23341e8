"""Study ``dose``: low-count data, a network trained at high counts and one retrained low.

The PtychoNN paper (Fig. 4, Supplementary Fig. 1): data at a tenth of the training counts,
scaled up by 10 into the network trained at high counts, kept 86 % accuracy; a network
retrained at counts scaled down by up to 10,000 kept over 80 % at about 10 photons per pattern.
Here: one jittered raster of the demo's letters measured at each dose (incident photons per
frame), imaged by (i) the model trained at the highest dose as it is, (ii) the same model with
the counts scaled up to its training dose (`inference.offline.network_image`'s
``intensity_scale``), (iii) a model of the same recipe retrained at that dose (the lowest doses
only), and reconstructed by ePIE. Scored like ``overlap``: at the network's pixel size, over
the scanned square, phase SSIM (Wang et al. 2004) as the accuracy, with phase RMS, NRMSE and
FRC in the JSON. Every model is trained by the package (`model.demo_model`, cached).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import ComplexImage
from ..recon.quality import resampled_on_grid
from .common import PAPER, Scene, Stopwatch, raster_scan
from .overlap import ACCURACY, _region, _scores

log = logging.getLogger(__name__)


@dataclass
class DoseOptions:
    """Settings of the ``dose`` study (``quick``: the small version of the tests)."""

    extent_m: float = 1.6e-6
    overlap: float = 0.5
    training_photons: float = 1e6
    doses: tuple[float, ...] = (1e6, 1e5, 1e4, 1e3, 1e2)
    retrained_doses: tuple[float, ...] = (1e4, 1e2)
    recipe: dict = field(default_factory=lambda: {"n_patterns": 8000, "n_samples": 16,
                                                  "epochs": 8})  # fmt: skip
    epie_iterations: int = 100
    scene: Scene = field(default_factory=Scene)

    @classmethod
    def quick(cls) -> DoseOptions:
        from .common import QUICK_RECIPE

        return cls(
            extent_m=1.0e-6,
            doses=(1e6, 1e3),
            retrained_doses=(1e3,),
            recipe=dict(QUICK_RECIPE),
            epie_iterations=20,
            scene=Scene(field_of_view_m=2.0e-6),
        )


def dose_model(options: DoseOptions, photons: float) -> Path:
    """The study's model trained at ``photons`` per frame (cached like the demo model)."""
    from ..model.demo_model import DemoModelRecipe, ensure_demo_model

    return ensure_demo_model(DemoModelRecipe(**options.recipe, photons=float(photons)))


def run_dose(
    options: DoseOptions, *, model: str | Path | None = None, quick: bool = False
) -> dict[str, Any]:
    """Run the study; return its JSON-ready record. ``model`` replaces the high-dose model."""
    from ..inference.offline import network_image
    from ..recon import EPIEOptions, reconstruct

    high = Path(model) if model is not None else dose_model(options, options.training_photons)
    rows: list[dict[str, Any]] = []
    images: dict[str, dict[float, ComplexImage]] = {}
    epie_options = EPIEOptions(iterations=options.epie_iterations)
    for photons in sorted(options.doses, reverse=True):
        scene = replace(options.scene, photons=float(photons))
        dataset = raster_scan(scene.beamline(), options.extent_m, options.overlap)
        log.info("dose %.3g photons: %d patterns", photons, dataset.n_patterns)
        mean_counts = float(np.mean(np.sum(dataset.patterns, axis=(1, 2))))
        candidates = [("network as trained", high, 1.0)]
        if photons != options.training_photons:
            candidates.append(("network, counts scaled up", high,
                               options.training_photons / photons))  # fmt: skip
        if photons in options.retrained_doses and photons != options.training_photons:
            candidates.append(("network retrained at this dose", dose_model(options, photons), 1.0))
        canvas = None
        for method, path, scale in candidates:
            with Stopwatch() as t:
                image = network_image(path, dataset, intensity_scale=scale).image
            canvas = canvas or image
            truth = resampled_on_grid(dataset.ground_truth, canvas)
            region = _region(canvas, options.extent_m, scene.beamline().beam_size_on_sample_m)
            rows.append({"photons": photons, "mean_counts": mean_counts, "method": method,
                         "intensity_scale": scale, "seconds": round(t.seconds, 3),
                         "vs_truth": _scores(image, truth, region)})  # fmt: skip
            images.setdefault(method, {})[photons] = image
        with Stopwatch() as t:
            epie_fine = reconstruct(dataset, epie_options).object
        epie = ComplexImage(
            resampled_on_grid(epie_fine, canvas), canvas.pixel_size_m, canvas.origin_m
        )
        rows.append({"photons": photons, "mean_counts": mean_counts, "method": "ePIE",
                     "intensity_scale": 1.0, "seconds": round(t.seconds, 3),
                     "vs_truth": _scores(epie, truth, region)})  # fmt: skip
        images.setdefault("ePIE", {})[photons] = epie
    record = {
        "study": "dose",
        "quick": quick,
        "high_dose_model": str(high),
        "accuracy": ACCURACY,
        "options": {"extent_m": options.extent_m, "overlap": options.overlap,
                    "training_photons": options.training_photons,
                    "doses": list(options.doses), "retrained_doses": list(options.retrained_doses),
                    "recipe": options.recipe, "epie_iterations": options.epie_iterations,
                    "scene": options.scene.to_dict()},
        "rows": rows,
        "paper": PAPER["dose"],
    }  # fmt: skip
    record["_images"] = images
    return record


def figure(record: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against dose for every method, and the images at the lowest dose."""
    from matplotlib.figure import Figure

    rows = record["rows"]
    images = record["_images"]
    methods = list(images)
    fig = Figure(figsize=(4 * (len(methods) + 1), 3.8), layout="constrained")
    axes = fig.subplots(1, len(methods) + 1)
    ax = axes[0]
    for method in methods:
        chosen = sorted((r for r in rows if r["method"] == method), key=lambda r: r["photons"])
        ax.plot([r["mean_counts"] for r in chosen],
                [r["vs_truth"][ACCURACY] for r in chosen], "o-", label=method)  # fmt: skip
    ax.set_xscale("log")
    ax.axhline(0.8, color="grey", ls=":")
    ax.set_xlabel("mean counts per pattern")
    ax.set_ylabel("phase SSIM (Wang et al. 2004)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    lowest = min(r["photons"] for r in rows)
    for ax, method in zip(axes[1:], methods, strict=True):
        image = images[method].get(lowest)
        if image is None:
            ax.set_axis_off()
            continue
        mean = np.mean(image.array)
        phase = np.angle(image.array * (np.conj(mean) / abs(mean) if abs(mean) else 1.0))
        ax.imshow(phase, cmap="gray", extent=[v * 1e6 for v in image.grid.extent_m])
        ax.set_title(f"{method}\n{lowest:g} photons", fontsize=9)
    fig.suptitle("dose")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
