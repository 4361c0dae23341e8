"""The main job: the simulated beamline end to end, live, on embedded defaults.

`run_demo` builds a beamline session (`session.Session` from `demo_session_config`): a
simulated hutch (Eiger, stage, a sample with features the network never saw), an inference
endpoint as a local child process, a
RunEngine whose documents go to a local Tiled server (through the spooled writer) and to the
live stitcher, and the `InferenceEndpoint` device that streams every frame to the endpoint
over ZMQ on loopback. It runs a spiral scan and a sparse scan (overlap 0), reconstructs the
spiral with ePIE from the run as stored in Tiled, and writes a report folder: PNGs (live
mosaic, ground truth, ePIE) and ``report.json`` (SSIM, frames, rates, latencies).

With ``continual`` (the default, needs Tiled) the session also runs the continual-learning
loop (`retrain`, on a local Dask cluster): the spiral run goes through ePIE labels, the gate
and training, a better model is pushed to the endpoint, and a spiral over a new region of the
sample follows; the report's ``continual`` section gives the loop's record and the next scan's
image with the model before and after (both stitched from the same frames).

The network is the cached demo model (trained on simulated etched samples on first use, a few
minutes on a laptop CPU) unless one is given.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .model.demo_model import DemoModelRecipe, default_cache_dir, ensure_demo_model
from .retrain.evaluate import covered_region, on_canvas

__all__ = [
    "DemoModelRecipe",
    "DemoOptions",
    "default_cache_dir",
    "ensure_demo_model",
    "run_demo",
]

log = logging.getLogger(__name__)


DEMO_LETTERS = {"letter_height_m": (0.4e-6, 1.2e-6)}  # see DemoOptions.sample_options


@dataclass
class DemoOptions:
    """Settings of the demo.

    Attributes:
        out: report folder.
        model: a model to serve instead of the cached demo model.
        sample: sample kind of the test area (features the etched training set never had).
        sample_options: options of that kind; None: the kind's defaults, except for letters,
            which the demo makes 0.4-1.2 um high (`DEMO_LETTERS`), so
            their strokes (about a tenth of the height) span 1-3 pixels of the demo model's
            40 nm object pixels; the simulator's default letters (0.15-0.6 um) have strokes
            below one pixel, which no single-frame reconstruction at this pixel size resolves
            (`bench training` reports both).
        spiral_radius_m: radius of the spiral scan, m.
        spiral_overlap: overlap ratio of the spiral (1 - step / beam size).
        sparse_extent_m: side of the sparse (overlap 0) raster, m.
        epie_iterations: ePIE iterations on the spiral (0: skip ePIE).
        tiled: write runs and reconstructions to a local Tiled server.
        continual: run the continual-learning loop on the spiral and scan a new region after
            it (needs ``tiled``).
        continual_epochs: fine-tuning epochs of the loop.
        seed: seed of sample and noise.
    """

    out: Path = Path("demo-output")
    model: Path | None = None
    sample: str = "letters"
    sample_options: dict | None = None
    spiral_radius_m: float = 1.0e-6
    spiral_overlap: float = 0.6
    sparse_extent_m: float = 2.4e-6
    epie_iterations: int = 60
    tiled: bool = True
    continual: bool = True
    continual_epochs: int = 30
    seed: int = 0
    recipe: DemoModelRecipe = field(default_factory=DemoModelRecipe)


def _sample_options(options: DemoOptions) -> dict[str, Any]:
    if options.sample_options is not None:
        return dict(options.sample_options)
    return dict(DEMO_LETTERS) if options.sample == "letters" else {}


def _mosaic_quality(snapshot: Any, sample: Any) -> dict[str, float]:
    """`metrics.compare` of the mosaic with the ground truth over well-covered pixels (only the
    global phase removed: the mosaic's placement at the motor positions is part of the test)."""
    from .metrics import compare

    truth = on_canvas(sample, snapshot)
    region = covered_region(snapshot)
    scores = compare(snapshot.complex, truth, mask=region, align=False)
    return {**scores, "region_pixels": int(region.sum())}


def _figure(path: Path, panels: list[tuple[str, np.ndarray, Any]], title: str) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(panels), 4.6), layout="constrained")
    for ax, (label, image, extent) in zip(fig.subplots(1, len(panels)), panels, strict=True):
        shown = ax.imshow(image, cmap="gray", extent=extent)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="phase (rad)")
        ax.set_title(label)
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def demo_session_config(options: DemoOptions, model: Path) -> Any:
    """The demo's beamline session: simulated Eiger and stage over the test sample, the model
    on a local endpoint, a Tiled server and spool in the report folder, no live picture."""
    from .session import SessionConfig

    extent = 2 * max(options.spiral_radius_m, options.sparse_extent_m / 2) + 0.5e-6
    if options.continual:  # room for the next region, beside the first spiral
        extent = 2 * (abs(_next_centre_m(options)[1]) + options.spiral_radius_m) + 0.5e-6
    out = Path(options.out)
    continual = {"enabled": False}
    if options.continual and options.tiled:
        continual = {
            "enabled": True,
            "state_dir": str(out / "continual"),
            "cluster": {"kind": "local", "n_workers": 1, "threads_per_worker": 1},
            "gate": {"recheck_interval_s": 0.0},
            "train": {"epochs": options.continual_epochs},
            "recon": {"iterations": max(options.epie_iterations, 60)},
        }
    return SessionConfig.from_dict(
        {
            "data_dir": str(out),
            "sim": {
                "detectors": ["eiger"],
                "sample": options.sample,
                "sample_options": _sample_options(options),
                "field_of_view_m": [extent, extent],
                "seed": options.seed,
            },
            "endpoint": {"model": str(model), "batch_size": 32},
            "stitcher": {"settle_timeout_s": 120.0},
            "tiled": {
                "enabled": options.tiled,
                "data_dir": str(out / "tiled"),
                "spool_dir": str(out / "spool"),
                "mosaic_period_s": 2.0,
            },
            "live_view": {"enabled": False},
            "continual": continual,
        },
        where="demo",
    )


def _next_centre_m(options: DemoOptions) -> tuple[float, float]:
    """Where the scan after the loop goes: a region beside the first spiral (y, x) m."""
    return (0.0, 2 * options.spiral_radius_m + 0.4e-6)


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run the demo (see the module docstring) on a `Session` and return the report it writes."""
    from .plans import sparse_scan, spiral_scan
    from .session import Session
    from .sim.scans import step_from_overlap

    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"package_version": __version__, "scans": {}}
    model = Path(options.model) if options.model else ensure_demo_model(options.recipe)
    report["model"] = str(model)
    report["sample"] = {"kind": options.sample, "options": _sample_options(options)}

    with Session(demo_session_config(options, model)) as session:
        RE, stage, eiger = session.RE, session.stage, session.detector
        endpoint, stitcher, writer = session.endpoint, session.stitcher, session.tiled_writer
        beamline = session.devices["hutch"].beamlines["eiger"]
        if session.tiled_uri is not None:
            report["tiled_uri"] = session.tiled_uri
        beam = beamline.beam_size_on_sample_m
        plans = {
            "spiral": spiral_scan(
                [eiger, endpoint], stage, options.spiral_radius_m,
                step_m=step_from_overlap(beam, options.spiral_overlap),
            ),
            "sparse": sparse_scan(
                [eiger, endpoint], stage, (options.sparse_extent_m,) * 2, overlap=0.0,
            ),
        }  # fmt: skip
        for name, plan in plans.items():
            log.info("running the %s scan", name)
            started = time.perf_counter()
            (uid,) = RE(plan)
            seconds = time.perf_counter() - started
            snapshot = stitcher.last_snapshot  # waits for the run's final mosaic
            status = endpoint.refresh()
            quality = _mosaic_quality(snapshot, beamline.sample)
            truth = on_canvas(beamline.sample, snapshot)
            extent_um = [v * 1e6 for v in snapshot.grid.extent_m]
            figure = _figure(
                out / f"{name}-live-mosaic.png",
                [
                    (f"live mosaic ({snapshot.frames_used} patches)", snapshot.phase, extent_um),
                    ("ground truth", np.angle(truth), extent_um),
                ],
                f"{name} scan: phase SSIM {quality['phase_ssim']:.3f} against ground truth",
            )
            report["scans"][name] = {
                "uid": uid,
                "frames": snapshot.frames_used,
                "frames_rejected": stitcher.frames_rejected,
                "scan_seconds": seconds,
                "frames_per_s": snapshot.frames_used / seconds,
                "endpoint_latency_p50_ms": status["latency_p50_ms"],
                "endpoint_latency_p99_ms": status["latency_p99_ms"],
                "model_version": snapshot.model_version,
                "figure": str(figure),
                **quality,
            }
        if session.dispatcher is not None:
            spiral_uid = report["scans"]["spiral"]["uid"]
            report["continual"] = _continual(options, session, beamline, spiral_uid)
        if options.epie_iterations > 0:
            report["epie"] = _epie(
                options, report["scans"]["spiral"]["uid"], beamline, session.catalog, out
            )
        if writer is not None:
            session.wait(timeout_s=60)
            report["tiled_documents"] = asdict(writer.stats)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _continual(options: DemoOptions, session: Any, beamline: Any, uid: str) -> dict[str, Any]:
    """The loop on the spiral run, then a spiral over a new region with the model it left."""
    from .plans import spiral_scan
    from .retrain.evaluate import network_mosaic
    from .sim.scans import step_from_overlap
    from .storage.tiled_runs import dataset_from_run

    dispatcher = session.dispatcher
    before = dispatcher.loop.model_path or str(session.model_dir)
    log.info("continual learning: ePIE labels, gate and training of the spiral run")
    if not dispatcher.wait_idle(timeout_s=1800):
        return {"error": "the loop did not finish within 30 min", **dispatcher.status()}
    records = {r.scan_uid: r for r in dispatcher.records}
    if uid not in records:
        return {"error": dispatcher.last_error}
    record = records[uid]
    result: dict[str, Any] = {
        "decision": record.decision,
        "reason": record.reason,
        "trained": record.trained,
        "promoted": record.promoted,
        "promotion_reason": record.promotion_reason,
        "pushed": record.pushed,
        "model_version_after": record.model_version,
        "steps_s": record.steps,
        "seconds": record.seconds,
        "holdout": (record.challenger or {}).get("holdout"),
        "other_runs": {
            r.scan_uid: f"{r.decision}: {r.reason}" for r in dispatcher.records if r.scan_uid != uid
        },
    }
    step = step_from_overlap(beamline.beam_size_on_sample_m, options.spiral_overlap)
    detectors = [session.detector, session.endpoint]
    plan = spiral_scan(
        detectors, session.stage, options.spiral_radius_m, step_m=step,
        centre_m=_next_centre_m(options),
    )  # fmt: skip
    (next_uid,) = session.RE(plan)
    live = session.stitcher.last_snapshot
    result["next_scan"] = {
        "uid": next_uid,
        "live_model_version": live.model_version,
        "live": _mosaic_quality(live, beamline.sample),
    }
    session.wait(timeout_s=60)
    dataset = dataset_from_run(session.catalog.raw[next_uid])
    dataset.probe = beamline.probe_on_readout_grid
    for name, model in (("model_before", before), ("model_after", dispatcher.loop.model_path)):
        snapshot = network_mosaic(str(model), dataset)
        result["next_scan"][name] = {
            "model_version": snapshot.model_version,
            **_mosaic_quality(snapshot, beamline.sample),
        }
    dispatcher.wait_idle(timeout_s=1800)  # the loop also learns from the next scan
    return result


def _epie(options, uid, beamline, catalog, out) -> dict[str, Any]:
    """ePIE of the spiral run as read back from Tiled (skipped without Tiled)."""
    from .metrics import compare
    from .recon import EPIEOptions, reconstruct
    from .recon.quality import reference_on_grid

    if catalog is not None:
        from .storage.tiled_runs import dataset_from_run

        deadline = time.monotonic() + 60
        while uid not in catalog.raw and time.monotonic() < deadline:
            time.sleep(0.5)
        dataset = dataset_from_run(catalog.raw[uid])
    else:
        return {"skipped": "ePIE in the demo reads the run back from Tiled (tiled=False)"}
    dataset.probe = beamline.probe_on_readout_grid
    started = time.perf_counter()
    result = reconstruct(dataset, EPIEOptions(iterations=options.epie_iterations, progress=True))
    seconds = time.perf_counter() - started
    obj = result.object
    truth_grid = obj.grid
    truth = reference_on_grid(beamline.sample, obj)
    counts = np.zeros(obj.array.shape)
    from .geometry import patch_corners

    corners, _ = patch_corners(truth_grid.to_pixels(dataset.positions_m), dataset.pattern_shape)
    h, w = dataset.pattern_shape
    for r, c in corners:
        counts[r + h // 4 : r + 3 * h // 4, c + w // 4 : c + 3 * w // 4] += 1
    region = counts > 0
    metrics = compare(obj.array, truth, mask=region)
    extent_um = [v * 1e6 for v in truth_grid.extent_m]
    figure = _figure(
        out / "spiral-epie.png",
        [("ePIE phase", np.angle(obj.array) * region, extent_um),
         ("ground truth", np.angle(truth) * region, extent_um)],
        f"ePIE, {options.epie_iterations} iterations: phase SSIM {metrics['phase_ssim']:.3f}",
    )  # fmt: skip
    if catalog is not None:
        from .storage.tiled_results import reconstruction_write

        catalog.put(reconstruction_write(uid, result, metrics=metrics))
    return {"seconds": seconds, "figure": str(figure), "frames": dataset.n_patterns, **metrics}
