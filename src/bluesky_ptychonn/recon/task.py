"""`ReconstructionTask`: the steppable state every engine shares (object, probe, history).

An engine subclass implements `_iterate` (one pass over the data, returning the summed squared
amplitude misfit); the base class owns the device tensors, the probe power constraint, the
error history, timing, the progress bar and the conversion to a `Reconstruction`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..dataset import ComplexImage, PtychoDataset, Reconstruction
from . import ops
from .options import APOptions, EPIEOptions, options_to_dict
from .prepare import PreparedScan, prepare

SUBPIXEL_TOL_PX = 1e-6
RAMP_CACHE_ELEMENTS = 1 << 24  # cache every frame's shift ramp below this many values (128 MB)


class ReconstructionTask:
    """One reconstruction that runs iteration by iteration and can be inspected in between.

    Attributes:
        options: the option set it runs with.
        scan: the prepared (validated) data.
        device: the torch device.
        object, probe: current estimates as torch tensors ((R, C) and (H, W) complex64).
        error_history: one value per finished iteration: sum (|Psi| - sqrt(I))^2 / sum I over
            valid pixels (dimensionless normalised amplitude misfit).
        iteration: iterations done.
        seconds: wall time spent inside iterations (s).
    """

    def __init__(
        self,
        dataset: PtychoDataset,
        options: EPIEOptions | APOptions,
        *,
        initial_object: ComplexImage | None = None,
        initial_probe: np.ndarray | None = None,
    ) -> None:
        options.validate()
        self.options = options
        self.device = ops.resolve_device(options.device)
        self.scan: PreparedScan = prepare(
            dataset,
            options.object,
            options.probe,
            initial_object=initial_object,
            initial_probe=initial_probe,
        )
        scan = self.scan
        dev = self.device
        self.frame_shape = scan.frame_shape
        self.object_shape = scan.grid.shape
        self.amplitudes = torch.from_numpy(ops.unshifted(scan.amplitudes).copy()).to(dev)
        self.valid = torch.from_numpy(ops.unshifted(scan.valid).copy()).to(dev)
        self.data_power = float((self.amplitudes.square() * self.valid).sum())
        self.corners = torch.from_numpy(scan.corners).to(dev)
        self.offsets = torch.from_numpy(scan.offsets).to(dev)
        self.subpixel = bool(options.subpixel) and bool(
            np.abs(scan.offsets).max() > SUBPIXEL_TOL_PX
        )
        self._ramps: torch.Tensor | None = None
        self._ramps_conj: torch.Tensor | None = None
        if self.subpixel and scan.amplitudes.size <= RAMP_CACHE_ELEMENTS:
            self._ramps = ops.shift_ramps(self.offsets, self.frame_shape)
            self._ramps_conj = self._ramps.conj().resolve_conj()
        self.all_valid = bool(scan.valid.all())
        self.object = torch.from_numpy(scan.object.copy()).to(dev)
        self.probe = torch.from_numpy(scan.probe.copy()).to(dev)
        self.target_power = (
            options.probe.power_photons
            if options.probe.power_photons is not None
            else scan.mean_counts
        )
        self.error_history: list[float] = []
        self.iteration = 0
        self.seconds = 0.0
        self.rng = np.random.default_rng(options.seed)

    # ---- helpers for engines ------------------------------------------------------------------
    def window_index(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H*W) flat object indices of the windows of frames ``frames`` (B,) int64."""
        return ops.window_indices(self.corners[frames], self.frame_shape, self.object_shape[1])

    def ramps(self, frames: torch.Tensor, conj: bool = False) -> torch.Tensor:
        """(B, H, W) sub-pixel shift ramps (or their conjugates) of frames ``frames``."""
        cache = self._ramps_conj if conj else self._ramps
        if cache is not None:
            return torch.index_select(cache, 0, frames)
        ramps = ops.shift_ramps(self.offsets[frames], self.frame_shape)
        return ramps.conj().resolve_conj() if conj else ramps

    def shifted_probes(self, frames: torch.Tensor, probe_spectrum: torch.Tensor | None = None):
        """(B, H, W) probes moved by each frame's sub-pixel offset (or the probe, broadcast)."""
        if not self.subpixel:
            return self.probe.expand(frames.shape[0], *self.frame_shape)
        if probe_spectrum is None:
            probe_spectrum = ops.fft2(self.probe)
        return ops.ifft2(self.ramps(frames).mul_(probe_spectrum))

    def unshift_sum(self, frames: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of (B, H, W) probe-frame updates moved back to the probe frame."""
        if not self.subpixel:
            return updates.sum(0)
        return ops.ifft2(ops.fft2(updates).mul_(self.ramps(frames, conj=True)).sum(0))

    def probes_update_allowed(self) -> bool:
        p = self.options.probe
        return p.update and self.iteration >= p.start_iteration

    # ---- the loop -----------------------------------------------------------------------------
    def _iterate(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply_power_constraint(self) -> None:
        power = float(ops.intensity(self.probe).sum())
        if power > 0:
            factor = (self.target_power / power) ** 0.5
            self.probe *= factor
            self.object /= factor

    def step(self) -> float:
        """Run one iteration; return its error (see ``error_history``)."""
        start = time.perf_counter()
        misfit = self._iterate()
        if self.options.probe.power_constraint:
            self._apply_power_constraint()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        error = misfit / self.data_power if self.data_power > 0 else float("nan")
        if not np.isfinite(error):
            raise FloatingPointError(
                f"iteration {self.iteration}: the error became {error}; lower the step sizes"
            )
        self.error_history.append(error)
        self.iteration += 1
        return error

    def run(
        self, iterations: int | None = None, progress: bool | None = None
    ) -> ReconstructionTask:
        """Run ``iterations`` more iterations (default: up to ``options.iterations``)."""
        n = self.options.iterations - self.iteration if iterations is None else iterations
        show = self.options.progress if progress is None else progress
        bar = None
        if show and n > 0:
            from tqdm import tqdm

            bar = tqdm(total=n, desc=self.options.algorithm, unit="it")
        for _ in range(max(n, 0)):
            error = self.step()
            if bar is not None:
                bar.set_postfix(error=f"{error:.3e}")
                bar.update(1)
        if bar is not None:
            bar.close()
        return self

    # ---- results ------------------------------------------------------------------------------
    @property
    def patterns_per_second(self) -> float:
        """Diffraction patterns processed per second of iteration time."""
        return self.iteration * self.scan.n_frames / self.seconds if self.seconds > 0 else 0.0

    def object_array(self) -> np.ndarray:
        return self.object.detach().cpu().numpy().copy()

    def probe_array(self) -> np.ndarray:
        return self.probe.detach().cpu().numpy().copy()

    def settings(self) -> dict[str, Any]:
        settings = options_to_dict(self.options)
        settings["run"] = {
            "iterations_done": self.iteration,
            "seconds": self.seconds,
            "device": str(self.device),
            "probe_source": self.scan.probe_source,
            "subpixel_used": self.subpixel,
            "n_patterns": self.scan.n_frames,
        }
        return settings

    def result(self) -> Reconstruction:
        """The current state as a `Reconstruction` (object on its metric grid, probe, history)."""
        grid = self.scan.grid
        return Reconstruction(
            object=ComplexImage(self.object_array(), grid.pixel_size_m, grid.origin_m),
            probe=self.probe_array(),
            positions_m=self.scan.positions_m.copy(),
            error_history=np.asarray(self.error_history),
            algorithm=self.options.algorithm,
            settings=self.settings(),
        )
