"""The summary figure of a reconstruction: phase, amplitude, probe and the error curve.

Uses matplotlib's object API (no pyplot state), so it is safe in any thread or process.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..dataset import Reconstruction
from .quality import illuminated_mask


def _scan_box(reconstruction: Reconstruction, threshold: float) -> tuple[slice, slice]:
    shape = reconstruction.object.array.shape
    if reconstruction.probe is None or reconstruction.positions_m is None:
        return slice(0, shape[0]), slice(0, shape[1])
    mask = illuminated_mask(
        reconstruction.probe, reconstruction.positions_m, reconstruction.object, threshold
    )
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return slice(0, shape[0]), slice(0, shape[1])
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def plot_reconstruction(
    reconstruction: Reconstruction,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    crop_threshold: float | None = 0.05,
    dpi: int = 110,
) -> Path:
    """Write a PNG with the object's phase and amplitude, the probe and the error history.

    Args:
        reconstruction: the result to show (object on its metric grid; axes in micrometres).
        path: PNG file to write.
        title: figure title; default the algorithm, iterations and final error.
        crop_threshold: show only the box where the summed probe intensity exceeds this
            fraction of its maximum (None shows the whole object).
        dpi: resolution of the PNG.
    """
    from matplotlib.figure import Figure

    obj = reconstruction.object
    rows, cols = (
        _scan_box(reconstruction, crop_threshold)
        if crop_threshold is not None
        else (slice(None), slice(None))
    )
    array = obj.array[rows, cols]
    p_um = obj.pixel_size_m * 1e6
    y0 = obj.origin_m[0] * 1e6 + (rows.start or 0) * p_um
    x0 = obj.origin_m[1] * 1e6 + (cols.start or 0) * p_um
    extent = (
        x0 - p_um / 2,
        x0 + (array.shape[1] - 0.5) * p_um,
        y0 + (array.shape[0] - 0.5) * p_um,
        y0 - p_um / 2,
    )
    # remove the mean phase of the shown area so the colour scale is centred
    mean = np.mean(array)
    shown = array * (np.conj(mean) / abs(mean) if abs(mean) > 0 else 1.0)

    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    im = axes[0].imshow(np.angle(shown), cmap="gray", extent=extent)
    axes[0].set_title("object phase (rad)")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    im = axes[1].imshow(np.abs(array), cmap="gray", extent=extent)
    axes[1].set_title("object amplitude")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    for ax in axes[:2]:
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    if reconstruction.probe is not None:
        probe = np.asarray(reconstruction.probe)
        probe = probe[0] if probe.ndim == 3 else probe
        h, w = probe.shape
        pe = (-w / 2 * p_um, w / 2 * p_um, h / 2 * p_um, -h / 2 * p_um)
        im = axes[2].imshow(np.abs(probe), cmap="magma", extent=pe)
        axes[2].set_title("probe amplitude (√photons)")
        axes[2].set_xlabel("x (µm)")
        fig.colorbar(im, ax=axes[2], shrink=0.8)
    else:
        axes[2].set_axis_off()
    history = np.asarray(reconstruction.error_history)
    if history.size:
        axes[3].semilogy(np.arange(1, history.size + 1), history, "-", color="C0")
        axes[3].set_xlabel("iteration")
        axes[3].set_ylabel("Σ(|Ψ|−√I)² / ΣI")
        axes[3].set_title("data error")
        axes[3].grid(True, which="both", alpha=0.3)
    else:
        axes[3].set_axis_off()
    if title is None:
        final = f", final error {history[-1]:.3g}" if history.size else ""
        title = f"{reconstruction.algorithm}: {history.size} iterations{final}"
    fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path
