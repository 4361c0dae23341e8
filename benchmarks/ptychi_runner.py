"""Run pty-chi's ePIE on a `PtychoDataset`, for `bench_recon` only (not part of the package).

pty-chi (PyPI ``ptychi``) imports torchvision for one Gaussian blur that ePIE never calls, and
torchvision has no CPU build matching our torch here. Install pty-chi with ``--no-deps`` plus
its other needs (pandas, pydantic, scikit-learn, tifffile) and `ptychi_available` plugs a
minimal stand-in for ``torchvision.transforms.GaussianBlur`` into ``sys.modules`` inside this
benchmark process only, before pty-chi is imported.

pty-chi receives exactly what our ePIE uses: the same centred patterns (it FFT-shifts them
itself), the same initial probe (scaled to the data; divided by sqrt(H W) because pty-chi's
far field is the unnormalised FFT, ours the unitary one), a free-space initial object of
our grid's shape, and the positions in our object-grid pixels with the position origin at
pixel (0, 0), so that both objects come out on (nearly) the same grid.
"""

from __future__ import annotations

import logging
import sys
import time
import types
from typing import Any

import numpy as np
import torch


class _GaussianBlur(torch.nn.Module):
    """Stand-in for torchvision.transforms.GaussianBlur (separable, reflect padding)."""

    def __init__(self, kernel_size, sigma=(0.1, 2.0)):
        super().__init__()
        self.kernel_size = (
            tuple(kernel_size) if not isinstance(kernel_size, int) else (kernel_size,) * 2
        )
        s = sigma if not isinstance(sigma, (tuple, list)) else sigma[0]
        self.sigma = float(s)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        out = img
        for axis, size in zip((-2, -1), self.kernel_size, strict=True):
            x = torch.arange(size, dtype=img.dtype, device=img.device) - (size - 1) / 2
            kernel = torch.exp(-0.5 * (x / self.sigma) ** 2)
            kernel = kernel / kernel.sum()
            shape = [1, 1, 1, 1]
            shape[axis] = size
            pad = [0, 0, 0, 0]
            if axis == -1:
                pad[0] = pad[1] = size // 2
            else:
                pad[2] = pad[3] = size // 2
            flat = out.reshape(-1, 1, *out.shape[-2:])
            flat = torch.nn.functional.pad(flat, pad, mode="reflect")
            flat = torch.nn.functional.conv2d(flat, kernel.reshape(shape))
            out = flat.reshape(out.shape)
        return out


def _install_torchvision_stub() -> None:
    if "torchvision" in sys.modules:
        return
    try:  # a real torchvision wins
        import torchvision  # noqa: F401

        return
    except Exception:  # noqa: BLE001 - no (working) torchvision: use the stand-in
        pass
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.GaussianBlur = _GaussianBlur
    tv.transforms = transforms
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = transforms


def ptychi_available() -> tuple[bool, str]:
    """(True, version) when pty-chi imports (with the stand-in), else (False, reason)."""
    _install_torchvision_stub()
    try:
        import ptychi

        logging.getLogger("ptychi").setLevel(logging.WARNING)
        return True, getattr(ptychi, "__version__", "unknown")
    except Exception as error:  # noqa: BLE001 - report any import failure as "not available"
        return False, f"{type(error).__name__}: {error}"


def run_ptychi_epie(
    patterns: np.ndarray,
    positions_px: np.ndarray,
    probe: np.ndarray,
    object_shape: tuple[int, int],
    *,
    wavelength_m: float,
    pixel_size_m: float,
    iterations: int,
    batch_size: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    probe_start: int = 1,
    seed: int = 0,
    valid_mask: np.ndarray | None = None,
    n_modes: int = 1,
    correct_positions: bool = False,
    position_start: int = 10,
    position_step: float = 0.3,
) -> dict[str, Any]:
    """Run pty-chi's EPIE on CPU; return object, probe, loss history and the timing.

    Args:
        patterns: (N, H, W) centred counts.
        positions_px: (N, 2) (row, col) beam positions in pixels of the object grid.
        probe: (H, W) complex initial probe (sqrt(photons)).
        object_shape: (rows, cols) of the object grid.
        wavelength_m, pixel_size_m: geometry.
        iterations, batch_size: epochs and mini-batch size.
        alpha, beta: ePIE object and probe step sizes.
        probe_start: first epoch that updates the probe.
        seed: pty-chi's random seed.
        n_modes: incoherent probe modes; the extra ones come from pty-chi's
            ``orthogonalize_initial_probe`` (Hermite modes, 2 % of the power each), orthogonalised
            every epoch (pty-chi's default, SVD).
        correct_positions: refine positions from epoch ``position_start`` (pty-chi's gradient
            method, step ``position_step``, its default bounds).

    Returns:
        dict with ``object`` (rows, cols) complex, ``probe`` (H, W) or (M, H, W), ``loss``
        (per epoch), ``positions_px`` (N, 2) (row, col) at the end, ``seconds`` (wall time of
        ``task.run()``; building the task is not counted).
    """
    ok, why = ptychi_available()
    if not ok:
        raise RuntimeError(f"pty-chi is not available: {why}")
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask

    options = api.EPIEOptions()
    options.data_options.data = None
    options.data_options.wavelength_m = wavelength_m
    options.data_options.fft_shift = True
    options.object_options.pixel_size_m = pixel_size_m
    options.object_options.optimizable = True
    options.object_options.alpha = alpha
    options.object_options.determine_position_origin_coords_by = (
        api.ObjectPosOriginCoordsMethods.SPECIFIED
    )
    options.object_options.position_origin_coords = [0.0, 0.0]
    options.probe_options.optimizable = True
    options.probe_options.alpha = beta
    options.probe_options.optimization_plan.start = probe_start
    options.probe_position_options.optimizable = bool(correct_positions)
    if correct_positions:
        options.probe_position_options.optimization_plan.start = position_start
        options.probe_position_options.step_size = position_step
    options.reconstructor_options.num_epochs = iterations
    options.reconstructor_options.batch_size = batch_size
    options.reconstructor_options.default_device = api.Devices.CPU
    options.reconstructor_options.random_seed = seed
    obj = np.ones((1, *object_shape), dtype=np.complex64)
    # pty-chi's far field is the unnormalised FFT (torch "backward"); ours is unitary
    probe = np.asarray(probe, dtype=np.complex64) / np.sqrt(probe.shape[-2] * probe.shape[-1])
    probe = probe if probe.ndim == 2 else probe[0]
    probe_data = np.repeat(probe[None, None], n_modes, axis=1)
    if n_modes > 1:
        from ptychi.utils import orthogonalize_initial_probe

        probe_data = orthogonalize_initial_probe(torch.from_numpy(probe_data)).numpy()
    kwargs = {}
    if valid_mask is not None:
        kwargs["valid_pixel_mask"] = np.asarray(valid_mask, bool)
    task = PtychographyTask(
        options,
        diffraction_data=np.asarray(patterns, dtype=np.float32),
        object_data=obj,
        probe_data=probe_data,
        probe_position_x_px=np.asarray(positions_px[:, 1], dtype=np.float32),
        probe_position_y_px=np.asarray(positions_px[:, 0], dtype=np.float32),
        **kwargs,
    )
    start = time.perf_counter()
    task.run()
    seconds = time.perf_counter() - start
    loss = np.asarray(task.reconstructor.loss_tracker.table["loss"], dtype=np.float64)
    modes = task.get_data_to_cpu("probe", as_numpy=True)[0] * np.sqrt(probe.size)
    positions = task.get_data_to_cpu("probe_positions", as_numpy=True)
    return {
        "object": task.get_data_to_cpu("object", as_numpy=True)[0],
        "probe": modes[0] if n_modes == 1 else modes,
        "positions_px": np.asarray(positions, dtype=np.float64),
        "loss": loss,
        "seconds": seconds,
    }
