"""Iterative reconstruction benchmark: our ePIE against pty-chi's, and the phase-sync table.

Run it as ``bluesky-ptychonn bench recon --json OUT [--quick]`` (or ``python
benchmarks/bench_recon.py --json OUT``). It writes a JSON list of records:

* ``"benchmark": "epie"``: one record per implementation and batch size, on the same
  simulated scan in the same process (runs interleaved, so machine load hits both alike):
  ``impl`` ("ours" or "pty-chi"), ``batch``, ``iterations``, ``patterns_per_s`` (patterns
  processed per second of iteration time), ``seconds``, ``phase_err_rad`` (RMS phase error
  against the ground truth over the illuminated area after removing global phase, shift and
  phase ramp), ``final_loss`` (each code's own last data error: ours the normalised squared
  amplitude misfit, pty-chi its MSE of sqrt intensities, not comparable to each other).
* ``"benchmark": "matrix"`` (``--matrix``): robustness to the probe and its guess, on scans
  from the independent simulator of the tests (``tests/recon/far_field_scan.py``: 64x64
  patterns, Fermat spiral, 2e5 photons per pattern, object phase up to 1 rad), one record
  per implementation and combination of ``probe`` ("gaussian": Gaussian with defocus;
  "zoneplate": defocused zone-plate donut; "measured": astigmatic, phase ramp, speckle),
  ``guess`` ("file": a Gaussian 1.3x wider than the beam, no phase, in the file; "data": none
  in the file, built from the data; "earlier": the probe of our reconstruction of an earlier
  scan of the same beam over another object) and ``overlap`` (0.6, 0.75, 0.85): ``impl``,
  ``phase_err_rad``, ``seconds``, ``patterns_per_s``, ``final_loss``, ``diverged`` (ours
  refused the run, or pty-chi's object holds NaN), ``probe_source`` (ours: the start its
  trial kept) and, for ours, the ground-truth-free ``assessment`` (without the half scans).
  Both codes run the same epochs from the same initial probe (ours adds its trial of
  candidate starts, whose time is counted); pty-chi's ePIE with batch 20.
* ``"benchmark": "star"`` (``--star``): the shared real Siemens star (``star_case.py``), one
  record per run: ``impl`` ("ours" or "pty-chi"), ``modes``, ``positions`` (position
  correction on), ``regularisation`` (ours' object step: 1 classic ePIE), ``iterations``,
  ``seconds``, ``patterns_per_s``, ``noise_ratio`` (ours: data error over the Poisson floor),
  ``ssim_vs_ptychi`` (phase SSIM over the star's centre, disks of ``radii_um``, against
  pty-chi's plain ePIE) and ``ssim_vs_ptychi_same`` (against pty-chi with the same modes and
  position correction), ``speed_ratio`` (ours' patterns/s over pty-chi's of the same variant).
* ``"benchmark": "steps"`` (``--steps``): ePIE's object step, classic (``regularisation``
  1) against rPIE-style values, on scans of the tests' independent simulator with other
  probes, overlaps and doses than the package's presets: ``probe``, ``overlap``,
  ``photons``, ``regularisation``, ``phase_err_rad``, ``noise_ratio``, ``diverged``.
* ``"benchmark": "extras"`` (``--extras``): probe modes and position correction on the
  independent simulator (100 positions, overlap 0.75): ``case`` ("partially coherent": three
  modes holding 60/25/15 % of the power; "coherent"; "position errors": 1 px RMS per axis in
  the file), ``modes``, ``mode_power``, ``positions``, ``phase_err_rad``, ``noise_ratio``,
  ``mode_powers``, ``position_error_px`` (RMS distance of the final positions to the true
  ones, common shift removed; the file's for comparison in ``file_position_error_px``),
  ``seconds``.
* ``"benchmark": "sync"``: alternating projections on noiseless grids of 16x16-pixel frames
  (see ``sync_case.py``): ``frames_grid``, ``sync_every`` (0 = none), ``iterations`` and
  ``seconds`` to reach ``target`` object error (null if not reached within the cap),
  ``reached``, ``final_error``, ``iterations_run``, ``seconds_run``.

pty-chi (PyPI ``ptychi``) must be installed with ``--no-deps`` plus pandas, pydantic,
scikit-learn and tifffile; ``ptychi_runner.py`` supplies the one torchvision class it imports.
Without it the pty-chi records carry ``"error"`` and the rest still runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_ptychonn.commands.bench import write_records

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ptychi_runner import ptychi_available, run_ptychi_epie  # noqa: E402
from sync_case import make_case, run_case  # noqa: E402

from bluesky_ptychonn.dataset import ComplexImage, PtychoDataset, Reconstruction  # noqa: E402
from bluesky_ptychonn.recon import EPIEOptions, ReconstructionDiverged, make_task  # noqa: E402
from bluesky_ptychonn.recon.assessment import assess_reconstruction  # noqa: E402
from bluesky_ptychonn.recon.quality import phase_error_rad  # noqa: E402
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig, detector_preset  # noqa: E402
from bluesky_ptychonn.sim.scans import fermat_spiral, step_from_overlap  # noqa: E402


def simulated_scan(quick: bool) -> PtychoDataset:
    """A Poisson-noisy Fermat-spiral scan of a gold test pattern (60 % overlap)."""
    crop = 64 if quick else 128
    radius = 0.35e-6 if quick else 0.75e-6
    detector = detector_preset("eiger", crop_px=crop)
    config = SimBeamlineConfig(
        detector="eiger",
        beam_size_m=100e-9 if quick else 150e-9,
        photons=5e4 if quick else 2e5,
        field_of_view_m=(2 * radius + 0.2e-6,) * 2,
        sample="etched",
        thickness_m=300e-9,
        seed=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        beamline = SimBeamline(config, detector=detector)
    step = step_from_overlap(beamline.beam_size_on_sample_m, 0.6)
    return beamline.measure(fermat_spiral(radius, step_m=step))


def _env() -> dict[str, Any]:
    import torch

    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def epie_records(
    dataset: PtychoDataset, batches: list[int], iterations: int, with_ptychi: bool
) -> list[dict[str, Any]]:
    """Our ePIE and pty-chi's on ``dataset``, batch by batch, interleaved."""
    records = []
    ok, why = ptychi_available() if with_ptychi else (False, "skipped (--skip-ptychi)")
    version = why if ok else None
    truth = dataset.ground_truth
    common = {
        "benchmark": "epie",
        "iterations": iterations,
        "n_patterns": dataset.n_patterns,
        "pattern_shape": list(dataset.pattern_shape),
        "device": "cpu",
    }
    for batch in batches:
        task = make_task(dataset, EPIEOptions(iterations=iterations, batch_size=batch, seed=0))
        task.run()
        ours = task.result()
        records.append(
            {
                **common,
                "impl": "ours",
                "batch": batch,
                "patterns_per_s": task.patterns_per_second,
                "seconds": task.seconds,
                "phase_err_rad": phase_error_rad(ours, truth, probe=dataset.probe),
                "final_loss": float(ours.error_history[-1]),
                "settings": {k: v for k, v in ours.settings.items() if k != "run"},
                **_env(),
            }
        )
        print(
            f"ours     batch {batch:4d}: {records[-1]['patterns_per_s']:8.1f} patterns/s, "
            f"phase error {records[-1]['phase_err_rad']:.4f} rad",
            flush=True,
        )
        record = {**common, "impl": "pty-chi", "batch": batch, "version": version}
        if ok:
            grid = task.scan.grid
            out = run_ptychi_epie(
                dataset.patterns,
                grid.to_pixels(dataset.positions_m),
                task.scan.probe,
                grid.shape,
                wavelength_m=dataset.wavelength_m,
                pixel_size_m=grid.pixel_size_m,
                iterations=iterations,
                batch_size=batch,
                seed=0,
            )
            theirs = Reconstruction(
                ComplexImage(out["object"], grid.pixel_size_m, grid.origin_m),
                out["probe"],
                dataset.positions_m,
            )
            record.update(
                patterns_per_s=iterations * dataset.n_patterns / out["seconds"],
                seconds=out["seconds"],
                phase_err_rad=phase_error_rad(theirs, truth, probe=dataset.probe),
                final_loss=float(out["loss"][-1]) if len(out["loss"]) else None,
                settings={
                    "algorithm": "EPIE",
                    "alpha": 1.0,
                    "beta": 1.0,
                    "probe_start": 1,
                    "batching_mode": "random",
                },
                **_env(),
            )
            print(
                f"pty-chi  batch {batch:4d}: {record['patterns_per_s']:8.1f} patterns/s, "
                f"phase error {record['phase_err_rad']:.4f} rad",
                flush=True,
            )
        else:
            record["error"] = f"pty-chi not run: {why}"
        records.append(record)
    return records


MATRIX_PROBES = ("gaussian", "zoneplate", "measured")
MATRIX_GUESSES = ("file", "data", "earlier")
MATRIX_OVERLAPS = (0.6, 0.75, 0.85)
PTYCHI_BATCH = 20


def _far_field_scan():
    """The tests' independent simulator (imported from tests/recon)."""
    tests = Path(__file__).resolve().parent.parent / "tests" / "recon"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    import far_field_scan

    return far_field_scan


def _ptychi_matrix_record(
    dataset: PtychoDataset, truth_probe, task, iterations: int
) -> dict[str, Any]:
    grid = task.scan.grid
    out = run_ptychi_epie(
        dataset.patterns,
        grid.to_pixels(dataset.positions_m),
        task.scan.probe,
        grid.shape,
        wavelength_m=dataset.wavelength_m,
        pixel_size_m=grid.pixel_size_m,
        iterations=iterations,
        batch_size=PTYCHI_BATCH,
        seed=0,
    )
    record: dict[str, Any] = {
        "seconds": out["seconds"],
        "patterns_per_s": iterations * dataset.n_patterns / out["seconds"],
        "final_loss": float(out["loss"][-1]) if len(out["loss"]) else None,
    }
    obj = out["object"]
    if not (np.all(np.isfinite(obj)) and np.all(np.isfinite(out["probe"]))):
        return {**record, "diverged": True, "phase_err_rad": None}
    theirs = Reconstruction(
        ComplexImage(obj, grid.pixel_size_m, grid.origin_m), out["probe"], dataset.positions_m
    )
    error = phase_error_rad(theirs, dataset.ground_truth, probe=truth_probe)
    return {**record, "diverged": False, "phase_err_rad": error}


def matrix_records(
    iterations: int,
    probes: list[str],
    guesses: list[str],
    overlaps: list[float],
    n_positions: int,
    with_ptychi: bool,
    save,
) -> list[dict[str, Any]]:
    """Ours and pty-chi's ePIE over probes x initial guesses x overlaps (see the docstring)."""
    sim = _far_field_scan()
    ok, why = ptychi_available() if with_ptychi else (False, "skipped (--skip-ptychi)")
    records: list[dict[str, Any]] = []
    for probe_kind in probes:
        for overlap in overlaps:
            earlier = None
            for guess in guesses:
                dataset, truth_probe = sim.simulate(
                    probe_kind=probe_kind,
                    overlap=overlap,
                    n_positions=n_positions,
                    file_probe="wider-gaussian" if guess == "file" else None,
                )
                initial = None
                if guess == "earlier":
                    if earlier is None:  # an earlier scan of the same beam, another object
                        before, _ = sim.simulate(
                            probe_kind=probe_kind,
                            overlap=overlap,
                            n_positions=n_positions,
                            seed=7,
                        )
                        earlier = make_task(before, EPIEOptions(iterations=iterations))
                        earlier = earlier.run().probe_array()
                    initial = earlier
                common = {
                    "benchmark": "matrix",
                    "probe": probe_kind,
                    "guess": guess,
                    "overlap": overlap,
                    "iterations": iterations,
                    "n_patterns": dataset.n_patterns,
                    "pattern_shape": list(dataset.pattern_shape),
                    "photons": 2e5,
                    "device": "cpu",
                }
                task = make_task(dataset, EPIEOptions(iterations=iterations), initial_probe=initial)
                start_probe_task = task
                ours: dict[str, Any] = {**common, "impl": "ours"}
                try:
                    task.run()
                    result = task.result()
                    ours.update(
                        diverged=False,
                        phase_err_rad=phase_error_rad(
                            result, dataset.ground_truth, probe=truth_probe
                        ),
                        final_loss=float(result.error_history[-1]),
                        probe_source=task.probe_source,
                        trial_errors=task.trial_errors,
                        assessment={
                            k: v
                            for k, v in assess_reconstruction(dataset, task, half_scan=False)
                            .to_dict()
                            .items()
                            if k not in ("frc", "frc_frequency")
                        },
                    )
                except ReconstructionDiverged as error:
                    ours.update(diverged=True, phase_err_rad=None, refused=str(error))
                ours.update(
                    seconds=task.seconds,
                    patterns_per_s=task.patterns_per_second,
                    **_env(),
                )
                records.append(_finite(ours))
                theirs: dict[str, Any] = {**common, "impl": "pty-chi", "batch": PTYCHI_BATCH}
                if ok:
                    try:
                        theirs.update(
                            _ptychi_matrix_record(
                                dataset, truth_probe, start_probe_task, iterations
                            ),
                            version=why,
                        )
                    except Exception as error:  # noqa: BLE001 - record pty-chi's failure
                        theirs.update(diverged=True, phase_err_rad=None, error=repr(error))
                    theirs.update(_env())
                else:
                    theirs["error"] = f"pty-chi not run: {why}"
                records.append(_finite(theirs))
                print(
                    f"matrix {probe_kind:9s} {guess:8s} overlap {overlap:.2f}: ours "
                    f"{_fmt(ours.get('phase_err_rad'))} rad in {ours['seconds']:.1f} s "
                    f"({ours.get('probe_source', 'refused')}); pty-chi "
                    f"{_fmt(theirs.get('phase_err_rad'))} rad in "
                    f"{_fmt(theirs.get('seconds'), '.1f')} s",
                    flush=True,
                )
                save(records)
    return records


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (a diverged run's losses) replaced by None."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def sync_records(
    grids: list[int],
    everies: list[int],
    max_iterations: dict[int, int],
    max_seconds: dict[tuple[int, int], float],
    power_iterations: int,
    target: float,
) -> list[dict[str, Any]]:
    """The seed's table: iterations and seconds to reach ``target`` per grid and sync period."""
    records = []
    for grid in grids:
        dataset = make_case(grid)
        for every in everies:
            run = run_case(
                dataset,
                every,
                target=target,
                max_iterations=max_iterations[grid],
                max_seconds=max_seconds[(grid, every)],
                power_iterations=power_iterations,
            )
            records.append(
                {
                    "benchmark": "sync",
                    "impl": "ours",
                    "algorithm": "ap",
                    "frames_grid": grid,
                    "frame_px": 16,
                    "n_frames": grid * grid,
                    "sync_every": every,
                    "power_iterations": power_iterations if every else 0,
                    "target": target,
                    "iterations": run.iterations,
                    "seconds": run.seconds,
                    "reached": run.iterations is not None,
                    "final_error": run.final_error,
                    "iterations_run": run.iterations_run,
                    "seconds_run": run.seconds_run,
                    "iteration_cap": max_iterations[grid],
                    "seconds_cap": max_seconds[(grid, every)],
                    **_env(),
                }
            )
            shown = run.iterations if run.iterations is not None else f">{run.iterations_run}"
            print(
                f"sync grid {grid:2d}x{grid:<2d} every {every}: {shown} iterations, "
                f"{run.seconds_run:.1f} s, error {run.final_error:.2e}",
                flush=True,
            )
    return records


STAR_RADII_UM = (1.0, 1.5)
STAR_VARIANTS = (  # (modes, position correction, regularisation; None: the default)
    (1, False, None),
    (3, False, None),
    (1, True, None),
    (3, True, None),
    (1, False, 1.0),
    (1, False, 0.5),
    (1, False, 0.05),
    (3, False, 1.0),
)


def _star_variant(text: str) -> tuple[int, bool, float | None]:
    """ "MODES,POSITIONS,R" (POSITIONS on/off, R a number or "default") -> a star variant."""
    modes, positions, reg = text.split(",")
    return int(modes), positions == "on", None if reg == "default" else float(reg)


def star_records(
    iterations: int, with_ptychi: bool, save, variants=STAR_VARIANTS
) -> list[dict[str, Any]]:
    """Ours (each of ``variants``) against pty-chi on the real Siemens star.

    pty-chi runs once per (modes, position correction) that ``variants`` hold; the star's
    centre comes from its first run, the reference of ``ssim_vs_ptychi`` is its plain ePIE
    (one mode, no position correction) when that was run.
    """
    import star_case

    dataset = star_case.load_star()
    pixel = dataset.object_pixel_size_m
    ok, why = ptychi_available() if with_ptychi else (False, "skipped (--skip-ptychi)")
    records: list[dict[str, Any]] = []
    theirs: dict[tuple[int, bool], dict[str, Any]] = {}
    centre = None
    common = {"benchmark": "star", "iterations": iterations, "n_patterns": dataset.n_patterns}
    for modes, positions, reg in variants:
        ours = star_case.run_ours(
            dataset, iterations, modes=modes, correct_positions=positions, regularisation=reg
        )
        key = (modes, positions)
        if ok and key not in theirs:
            theirs[key] = star_case.run_theirs(
                dataset,
                ours.get("task") or make_task(dataset),
                iterations,
                modes=modes,
                correct_positions=positions,
            )
            t = theirs[key]
            if centre is None and not t["diverged"]:
                centre = star_case.star_centre(t["result"].object.array)
            record = {
                **common,
                "impl": "pty-chi",
                "version": why,
                "modes": modes,
                "positions": positions,
                "batch": 20,
                **{k: t[k] for k in ("diverged", "seconds", "patterns_per_s", "final_loss")},
            }
            plain = theirs.get((1, False))
            if plain is not None and centre is not None and not t["diverged"]:
                record["ssim_vs_ptychi"] = {
                    f"{r:g}um": star_case.centre_ssim(
                        t["result"], plain["result"], centre, r * 1e-6 / pixel
                    )
                    for r in STAR_RADII_UM
                }
            records.append(_finite({**record, **_env()}))
        record = {
            **common,
            "impl": "ours",
            "modes": modes,
            "positions": positions,
            "batch": 32,
            **{k: v for k, v in ours.items() if k not in ("result", "task")},
        }
        if not ours["diverged"] and centre is not None:
            for name, ref_key in (("ssim_vs_ptychi", (1, False)), ("ssim_vs_ptychi_same", key)):
                ref = theirs.get(ref_key)
                if ref is not None and not ref["diverged"]:
                    record[name] = {
                        f"{r:g}um": star_case.centre_ssim(
                            ours["result"], ref["result"], centre, r * 1e-6 / pixel
                        )
                        for r in STAR_RADII_UM
                    }
            if key in theirs:
                record["speed_ratio"] = ours["patterns_per_s"] / theirs[key]["patterns_per_s"]
        if centre is not None:
            record["star_centre_px"] = list(centre)
        records.append(_finite({**record, **_env()}))
        print(
            f"star modes {modes} positions {positions!s:5} r {record.get('regularisation')}: "
            f"ours {ours['seconds']:.0f} s, noise ratio {_fmt(ours.get('noise_ratio'), '.3f')}, "
            f"SSIM vs pty-chi {record.get('ssim_vs_ptychi')}, "
            f"same {record.get('ssim_vs_ptychi_same')}",
            flush=True,
        )
        save(records)
    return records


STEP_REGULARISATIONS = (1.0, 0.5, 0.2, 0.05)
STEP_CASES = (  # probe, overlap, photons per pattern
    ("gaussian", 0.6, 2e4),
    ("gaussian", 0.85, 2e6),
    ("measured", 0.6, 2e6),
    ("measured", 0.85, 2e4),
    ("zoneplate", 0.6, 2e4),
    ("zoneplate", 0.85, 2e6),
)


def step_records(iterations: int, n_positions: int, save) -> list[dict[str, Any]]:
    """ePIE's classic object step against rPIE-style ones on the independent simulator."""
    from bluesky_ptychonn.recon import ObjectOptions

    sim = _far_field_scan()
    records: list[dict[str, Any]] = []
    for probe_kind, overlap, photons in STEP_CASES:
        dataset, truth_probe = sim.simulate(
            probe_kind=probe_kind, overlap=overlap, photons=photons, n_positions=n_positions
        )
        for reg in STEP_REGULARISATIONS:
            options = EPIEOptions(iterations=iterations, object=ObjectOptions(regularisation=reg))
            task = make_task(dataset, options)
            record: dict[str, Any] = {
                "benchmark": "steps",
                "impl": "ours",
                "probe": probe_kind,
                "overlap": overlap,
                "photons": photons,
                "regularisation": reg,
                "iterations": iterations,
                "n_patterns": dataset.n_patterns,
            }
            try:
                task.run()
                result = task.result()
                record.update(
                    diverged=False,
                    phase_err_rad=phase_error_rad(result, dataset.ground_truth, probe=truth_probe),
                    noise_ratio=assess_reconstruction(dataset, task, half_scan=False).noise_ratio,
                )
            except ReconstructionDiverged as error:
                record.update(diverged=True, phase_err_rad=None, refused=str(error))
            record.update(seconds=task.seconds, **_env())
            records.append(_finite(record))
            print(
                f"steps {probe_kind:9s} overlap {overlap:.2f} photons {photons:.0e} r {reg:<4g}: "
                f"{_fmt(record.get('phase_err_rad'))} rad, noise ratio "
                f"{_fmt(record.get('noise_ratio'), '.2f')}",
                flush=True,
            )
            save(records)
    return records


EXTRA_CASES = (  # (case, simulate kwargs, [(modes, mode_power, position correction)])
    (
        "partially coherent",
        {"mode_fractions": (0.6, 0.25, 0.15)},
        [(1, 0.02, False), (3, 0.02, False), (3, 0.1, False), (3, 0.25, False)],
    ),
    ("coherent", {}, [(1, 0.02, False), (3, 0.02, False), (3, 0.1, False), (3, 0.25, False)]),
    ("position errors", {"position_error_px": 1.0}, [(1, 0.02, False), (1, 0.02, True)]),
)


def _position_error_px(dataset: PtychoDataset, positions_m: np.ndarray) -> float:
    true = np.asarray(dataset.metadata["true_positions_m"])
    d = (np.asarray(positions_m) - true) / dataset.object_pixel_size_m
    d -= d.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1))))


def extra_records(iterations: int, save) -> list[dict[str, Any]]:
    """Probe modes and position correction on the independent simulator (see the docstring)."""
    from bluesky_ptychonn.recon import PositionOptions, ProbeOptions

    sim = _far_field_scan()
    records: list[dict[str, Any]] = []
    for case, kwargs, variants in EXTRA_CASES:
        dataset, truth_probe = sim.simulate(n_positions=100, overlap=0.75, **kwargs)
        for modes, mode_power, correct in variants:
            options = EPIEOptions(
                iterations=iterations,
                probe=ProbeOptions(modes=modes, mode_power=mode_power),
                positions=PositionOptions(correct=correct),
            )
            task = make_task(dataset, options).run()
            result = task.result()
            record = {
                "benchmark": "extras",
                "impl": "ours",
                "case": case,
                "modes": modes,
                "mode_power": mode_power,
                "positions": correct,
                "iterations": iterations,
                "phase_err_rad": phase_error_rad(result, dataset.ground_truth, probe=truth_probe),
                "noise_ratio": assess_reconstruction(dataset, task, half_scan=False).noise_ratio,
                "mode_powers": result.settings["run"]["mode_powers"],
                "seconds": task.seconds,
                **_env(),
            }
            if "true_positions_m" in dataset.metadata:
                record["file_position_error_px"] = _position_error_px(dataset, dataset.positions_m)
                record["position_error_px"] = _position_error_px(dataset, result.positions_m)
            records.append(_finite(record))
            print(
                f"extras {case:18s} modes {modes} ({mode_power:g}) positions {correct!s:5}: "
                f"{record['phase_err_rad']:.4f} rad, noise ratio {record['noise_ratio']:.2f}, "
                f"positions {_fmt(record.get('position_error_px'), '.3f')} px",
                flush=True,
            )
            save(records)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench recon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--quick", action="store_true", help="small sizes (under 2 minutes)")
    parser.add_argument("--skip-ptychi", action="store_true", help="only our ePIE")
    parser.add_argument("--skip-epie", action="store_true", help="no ePIE comparison")
    parser.add_argument("--skip-sync", action="store_true", help="no synchronisation table")
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="only the robustness matrix (probes x guesses x overlaps), ours against pty-chi",
    )
    parser.add_argument(
        "--star",
        action="store_true",
        help="only the real Siemens star: ours (modes, position correction, object steps) "
        "against pty-chi",
    )
    parser.add_argument(
        "--steps",
        action="store_true",
        help="only the object-step comparison (classic ePIE against rPIE-style) on the "
        "independent simulator",
    )
    parser.add_argument(
        "--extras",
        action="store_true",
        help="only probe modes and position correction on the independent simulator",
    )
    parser.add_argument(
        "--star-variants",
        nargs="+",
        type=_star_variant,
        help="--star: ours' variants as MODES,on|off,R (R a number or 'default'); default: "
        "STAR_VARIANTS",
    )
    parser.add_argument("--matrix-probes", nargs="+", default=list(MATRIX_PROBES))
    parser.add_argument("--matrix-guesses", nargs="+", default=list(MATRIX_GUESSES))
    parser.add_argument("--matrix-overlaps", type=float, nargs="+", default=list(MATRIX_OVERLAPS))
    parser.add_argument(
        "--matrix-positions", type=int, default=200, help="scan positions per matrix scan"
    )
    parser.add_argument("--batches", type=int, nargs="+", help="ePIE batch sizes")
    parser.add_argument("--iterations", type=int, help="ePIE iterations")
    parser.add_argument("--grids", type=int, nargs="+", help="sync frame grids (g for g x g)")
    parser.add_argument(
        "--sync-periods", type=int, nargs="+", default=[0, 1, 5], help="sync every K (0: none)"
    )
    parser.add_argument("--sync-power-iterations", type=int, default=20)
    parser.add_argument("--sync-max-seconds", type=float, help="cap per sync run (s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both codes (default 1: on a shared 2-core machine two "
        "OpenMP threads stall whenever another process takes a core)",
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    quick = args.quick
    batches = args.batches or ([8, 16] if quick else [16, 64, 256])
    iterations = args.iterations or (10 if quick else 20)
    grids = args.grids or ([8, 16] if quick else [8, 16, 32, 64])
    caps = {8: 3000, 16: 10000, 32: 20000, 64: 20000}

    started = time.perf_counter()
    records: list[dict[str, Any]] = []

    def save() -> None:  # after each part, so a long run keeps what it has measured
        write_records(args.json, records, indent=1, allow_nan=False, default=float)

    def save_part(done: list[dict[str, Any]]) -> None:
        write_records(args.json, done, indent=1, allow_nan=False, default=float)

    if args.star or args.steps or args.extras:
        if args.extras:
            records += extra_records(args.iterations or 100, save_part)
        if args.steps:
            done = list(records)
            records += step_records(
                args.iterations or 100,
                args.matrix_positions,
                lambda part: save_part(done + part),
            )
        if args.star:
            done = list(records)
            records += star_records(
                args.iterations or 40,
                not args.skip_ptychi,
                lambda part: save_part(done + part),
                args.star_variants or STAR_VARIANTS,
            )
        save()
        print(
            f"wrote {len(records)} records to {args.json} in {time.perf_counter() - started:.0f} s"
        )
        return 0
    if args.matrix:
        records += matrix_records(
            args.iterations or 100,
            args.matrix_probes,
            args.matrix_guesses,
            args.matrix_overlaps,
            args.matrix_positions,
            not args.skip_ptychi,
            lambda done: write_records(args.json, done, indent=1, allow_nan=False, default=float),
        )
        print(
            f"wrote {len(records)} records to {args.json} in {time.perf_counter() - started:.0f} s"
        )
        return 0
    if not args.skip_epie:
        dataset = simulated_scan(quick)
        print(
            f"ePIE: {dataset.n_patterns} patterns of {dataset.pattern_shape}, "
            f"{iterations} iterations",
            flush=True,
        )
        records += epie_records(dataset, batches, iterations, not args.skip_ptychi)
        save()
    if not args.skip_sync:
        # caps per run, in seconds of iteration time: the 64x64 grid without sync needs an
        # estimated 25,000 iterations (about 25 min here), is stopped early and reported so
        seconds = {(g, e): 60.0 for g in grids for e in args.sync_periods}
        seconds.update({(32, 0): 240.0, (32, 1): 120.0, (32, 5): 150.0})
        seconds.update({(64, 0): 90.0, (64, 1): 300.0, (64, 5): 200.0})
        if args.sync_max_seconds:
            seconds = dict.fromkeys(seconds, args.sync_max_seconds)
        for grid in grids:  # one grid at a time, saved as it finishes
            records += sync_records(
                [grid],
                args.sync_periods,
                {grid: caps.get(grid, 20000)},
                seconds,
                args.sync_power_iterations,
                1e-4,
            )
            save()
    save()
    print(f"wrote {len(records)} records to {args.json} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
