"""`ReconstructionTask`: the steppable state every engine shares (object, probe, history).

An engine subclass implements `_iterate` (one pass over the data, returning the summed squared
amplitude misfit); the base class owns the device tensors, the constraints applied after every
iteration (probe centre, object normalisation, probe power), the trial of candidate probe
starts, the divergence checks, the error history, timing, the progress bar and the conversion
to a `Reconstruction`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..dataset import ComplexImage, PtychoDataset, Reconstruction
from ..geometry import patch_corners
from . import ops
from .modes import initial_modes, orthogonalise_modes
from .options import APOptions, EPIEOptions, PositionOptions, options_to_dict
from .prepare import ASSUMED_OVERLAP, PreparedScan, prepare, probe_from_data

ILLUMINATED_FRACTION = 0.1
"""Object pixels whose summed probe intensity exceeds this fraction of its maximum are the
illuminated area (object normalisation and the object-amplitude check)."""
ILLUMINATION_CHUNK_ELEMENTS = 1 << 22


_POISSON_TABLE: tuple[np.ndarray, np.ndarray] | None = None


def poisson_amplitude_misfit(mean_counts: np.ndarray) -> np.ndarray:
    """E[(sqrt(k) - sqrt(lam))^2] for k ~ Poisson(lam), elementwise (photons^0: counts).

    The expected squared amplitude misfit of a perfect model on Poisson-noisy counts: about
    2 lam for lam << 1 and 1/4 for lam >> 1. Tabulated once (200 log-spaced values of lam from
    1e-4 to 1e4, exact sums over k) and interpolated; 1/4 above the table.
    """
    global _POISSON_TABLE
    if _POISSON_TABLE is None:
        from scipy.stats import poisson

        lam = np.geomspace(1e-4, 1e4, 200)
        values = np.empty_like(lam)
        for i, m in enumerate(lam):
            k = np.arange(int(m + 12 * np.sqrt(m) + 30))
            pmf = poisson.pmf(k, m)
            values[i] = float(np.sum(pmf * (np.sqrt(k) - np.sqrt(m)) ** 2))
        _POISSON_TABLE = (np.log(lam), values)
    log_lam, values = _POISSON_TABLE
    lam = np.asarray(mean_counts, dtype=np.float64)
    out = np.interp(np.log(np.maximum(lam, 1e-12)), log_lam, values, right=0.25)
    return np.where(lam < 1e-4, 2.0 * lam, out)


class ReconstructionDiverged(RuntimeError):
    """The reconstruction diverged; its state is no result and must not be used.

    The message is one sentence saying what went wrong and at which iteration.

    Attributes:
        iteration: the (0-based) iteration after which divergence was detected.
    """

    def __init__(self, message: str, iteration: int) -> None:
        super().__init__(message)
        self.iteration = iteration


@dataclass
class _Candidate:
    """One candidate start of the probe trial (its own object, probe and error history)."""

    name: str
    object: torch.Tensor
    probe: torch.Tensor
    errors: list[float] = field(default_factory=list)


SUBPIXEL_TOL_PX = 1e-6
RAMP_CACHE_ELEMENTS = 1 << 24  # cache every frame's shift ramp below this many values (128 MB)


class ReconstructionTask:
    """One reconstruction that runs iteration by iteration and can be inspected in between.

    Attributes:
        options: the option set it runs with.
        scan: the prepared (validated) data.
        device: the torch device.
        object, probe: current estimates as torch tensors ((R, C) and (M, H, W) complex64,
            M the number of probe modes, `ProbeOptions.modes`).
        positions_px: (N, 2) float64 (row, col) beam positions on the object grid (pixels),
            refined when `PositionOptions.correct` is on; ``nominal_px`` the data's.
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
        self.nominal_px = scan.grid.to_pixels(scan.positions_m)
        self.positions_px = self.nominal_px.copy()
        self.position_options: PositionOptions | None = getattr(options, "positions", None)
        correcting = self.position_options is not None and self.position_options.correct
        self.subpixel = bool(options.subpixel) and (
            correcting or bool(np.abs(scan.offsets).max() > SUBPIXEL_TOL_PX)
        )
        self._ramps: torch.Tensor | None = None
        self._ramps_conj: torch.Tensor | None = None
        self._cache_ramps()
        self._position_steps: torch.Tensor | None = None  # this iteration's moves (N, 2) px
        self.all_valid = bool(scan.valid.all())
        self.object = torch.from_numpy(scan.object.copy()).to(dev)
        self.n_modes = int(options.probe.modes)
        self.probe = torch.from_numpy(
            initial_modes(scan.probe, self.n_modes, options.probe.mode_power)
        ).to(dev)
        self.initial_probe_power = float(np.sum(np.abs(scan.probe) ** 2))
        self.target_power = (
            options.probe.power_photons
            if options.probe.power_photons is not None
            else scan.mean_counts
        )
        self.error_history: list[float] = []
        self.iteration = 0
        self.seconds = 0.0
        self.rng = np.random.default_rng(options.seed)
        self.probe_source = scan.probe_source
        self.trial_errors: dict[str, float] = {}
        self._trial: list[_Candidate] | None = None
        self._corner_spectrum: torch.Tensor | None = None
        self._step_illumination: torch.Tensor | None = None  # this iteration's, once computed
        self._trial_allowed = self.supports_trial and initial_object is None
        # the trial takes at most a tenth of the run (at least one iteration)
        self.trial_length = min(options.probe.trial_iterations, max(1, options.iterations // 10))

    # ---- helpers for engines ------------------------------------------------------------------
    def window_index(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H*W) flat object indices of the windows of frames ``frames`` (B,) int64."""
        return ops.window_indices(self.corners[frames], self.frame_shape, self.object_shape[1])

    def _cache_ramps(self) -> None:
        self._ramps = self._ramps_conj = None
        if self.subpixel and self.scan.amplitudes.size <= RAMP_CACHE_ELEMENTS:
            self._ramps = ops.shift_ramps(self.offsets, self.frame_shape)
            self._ramps_conj = self._ramps.conj().resolve_conj()

    def ramps(self, frames: torch.Tensor, conj: bool = False) -> torch.Tensor:
        """(B, H, W) sub-pixel shift ramps (or their conjugates) of frames ``frames``."""
        cache = self._ramps_conj if conj else self._ramps
        if cache is not None:
            return torch.index_select(cache, 0, frames)
        ramps = ops.shift_ramps(self.offsets[frames], self.frame_shape)
        return ramps.conj().resolve_conj() if conj else ramps

    def shifted_probes(self, frames: torch.Tensor, probe_spectrum: torch.Tensor | None = None):
        """(B, M, H, W) probe modes moved by each frame's sub-pixel offset (or broadcast)."""
        if not self.subpixel:
            return self.probe.expand(frames.shape[0], *self.probe.shape)
        if probe_spectrum is None:
            probe_spectrum = ops.fft2(self.probe)
        return ops.ifft2(self.ramps(frames).unsqueeze(1).mul(probe_spectrum))

    def unshift_sum(self, frames: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of (B, M, H, W) probe-frame updates moved back to the probe frame.

        Returns (M, H, W).
        """
        if not self.subpixel:
            return updates.sum(0)
        ramps = self.ramps(frames, conj=True).unsqueeze(1)
        return ops.ifft2(ops.fft2(updates).mul_(ramps).sum(0))

    def positions_update_allowed(self) -> bool:
        """Whether this iteration refines the positions (`PositionOptions`)."""
        p = self.position_options
        return (
            p is not None
            and p.correct
            and self._trial is None
            and not self._trial_wanted()
            and self.iteration >= p.start_iteration
        )

    def add_position_steps(self, frames: torch.Tensor, steps: torch.Tensor) -> None:
        """Record (B, 2) least-squares position moves (pixels) of ``frames`` this iteration."""
        if self._position_steps is None:
            self._position_steps = torch.zeros(
                (self.scan.n_frames, 2), dtype=torch.float64, device=self.device
            )
        self._position_steps.index_copy_(0, frames, steps.to(torch.float64))

    def _apply_position_steps(self) -> None:
        """Move the positions by the iteration's steps, within the bounds of the options."""
        steps, self._position_steps = self._position_steps, None
        p = self.position_options
        if steps is None or p is None:
            return
        d = p.step_size * np.nan_to_num(steps.cpu().numpy())
        limit = np.full(2, p.max_step_px)
        if p.mad_clip > 0:
            mad = np.mean(np.abs(d - d.mean(axis=0)), axis=0)
            limit = np.minimum(limit, p.mad_clip * mad)
        d = np.clip(d, -limit, limit)
        shift = self.positions_px + d - self.nominal_px
        shift -= shift.mean(axis=0)  # a common shift is the object's, not information
        shift = np.clip(shift, -p.max_shift_px, p.max_shift_px)
        h, w = self.frame_shape
        low = np.array([h // 2, w // 2], dtype=np.float64)
        high = np.array(
            [self.object_shape[0] - h + h // 2, self.object_shape[1] - w + w // 2],
            dtype=np.float64,
        )
        self.set_positions_px(np.clip(self.nominal_px + shift, low, high))

    def set_positions_px(self, positions_px: np.ndarray) -> None:
        """Put the beam at (N, 2) (row, col) object-grid pixels (windows must stay inside)."""
        positions_px = np.asarray(positions_px, dtype=np.float64)
        corners, offsets = patch_corners(positions_px, self.frame_shape)
        self.positions_px = positions_px
        self.corners = torch.from_numpy(corners).to(self.device)
        self.offsets = torch.from_numpy(offsets).to(self.device)
        self._cache_ramps()
        self._corner_spectrum = None
        self._positions_changed()

    def _positions_changed(self) -> None:
        """Hook run after the positions moved (engines that cache windows refresh)."""

    def probes_update_allowed(self) -> bool:
        p = self.options.probe
        return p.update and self.iteration >= p.start_iteration

    def illumination(self) -> torch.Tensor:
        """(R, C) float32 summed probe intensity sum_k |P|^2 of all windows on the object grid.

        The unshifted probe at each window's integer corner (a normaliser, not the model),
        computed as the FFT convolution of the corners' count map with |P|^2 (windows lie
        inside the grid, so the circular convolution does not wrap).
        """
        shape = self.object_shape
        if self._corner_spectrum is None:
            counts = torch.zeros(shape, dtype=torch.float32, device=self.device)
            flat = counts.view(-1)
            index = self.corners[:, 0] * shape[1] + self.corners[:, 1]
            flat.index_add_(0, index, torch.ones_like(index, dtype=torch.float32))
            self._corner_spectrum = torch.fft.rfft2(counts)
        kernel = torch.zeros(shape, dtype=torch.float32, device=self.device)
        h, w = self.frame_shape
        kernel[:h, :w] = ops.intensity(self.probe).sum(0)
        out = torch.fft.irfft2(torch.fft.rfft2(kernel) * self._corner_spectrum, s=shape)
        return out.clamp_(min=0.0)

    # ---- the loop -----------------------------------------------------------------------------
    supports_trial = False
    """Whether the engine can run the probe trial (`ProbeOptions.trial_iterations`)."""

    def _iterate(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _begin_iteration(self) -> None:
        """Hook run once per iteration before any candidate iterates (e.g. draw the order)."""

    def _probe_changed(self) -> None:
        """Hook run after a constraint changed the probe (engines that cache it refresh)."""

    def _apply_power_constraint(self) -> None:
        power = float(ops.intensity(self.probe).sum())
        if power > 0:
            factor = (self.target_power / power) ** 0.5
            self.probe *= factor
            self.object /= factor
            self._probe_changed()

    def _centre_probe(self) -> None:
        """Move probe and object by whole pixels so the probe's centre of mass is centred."""
        intensity = ops.intensity(self.probe).sum(0)
        total = float(intensity.sum())
        if not total > 0:
            return
        h, w = self.frame_shape
        rows = torch.arange(h, device=self.device, dtype=torch.float32)
        cols = torch.arange(w, device=self.device, dtype=torch.float32)
        com_row = float((intensity.sum(1) * rows).sum()) / total
        com_col = float((intensity.sum(0) * cols).sum()) / total
        shift = (round(com_row - h // 2), round(com_col - w // 2))
        if shift == (0, 0) or not (math.isfinite(com_row) and math.isfinite(com_col)):
            return
        back = (-shift[0], -shift[1])
        self.probe.copy_(torch.roll(self.probe, back, dims=(-2, -1)))
        self.object.copy_(torch.roll(self.object, back, dims=(0, 1)))
        self._probe_changed()

    def _normalise_object(self) -> None:
        """Scale the object to unit illumination-weighted RMS amplitude, the probe inversely."""
        weight = self.illumination()
        self._step_illumination = weight
        total = float(weight.sum())
        if not total > 0:
            return
        rms = math.sqrt(float((weight * ops.intensity(self.object)).sum()) / total)
        if rms > 0 and math.isfinite(rms):
            self.object /= rms
            self.probe *= rms
            self._probe_changed()

    def _constrain(self) -> None:
        """The constraints applied after every iteration (see the options)."""
        opts = self.options
        probe_refined = self.probes_update_allowed()
        if probe_refined and self.n_modes > 1 and opts.probe.orthogonalise:
            self.probe = orthogonalise_modes(self.probe)
            self._probe_changed()
        if probe_refined and opts.probe.centre:
            self._centre_probe()
        if opts.probe.power_constraint:
            self._apply_power_constraint()
        elif probe_refined and opts.object.normalise:
            self._normalise_object()

    # ---- the probe trial ----------------------------------------------------------------------
    def _trial_wanted(self) -> bool:
        p = self.options.probe
        return self._trial_allowed and p.update and self.trial_length > 0 and self.iteration == 0

    def _candidates(self) -> list[_Candidate]:
        """The given start plus probes built from the data for every trial overlap."""
        start = _Candidate(self.probe_source, self.object.clone(), self.probe.clone())
        out = [start]
        for overlap in self.options.probe.trial_overlaps:
            probe = probe_from_data(self.scan, overlap)
            # the same beam on the other side of the focus: conj(P(-r)) (far-field phase negated)
            opposite = np.conj(np.roll(probe[::-1, ::-1], 1, axis=(0, 1)))
            for name, array in (
                (f"data (overlap {overlap:g})", probe),
                (f"data (overlap {overlap:g}, opposite defocus)", opposite),
            ):
                if self.probe_source == "data" and name == f"data (overlap {ASSUMED_OVERLAP:g})":
                    continue  # the start itself
                out.append(
                    _Candidate(
                        name,
                        self.object.clone(),
                        torch.from_numpy(
                            initial_modes(
                                np.ascontiguousarray(array),
                                self.n_modes,
                                self.options.probe.mode_power,
                            )
                        ).to(self.device),
                    )
                )
        return out

    def _trial_iteration(self) -> float:
        """One iteration of every candidate on the same batches; keep the best as the state."""
        assert self._trial is not None
        misfits = []
        for candidate in self._trial:
            self.object, self.probe = candidate.object, candidate.probe
            misfit = self._iterate()
            self._constrain()
            error = misfit / self.data_power if self.data_power > 0 else float("nan")
            candidate.errors.append(error if math.isfinite(error) else math.inf)
            candidate.object, candidate.probe = self.object, self.probe
            misfits.append(misfit if math.isfinite(misfit) else math.inf)
        errors = [c.errors[-1] for c in self._trial]
        best = int(np.argmin(errors))
        given = self._trial[0].name != "data"  # a probe the caller or the file supplied
        if given and errors[0] <= self.options.probe.trial_margin * errors[best]:
            best = 0  # a supplied probe is kept unless another candidate clearly beats it
        chosen = self._trial[best]
        self.object, self.probe = chosen.object, chosen.probe
        self._step_illumination = None  # it was the last candidate's
        self._probe_changed()
        if self.iteration + 1 >= self.trial_length:
            self.trial_errors = {c.name: c.errors[-1] for c in self._trial}
            self.probe_source = chosen.name
            self.error_history = list(chosen.errors[:-1])
            self._trial = None
        return misfits[best]

    # ---- divergence ---------------------------------------------------------------------------
    def _check_divergence(self, error: float) -> None:
        """Raise `ReconstructionDiverged` when the state is no longer a reconstruction."""
        it = self.iteration
        if not math.isfinite(error):
            raise ReconstructionDiverged(
                f"the reconstruction diverged at iteration {it}: its data error became "
                f"{error} (NaN or infinite values in the object or probe)",
                it,
            )
        d = self.options.divergence
        if not d.enabled or self._trial is not None:
            return
        if self.error_history and it >= d.grace_iterations:
            best_at = int(np.argmin(self.error_history))
            best = self.error_history[best_at]
            if error > d.error_growth * best:
                raise ReconstructionDiverged(
                    f"the reconstruction diverged at iteration {it}: its data error "
                    f"{error:.3g} grew to {error / best:.1f} times its best ({best:.3g} at "
                    f"iteration {best_at}; the limit is {d.error_growth:g} times)",
                    it,
                )
        p = self.options.probe
        if self.probes_update_allowed() and not p.power_constraint and d.min_probe_power_fraction:
            power = float(ops.intensity(self.probe).sum())
            if self.options.object.normalise or p.rescale_to_data:
                reference, what = self.scan.mean_counts, "the mean counts of a pattern"
            else:  # a probe in the caller's units, left there
                reference, what = self.initial_probe_power, "its initial power"
            if power < d.min_probe_power_fraction * reference:
                raise ReconstructionDiverged(
                    f"the reconstruction diverged at iteration {it}: the probe's power "
                    f"collapsed to {power / reference:.3g} of {what} (the limit is "
                    f"{d.min_probe_power_fraction:g})",
                    it,
                )
        # normalising scaled the probe after this map was made: the ratio is scale-free
        ratio = self.object_peak_to_rms(self._step_illumination)
        if ratio > d.max_object_amplitude:
            raise ReconstructionDiverged(
                f"the reconstruction diverged at iteration {it}: the object's amplitude over "
                f"the illuminated area peaks at {ratio:.1f} times its RMS (the limit is "
                f"{d.max_object_amplitude:g}; a physical object stays near 1)",
                it,
            )

    def data_error(self) -> tuple[float, float]:
        """(data error, Poisson noise floor) of the current state; nothing is updated.

        The data error is the iterations' misfit, sum (|Psi| - sqrt(I))^2 / sum I over valid
        pixels, of the current object and probe. The noise floor is the value the true object
        and probe would reach on Poisson-noisy counts: the expected misfit
        E[(sqrt(k) - sqrt(lam))^2], k ~ Poisson(lam), summed over the model's intensities lam
        (`poisson_amplitude_misfit`), over the same sum I (dimensionless, both).
        """
        flat = self.object.view(-1)
        spectrum = ops.fft2(self.probe) if self.subpixel else None
        valid = None if self.all_valid else self.valid
        h, w = self.frame_shape
        chunk = max(1, ILLUMINATION_CHUNK_ELEMENTS // (4 * h * w))
        misfit = 0.0
        floor = 0.0
        frames_all = torch.arange(self.scan.n_frames, device=self.device)
        for start in range(0, frames_all.shape[0], chunk):
            frames = frames_all[start : start + chunk]
            patches = ops.gather(flat, self.window_index(frames), self.frame_shape)
            far = ops.fft2(patches.unsqueeze(1) * self.shifted_probes(frames, spectrum))
            expected = poisson_amplitude_misfit(ops.intensity(far).sum(1).cpu().numpy())
            if valid is not None:
                expected = expected * ops.unshifted(self.scan.valid)[None]
            floor += float(expected.sum())
            amplitudes = torch.index_select(self.amplitudes, 0, frames)
            misfit += float(ops.modulus_correct_(far, amplitudes, valid))
        if not self.data_power > 0:
            return float("nan"), float("nan")
        return misfit / self.data_power, floor / self.data_power

    def object_peak_to_rms(self, weight: torch.Tensor | None = None) -> float:
        """max |O| over the illuminated area / its illumination-weighted RMS (dimensionless).

        Args:
            weight: the illumination map (any scale); default `illumination()` of now.
        """
        weight = self.illumination() if weight is None else weight
        lit = weight > ILLUMINATED_FRACTION * weight.max()
        total = float(weight.sum())
        if not total > 0 or not bool(lit.any()):
            return 0.0
        amplitude2 = ops.intensity(self.object)
        rms = math.sqrt(float((weight * amplitude2).sum()) / total)
        peak = math.sqrt(float(amplitude2[lit].max()))
        return peak / rms if rms > 0 else math.inf

    def step(self) -> float:
        """Run one iteration; return its error (see ``error_history``).

        Raises:
            ReconstructionDiverged: the data error became NaN or grew far above its best, the
                probe's power collapsed, or the object's amplitude left the physical range
                (see `DivergenceOptions`); the task's state is then no result.
        """
        start = time.perf_counter()
        self._step_illumination = None
        if self._trial_wanted():
            self._trial = self._candidates()
        self._begin_iteration()
        if self._trial is not None:
            misfit = self._trial_iteration()
        else:
            misfit = self._iterate()
            self._constrain()
            self._apply_position_steps()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        error = misfit / self.data_power if self.data_power > 0 else float("nan")
        self._check_divergence(error)
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
        """(H, W) probe, or (M, H, W) modes sorted by power when M > 1 (sqrt(photons))."""
        probe = self.probe.detach().cpu().numpy().copy()
        return probe[0] if self.n_modes == 1 else probe

    @property
    def positions_m(self) -> np.ndarray:
        """(N, 2) (y, x) beam positions in metres: the data's, or the refined ones."""
        if np.array_equal(self.positions_px, self.nominal_px):
            return self.scan.positions_m.copy()
        return self.scan.grid.to_metres(self.positions_px)

    def settings(self) -> dict[str, Any]:
        settings = options_to_dict(self.options)
        settings["run"] = {
            "iterations_done": self.iteration,
            "seconds": self.seconds,
            "device": str(self.device),
            "probe_source": self.probe_source,
            "probe_trial_errors": dict(self.trial_errors),
            "subpixel_used": self.subpixel,
            "n_patterns": self.scan.n_frames,
            "probe_modes": self.n_modes,
            "mode_powers": [float(v) for v in ops.intensity(self.probe).sum((-2, -1)).cpu()],
        }
        if self.position_options is not None and self.position_options.correct:
            shift = self.positions_px - self.nominal_px
            settings["run"]["position_correction_rms_px"] = float(
                np.sqrt(np.mean(np.sum(shift**2, axis=1)))
            )
            settings["run"]["position_correction_max_px"] = float(np.abs(shift).max())
        return settings

    def result(self) -> Reconstruction:
        """The current state as a `Reconstruction` (object on its metric grid, probe, history)."""
        grid = self.scan.grid
        return Reconstruction(
            object=ComplexImage(self.object_array(), grid.pixel_size_m, grid.origin_m),
            probe=self.probe_array(),
            positions_m=self.positions_m,
            error_history=np.asarray(self.error_history),
            algorithm=self.options.algorithm,
            settings=self.settings(),
        )
