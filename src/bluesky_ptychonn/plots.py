"""Figures a person looks at: a simulated or measured data set, a reconstruction.

Matplotlib with the non-interactive Agg canvas (no display needed); every function writes a
PNG and returns its path. Axes are in micrometres, images have row = y growing downwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .dataset import ComplexImage, PtychoDataset
from .geometry import PixelGrid

UM = 1e6


def _extent_um(grid: PixelGrid) -> list[float]:
    return [v * UM for v in grid.extent_m]


def _colourbar(fig: Figure, ax, image, label: str) -> None:
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)


def plot_dataset(dataset: PtychoDataset, path: str | Path, *, frame: int | None = None) -> Path:
    """Object phase (ground truth if known) with the scan, probe, one pattern, scan order.

    Args:
        dataset: the data set.
        path: output PNG.
        frame: index of the pattern to show (default: the one nearest the scan centre).
    """
    path = Path(path)
    positions_um = dataset.positions_m * UM
    if frame is None:
        frame = int(np.argmin(np.hypot(*(dataset.positions_m - dataset.positions_m.mean(0)).T)))
    pixel = dataset.object_pixel_size_m
    fig = Figure(figsize=(13, 9.5), layout="constrained")
    axes = fig.subplots(2, 3)

    ax = axes[0, 0]
    if dataset.ground_truth is not None:
        truth: ComplexImage = dataset.ground_truth
        image = ax.imshow(np.angle(truth.array), cmap="gray", extent=_extent_um(truth.grid))
        _colourbar(fig, ax, image, "phase (rad)")
        ax.set_title("ground-truth object phase + scan")
        margin = 0.6 * dataset.pattern_shape[0] * pixel * UM
        ax.set_xlim(positions_um[:, 1].min() - margin, positions_um[:, 1].max() + margin)
        ax.set_ylim(positions_um[:, 0].max() + margin, positions_um[:, 0].min() - margin)
    else:
        ax.set_title("scan positions (no ground truth)")
        ax.invert_yaxis()
    ax.plot(positions_um[:, 1], positions_um[:, 0], ".", color="tab:orange", ms=2)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")

    probe_grid = PixelGrid.centred(dataset.pattern_shape, pixel)
    if dataset.probe is not None:
        probe = dataset.probe if dataset.probe.ndim == 2 else dataset.probe[0]
        image = axes[0, 1].imshow(np.abs(probe), cmap="magma", extent=_extent_um(probe_grid))
        _colourbar(fig, axes[0, 1], image, "|P| (√photons)")
        axes[0, 1].set_title("probe amplitude")
        image = axes[0, 2].imshow(
            np.angle(probe), cmap="twilight", vmin=-np.pi, vmax=np.pi, extent=_extent_um(probe_grid)
        )
        _colourbar(fig, axes[0, 2], image, "phase (rad)")
        axes[0, 2].set_title("probe phase")
    else:
        for ax in axes[0, 1:]:
            ax.set_title("no probe in the data set")
            ax.axis("off")
    for ax in axes[0, 1:]:
        ax.set_xlabel("x (µm)")

    pattern = dataset.patterns[frame].astype(np.float64)
    image = axes[1, 0].imshow(np.log10(pattern + 1), cmap="viridis")
    _colourbar(fig, axes[1, 0], image, "log10(counts + 1)")
    y, x = positions_um[frame]
    axes[1, 0].set_title(f"pattern {frame} at (y, x) = ({y:.3f}, {x:.3f}) µm")
    axes[1, 0].set_xlabel("detector column")
    axes[1, 0].set_ylabel("detector row")

    ax = axes[1, 1]
    points = ax.scatter(positions_um[:, 1], positions_um[:, 0], c=np.arange(len(positions_um)), s=6)
    ax.plot(positions_um[:, 1], positions_um[:, 0], "-", color="0.7", lw=0.3, zorder=0)
    _colourbar(fig, ax, points, "measurement order")
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_title(f"{dataset.n_patterns} positions")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")

    totals = dataset.patterns.reshape(dataset.n_patterns, -1).sum(axis=1)
    axes[1, 2].hist(totals, bins=40, color="tab:blue")
    axes[1, 2].set_title("photons per pattern")
    axes[1, 2].set_xlabel("counts")

    meta = dataset.metadata.get("config", {})
    fig.suptitle(
        f"{meta.get('sample', 'data set')}: {dataset.energy_ev / 1e3:.2f} keV, "
        f"z = {dataset.distance_m:.3f} m, object pixel {pixel * 1e9:.2f} nm, "
        f"{dataset.pattern_shape[0]}x{dataset.pattern_shape[1]} patterns"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
