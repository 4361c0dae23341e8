"""The phase-synchronisation benchmark case: a grid of 16x16-pixel frames, noiseless data.

Reproduces the setting of the seed's table (Marchesini, Tu & Wu, "Alternating projection,
ptychographic imaging and phase synchronization", ACHA 2016): alternating projections with a
known probe on a square grid of g x g frames of 16 x 16 pixels, started from a flat object,
run until the object error (after removing the one global phase) drops below 1e-4, with no
synchronisation, synchronisation every iteration and every 5 iterations.

The object is a random complex field (phase spanning 2 pi, amplitude 0.5..1) smoothed over a
few pixels; the probe is a disk with a defocus-like quadratic phase, normalised to 1e4 photons;
frames sit every ``step_px`` pixels (4: 75 % overlap). Data are exact intensities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bluesky_ptychonn.dataset import ComplexImage, PtychoDataset
from bluesky_ptychonn.geometry import wavelength_m
from bluesky_ptychonn.recon import APOptions, ObjectOptions, ProbeOptions, SyncOptions, make_task
from bluesky_ptychonn.recon.quality import illuminated_mask, reference_on_grid
from bluesky_ptychonn.sim.forward import far_field

FRAME_PX = 16
PIXEL_M = 10e-9
ENERGY_EV = 10_000.0
DETECTOR_PIXEL_M = 75e-6


def make_case(grid: int, step_px: int = 4, seed: int = 0) -> PtychoDataset:
    """Noiseless data of a ``grid`` x ``grid`` raster of 16x16 frames, with the ground truth."""
    rng = np.random.default_rng(seed)
    n = FRAME_PX
    size = (grid - 1) * step_px + n
    shape = (size, size)
    phase = ndimage.gaussian_filter(rng.normal(size=shape), 2.0, mode="wrap")
    phase = np.pi * phase / np.abs(phase).max()
    amp = ndimage.gaussian_filter(rng.normal(size=shape), 2.0, mode="wrap")
    amp = 0.75 + 0.25 * amp / np.abs(amp).max()
    obj = (amp * np.exp(1j * phase)).astype(np.complex64)
    rows, cols = np.indices((n, n)) - n // 2
    r2 = rows**2 + cols**2
    probe = ((r2 <= (0.4 * n) ** 2) * np.exp(1j * 0.15 * r2)).astype(np.complex64)
    probe *= np.sqrt(1e4 / np.sum(np.abs(probe) ** 2))
    corners = np.stack(
        np.meshgrid(np.arange(grid) * step_px, np.arange(grid) * step_px, indexing="ij"), -1
    ).reshape(-1, 2)
    patches = np.stack([obj[r : r + n, c : c + n] for r, c in corners])
    patterns = np.abs(far_field(patches * probe)) ** 2
    positions_m = (corners + n // 2).astype(np.float64) * PIXEL_M
    distance = PIXEL_M * n * DETECTOR_PIXEL_M / wavelength_m(ENERGY_EV)
    return PtychoDataset(
        patterns=patterns.astype(np.float32),
        positions_m=positions_m,
        energy_ev=ENERGY_EV,
        distance_m=distance,
        detector_pixel_size_m=DETECTOR_PIXEL_M,
        probe=probe,
        ground_truth=ComplexImage(obj, PIXEL_M, (0.0, 0.0)),
        metadata={"case": "sync", "grid": grid, "step_px": step_px},
    )


@dataclass
class SyncRun:
    """Outcome of one run: iterations and seconds to reach ``target`` (None if not reached)."""

    frames_grid: int
    sync_every: int
    iterations: int | None
    seconds: float | None
    final_error: float
    iterations_run: int
    seconds_run: float
    target: float


def object_error(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """min over c of ||exp(i c) est - truth|| / ||truth|| on the mask (global phase removed)."""
    e, t = estimate[mask], truth[mask]
    overlap = np.vdot(e, t)
    phase = overlap / abs(overlap) if abs(overlap) > 0 else 1.0
    return float(np.linalg.norm(e * phase - t) / np.linalg.norm(t))


def run_case(
    dataset: PtychoDataset,
    sync_every: int,
    *,
    target: float = 1e-4,
    max_iterations: int = 2000,
    max_seconds: float = 120.0,
    power_iterations: int = 5,
    check_every: int = 1,
) -> SyncRun:
    """Alternating projections on ``dataset`` until the object error is below ``target``.

    Stops after ``max_iterations`` or once ``max_seconds`` of iteration time (the error checks
    between iterations not counted) have been spent.
    """
    options = APOptions(
        iterations=max_iterations,
        object=ObjectOptions(margin_px=0),
        probe=ProbeOptions(update=False, rescale_to_data=False),
        sync=SyncOptions(every=sync_every, power_iterations=power_iterations),
    )
    task = make_task(dataset, options)
    like = ComplexImage(task.object_array(), task.scan.grid.pixel_size_m, task.scan.grid.origin_m)
    truth = reference_on_grid(dataset.ground_truth, like)
    mask = illuminated_mask(dataset.probe, dataset.positions_m, like, 0.1)
    reached_it = reached_s = None
    error = float("nan")
    while task.iteration < max_iterations:
        task.step()
        if task.iteration % check_every == 0 or task.iteration == max_iterations:
            error = object_error(task.object_array(), truth, mask)
            if error < target:
                reached_it, reached_s = task.iteration, task.seconds
                break
        if task.seconds > max_seconds:
            break
    if reached_it is None:
        error = object_error(task.object_array(), truth, mask)
    return SyncRun(
        frames_grid=int(dataset.metadata["grid"]),
        sync_every=sync_every,
        iterations=reached_it,
        seconds=reached_s,
        final_error=error,
        iterations_run=task.iteration,
        seconds_run=task.seconds,
        target=target,
    )
