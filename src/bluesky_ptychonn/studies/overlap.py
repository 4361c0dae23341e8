"""Study ``overlap``: accuracy against the overlap ratio, for the network's image and for ePIE.

The PtychoNN paper (Fig. 3A): ePIE's accuracy falls below 80 % at an overlap of 0.6, the
network keeps over 80 % with no overlap at all; for 80 % (90 %) accuracy the network allows a
2.5x (5x) larger step. Here: jittered raster scans of the demo's letters over one square at
overlap ratios from 0.88 down to below 0 (1 - step / beam size; negative: gaps between the
beams), each reconstructed by ePIE from free space and imaged by the model (stitched with the
probe's weight). The question is how much overlap each method needs, not how fine its pixels
are, so every image is scored at the network's pixel size (the demo model's are 4x ePIE's): the
ePIE object, the reference and the truth are resampled onto the mosaic's canvas
(`recon.quality.resampled_on_grid`, as the demo scores its mosaics), and compared over the same
fixed square (the scanned square less half a beam on each side: unmeasured gaps count) against
the ground truth and against ePIE of the 0.88 scan (the paper's reference). The same scores on
ePIE's own (finer) grid, the mosaic resampled there as it is to seed ePIE
(`recon.seed.seed_object`), are kept under ``fine_vs_truth`` and ``fine_vs_epie_reference``:
there the network's coarser pixels cost it most of its accuracy at every overlap. "Accuracy"
is the phase SSIM as Wang et al. (2004) define it (the paper cites it); the JSON also holds
phase RMS, NRMSE and FRC resolution of every image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import ComplexImage
from ..metrics import compare
from ..recon.quality import reference_on_grid, resampled_on_grid
from .common import PAPER, Scene, Stopwatch, raster_scan, study_model

log = logging.getLogger(__name__)

ACCURACY = "phase_ssim_gaussian"


@dataclass
class OverlapOptions:
    """Settings of the ``overlap`` study (``quick``: the small version of the tests)."""

    extent_m: float = 1.6e-6
    overlaps: tuple[float, ...] = (0.88, 0.8, 0.7, 0.6, 0.5, 0.4, 0.2, 0.0, -0.25, -0.5)
    epie_iterations: int = 100
    batch_size: int = 32
    scene: Scene = field(default_factory=Scene)

    @classmethod
    def quick(cls) -> OverlapOptions:
        return cls(
            extent_m=1.0e-6,
            overlaps=(0.8, 0.4, 0.0),
            epie_iterations=30,
            scene=Scene(field_of_view_m=2.0e-6),
        )


def _region(image: ComplexImage, extent_m: float, beam_m: float) -> np.ndarray:
    """The fixed scored square (centred on 0, side ``extent_m - beam_m``) on an image's grid."""
    rows, cols = np.indices(image.array.shape)
    yx = image.grid.to_metres(np.stack([rows.ravel(), cols.ravel()], 1))
    half = (extent_m - beam_m) / 2
    inside = (np.abs(yx[:, 0]) <= half) & (np.abs(yx[:, 1]) <= half)
    return inside.reshape(image.array.shape)


def _scores(image: ComplexImage, reference: np.ndarray, region: np.ndarray) -> dict[str, Any]:
    scores = compare(image.array, reference, region)
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in scores.items()}  # fmt: skip


def _crossing(overlaps: list[float], accuracy: list[float], level: float) -> float | None:
    """The lowest overlap from which down the accuracy first falls below ``level`` (linear
    between the measured overlaps, scanning from the highest overlap down); None when it never
    does within the range (then the method holds the level down to the lowest overlap)."""
    pairs = sorted(zip(overlaps, accuracy, strict=True), reverse=True)
    for (o1, a1), (o2, a2) in zip(pairs, pairs[1:], strict=False):
        if a1 >= level > a2:
            return o1 + (level - a1) * (o2 - o1) / (a2 - a1)
    if pairs and pairs[0][1] < level:
        return pairs[0][0]
    return None


def run_overlap(
    options: OverlapOptions, *, model: str | Path | None = None, quick: bool = False
) -> dict[str, Any]:
    """Run the study; return its JSON-ready record."""
    from ..inference.offline import network_image
    from ..recon import EPIEOptions, reconstruct
    from ..recon.seed import seed_object

    model_dir = study_model(model, quick)
    beamline = options.scene.beamline()
    beam = float(beamline.beam_size_on_sample_m)
    epie_options = EPIEOptions(iterations=options.epie_iterations, batch_size=options.batch_size)
    rows: list[dict[str, Any]] = []
    images: dict[str, dict[float, ComplexImage]] = {"network": {}, "epie": {}}
    reference_epie: ComplexImage | None = None
    for overlap in sorted(options.overlaps, reverse=True):
        dataset = raster_scan(beamline, options.extent_m, overlap)
        log.info("overlap %.2f: %d patterns", overlap, dataset.n_patterns)
        with Stopwatch() as t_net:
            network = network_image(model_dir, dataset).image
        with Stopwatch() as t_epie:
            epie_fine = reconstruct(dataset, replace(epie_options)).object
        if reference_epie is None:
            reference_epie = epie_fine  # the highest overlap: the paper's reference (0.88)
        canvas = network
        epie = ComplexImage(
            resampled_on_grid(epie_fine, canvas), canvas.pixel_size_m, canvas.origin_m
        )
        region = _region(canvas, options.extent_m, beam)
        truth = resampled_on_grid(dataset.ground_truth, canvas)
        ref = resampled_on_grid(reference_epie, canvas)
        network_fine = seed_object(dataset, network, min_overlap=0.05)
        region_fine = _region(epie_fine, options.extent_m, beam)
        truth_fine = reference_on_grid(dataset.ground_truth, epie_fine)
        ref_fine = reference_on_grid(reference_epie, epie_fine)
        for method, image, fine, seconds in (
            ("network", network, network_fine, t_net.seconds),
            ("epie", epie, epie_fine, t_epie.seconds),
        ):
            rows.append({
                "overlap": overlap,
                "method": method,
                "frames": dataset.n_patterns,
                "step_m": beam * (1 - overlap),
                "seconds": round(seconds, 3),
                "vs_truth": _scores(image, truth, region),
                "vs_epie_reference": _scores(image, ref, region),
                "fine_vs_truth": _scores(fine, truth_fine, region_fine),
                "fine_vs_epie_reference": _scores(fine, ref_fine, region_fine),
            })  # fmt: skip
            images[method][overlap] = image
    record = {
        "study": "overlap",
        "quick": quick,
        "model": str(model_dir),
        "accuracy": ACCURACY,
        "beam_size_m": beam,
        "reference_overlap": max(options.overlaps),
        "options": {"extent_m": options.extent_m, "overlaps": list(options.overlaps),
                    "epie_iterations": options.epie_iterations,
                    "scene": options.scene.to_dict()},
        "rows": rows,
        "paper": PAPER["overlap"],
    }  # fmt: skip
    record["summary"] = summary(rows)
    record["goals"] = goals(rows)
    record["_images"] = images
    return record


def accuracy_curve(rows: list[dict], method: str, against: str = "vs_truth") -> dict[float, float]:
    return {r["overlap"]: r[against][ACCURACY] for r in rows if r["method"] == method}


def summary(rows: list[dict]) -> dict[str, Any]:
    """Where each method falls below 80 % and 90 % accuracy, and the step ratio between them."""
    out: dict[str, Any] = {}
    for against in ("vs_truth", "vs_epie_reference", "fine_vs_truth", "fine_vs_epie_reference"):
        part: dict[str, Any] = {}
        for level in (0.8, 0.9):
            found = {}
            for method in ("network", "epie"):
                curve = accuracy_curve(rows, method, against)
                found[method] = _crossing(list(curve), list(curve.values()), level)
            ratio = None
            if found["epie"] is not None and found["network"] is not None:
                ratio = (1 - found["network"]) / max(1 - found["epie"], 1e-9)
            part[f"{int(level * 100)}_percent"] = {
                "network_falls_below_at_overlap": found["network"],
                "epie_falls_below_at_overlap": found["epie"],
                "step_ratio": ratio,
            }
        out[against] = part
    return out


def goals(rows: list[dict]) -> dict[str, Any]:
    """The headline: with no overlap the network reaches at least 0.8 of the accuracy ePIE
    reaches at the highest overlap (both against the ground truth), at both scales."""
    out: dict[str, Any] = {}
    for against in ("vs_truth", "fine_vs_truth"):
        net = accuracy_curve(rows, "network", against)
        epie = accuracy_curve(rows, "epie", against)
        if 0.0 not in net:
            continue
        ratio = net[0.0] / epie[max(epie)]
        out[against] = {
            "network_at_0_over_epie_at_top": round(ratio, 3),
            "at_least_0p8": bool(ratio >= 0.8),
        }
    return out


def figure(record: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against overlap (vs truth and vs ePIE at the top overlap), and the images."""
    from matplotlib.figure import Figure

    rows = record["rows"]
    images = record["_images"]
    overlaps = sorted(images["network"], reverse=True)
    shown = [overlaps[0], overlaps[len(overlaps) // 2], overlaps[-1]]
    fig = Figure(figsize=(15, 6.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1])
    axes = top.subplots(1, 4)
    reference = f"vs ePIE at overlap {record['reference_overlap']}"
    for ax, against, title in (
        (axes[0], "vs_truth", "vs truth, network pixels"),
        (axes[1], "vs_epie_reference", f"{reference}, network pixels"),
        (axes[2], "fine_vs_truth", "vs truth, ePIE pixels"),
        (axes[3], "fine_vs_epie_reference", f"{reference}, ePIE pixels"),
    ):
        for method, marker in (("network", "o"), ("epie", "^")):
            curve = accuracy_curve(rows, method, against)
            xs = sorted(curve)
            ax.plot(xs, [curve[x] for x in xs], marker, ls="-", label=method)
        ax.axhline(0.8, color="grey", ls=":")
        ax.axhline(0.9, color="grey", ls="--")
        ax.invert_xaxis()
        ax.set_xlabel("overlap ratio (1 - step / beam size)")
        ax.set_ylabel("phase SSIM (Wang et al. 2004)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend()
    panels = bottom.subplots(1, 2 * len(shown))
    i = 0
    for overlap in shown:
        for method in ("network", "epie"):
            image = images[method][overlap]
            mean = np.mean(image.array)
            phase = np.angle(image.array * (np.conj(mean) / abs(mean) if abs(mean) else 1.0))
            panels[i].imshow(phase, cmap="gray", extent=[v * 1e6 for v in image.grid.extent_m])
            panels[i].set_title(f"{method}, overlap {overlap:g}", fontsize=9)
            panels[i].set_xticks([])
            panels[i].set_yticks([])
            i += 1
    fig.suptitle(f"overlap: model {Path(record['model']).name}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
