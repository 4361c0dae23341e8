"""The shared real Siemens star: our ePIE's phase against pty-chi's, for ``bench recon --star``.

No ground truth exists for measured data, so the two codes are compared with each other: the
phase SSIM (`metrics.phase_ssim`: aligned up to shift, global phase and phase ramp, 7x7
window, data range = the reference's phase span there) over the star's centre, a disk of
``radius_um`` about the star's centre (found in pty-chi's phase as the point about which the
30-spoke harmonic is strongest). Both codes start from the file's probe scaled to the data,
free space, the same grid and the same epochs; ours with its defaults plus the variant's
modes, position correction and object step, pty-chi's ePIE (batch 20) with the same modes and
position correction.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_ptychonn.dataset import ComplexImage, PtychoDataset, Reconstruction
from bluesky_ptychonn.metrics import phase_ssim
from bluesky_ptychonn.recon import (
    EPIEOptions,
    ObjectOptions,
    PositionOptions,
    ProbeOptions,
    ReconstructionDiverged,
    make_task,
)
from bluesky_ptychonn.recon.assessment import assess_reconstruction
from bluesky_ptychonn.storage.cxi import read_cxi

STAR_CXI = Path(__file__).resolve().parents[2] / "shared" / "data" / "siemens-star-tike.cxi"
ANGLES = np.linspace(0, 2 * np.pi, 1024, endpoint=False)
SPOKES = 30


def load_star(path: Path | None = None) -> PtychoDataset:
    """The shared Siemens-star scan (516 patterns of 128 x 128, 10 nm object pixels)."""
    path = STAR_CXI if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the shared Siemens star is not at {path}")
    return read_cxi(path)


def _harmonic(phase: np.ndarray, centre: tuple[float, float], radius: float) -> float:
    rows = np.round(centre[0] + radius * np.sin(ANGLES)).astype(int)
    cols = np.round(centre[1] + radius * np.cos(ANGLES)).astype(int)
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= phase.shape[0]:
        return 0.0
    if cols.max() >= phase.shape[1]:
        return 0.0
    profile = phase[rows, cols] - phase[rows, cols].mean()
    spectrum = np.abs(np.fft.rfft(profile))[1:120]
    return float(spectrum[SPOKES - 1] / np.median(spectrum))


def star_centre(obj: np.ndarray, search_px: int = 50) -> tuple[float, float]:
    """(row, col) about which the 30-spoke harmonic of the phase is strongest (60-120 px)."""
    mean = np.mean(obj)
    phase = np.angle(obj * np.conj(mean) / abs(mean))
    best, centre = -1.0, (phase.shape[0] / 2, phase.shape[1] / 2)
    for dy in range(-search_px, search_px + 1, 2):
        for dx in range(-search_px, search_px + 1, 2):
            c = (phase.shape[0] / 2 + dy, phase.shape[1] / 2 + dx)
            total = sum(_harmonic(phase, c, r) for r in (60, 90, 120))
            if total > best:
                best, centre = total, c
    return centre


def disk(shape: tuple[int, int], centre: tuple[float, float], radius_px: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    return np.hypot(rows - centre[0], cols - centre[1]) <= radius_px


def run_ours(
    dataset: PtychoDataset,
    iterations: int,
    *,
    modes: int = 1,
    correct_positions: bool = False,
    regularisation: float | None = None,
    batch_size: int = 32,
    position_start: int = 10,
) -> dict[str, Any]:
    """Our ePIE with one variant's settings; object, timing and the data error's ratio."""
    obj = ObjectOptions()
    if regularisation is not None:
        obj.regularisation = regularisation
    options = EPIEOptions(
        iterations=iterations,
        batch_size=batch_size,
        object=obj,
        probe=ProbeOptions(modes=modes),
        positions=PositionOptions(correct=correct_positions, start_iteration=position_start),
    )
    task = make_task(dataset, options)
    try:
        task.run()
    except ReconstructionDiverged as error:
        return {"diverged": True, "refused": str(error), "seconds": task.seconds}
    result = task.result()
    assessment = assess_reconstruction(dataset, task, half_scan=False)
    run = result.settings["run"]
    return {
        "diverged": False,
        "result": result,
        "task": task,
        "seconds": task.seconds,
        "patterns_per_s": task.patterns_per_second,
        "final_error": float(result.error_history[-1]),
        "noise_ratio": assessment.noise_ratio,
        "probe_source": task.probe_source,
        "mode_powers": run["mode_powers"],
        "position_correction_rms_px": run.get("position_correction_rms_px"),
        "regularisation": options.object.regularisation,
    }


def run_theirs(
    dataset: PtychoDataset,
    task,
    iterations: int,
    *,
    modes: int = 1,
    correct_positions: bool = False,
    position_start: int = 10,
    batch_size: int = 20,
) -> dict[str, Any]:
    """pty-chi's ePIE on the same grid and start as our ``task``."""
    from ptychi_runner import run_ptychi_epie

    grid = task.scan.grid
    start = time.perf_counter()
    out = run_ptychi_epie(
        dataset.patterns,
        grid.to_pixels(dataset.positions_m),
        task.scan.probe,
        grid.shape,
        wavelength_m=dataset.wavelength_m,
        pixel_size_m=grid.pixel_size_m,
        iterations=iterations,
        batch_size=batch_size,
        seed=0,
        n_modes=modes,
        correct_positions=correct_positions,
        position_start=position_start,
    )
    finite = bool(np.all(np.isfinite(out["object"])))
    result = Reconstruction(
        ComplexImage(out["object"], grid.pixel_size_m, grid.origin_m),
        out["probe"],
        grid.to_metres(out["positions_px"]),
    )
    return {
        "diverged": not finite,
        "result": result,
        "seconds": out["seconds"],
        "wall_s": time.perf_counter() - start,
        "patterns_per_s": iterations * dataset.n_patterns / out["seconds"],
        "final_loss": float(out["loss"][-1]) if len(out["loss"]) else None,
    }


def centre_ssim(
    ours: Reconstruction, reference: Reconstruction, centre: tuple[float, float], radius_px: float
) -> float:
    """Phase SSIM of ours against the reference over a disk about the star's centre."""
    mask = disk(reference.object.array.shape, centre, radius_px)
    return float(phase_ssim(ours.object.array, reference.object.array, mask=mask))
