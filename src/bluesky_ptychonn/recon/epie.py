"""ePIE (Maiden & Rodenburg 2009) on mini-batches of positions, vectorised in torch.

Per batch of B positions (no Python loop over positions):

    psi_b   = P_b * O_b                       P_b: probe moved by the sub-pixel offset of b
    dpsi_b  = F^-1[ P_M(F psi_b) ] - psi_b    P_M: replace the modulus by sqrt(counts)
    I       = sum_b |P_b|^2                   the batch's illumination (on the object grid)
    O      += alpha * sum_b conj(P_b) dpsi_b / ((1 - r) I + r max I)
    P      += beta * mean_b S_b^-1[ conj(O_b) dpsi_b / max |O_b|^2 ]    (S_b: sub-pixel shift)

With M probe modes P_m (`ProbeOptions.modes`) every line runs per mode: the modal projection
P_M scales every mode's far field by sqrt(counts) / sqrt(sum_m |F psi_m|^2), the object step
sums conj(P_bm) dpsi_bm over the modes (I sums |P_m|^2), and each mode gets its own probe
step. With position correction on (`PositionOptions`), each batch also yields its positions'
least-squares moves from dpsi (applied, within bounds, after the iteration).

With B = 1 and r = 1 this is exactly the sequential ePIE; r < 1 is rPIE's regularised
denominator (Maiden, Johnson & Li, Optica 2017) applied to the batch's summed illumination, so
overlapping positions of one batch never overshoot and any batch size is stable with
alpha = 1. The probe step of each window is normalised by that window's own max |O_b|^2 (as
pty-chi's ePIE does), not by the peak of the whole object: a few object pixels that run away
at the edge of the scan cannot stall the probe update. The position order is a seeded random
permutation, drawn every iteration or once (``shuffle``), the same for every candidate of the
probe trial (`ReconstructionTask`). A batch costs four FFTs per position with sub-pixel
positions (two without) and a fixed, small number of passes over the batch's arrays.
"""

from __future__ import annotations

import torch

from . import ops
from .options import EPIEOptions
from .task import ReconstructionTask


class EPIETask(ReconstructionTask):
    """A steppable ePIE reconstruction (see the module docstring for the update rules)."""

    options: EPIEOptions
    _batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    supports_trial = True

    def _draw_batches(self) -> None:
        """Draw the position order; keep (frames, flat window indices) of every batch."""
        n = self.scan.n_frames
        size = self.options.batch_size
        order = torch.from_numpy(self.rng.permutation(n)).to(self.device)
        self._batches = [
            (frames, self.window_index(frames))
            for frames in (order[s : s + size] for s in range(0, n, size))
        ]

    def _begin_iteration(self) -> None:
        if self.options.shuffle or self._batches is None:
            self._draw_batches()

    def _positions_changed(self) -> None:
        if self._batches is not None:  # same order, windows at the new corners
            self._batches = [(frames, self.window_index(frames)) for frames, _ in self._batches]

    def _position_moves(
        self, patches: torch.Tensor, probes: torch.Tensor, dpsi: torch.Tensor
    ) -> torch.Tensor:
        """(B, 2) least-squares moves (row, col pixels) of the batch's positions (pty-chi's
        gradient method, summed over the modes; see `PositionOptions`)."""
        h, w = self.frame_shape
        fy = (torch.fft.fftfreq(h, device=self.device) * (2j * torch.pi))[:, None]
        fx = torch.fft.fftfreq(w, device=self.device) * (2j * torch.pi)
        steps = []
        for axis, freq in ((-2, fy), (-1, fx)):
            grad = torch.fft.ifft(torch.fft.fft(patches, dim=axis) * freq, dim=axis)
            pg = probes * grad.unsqueeze(1)  # (B, M, H, W)
            numerator = (pg.conj() * dpsi).real.sum((1, 2, 3))
            denominator = ops.intensity(pg).sum((1, 2, 3))
            steps.append(numerator / (denominator + denominator.max().clamp(min=ops.EPS)))
        return torch.stack(steps, dim=1)

    def _iterate(self) -> float:
        opts = self.options
        assert self._batches is not None
        update_probe = self.probes_update_allowed()
        update_positions = self.positions_update_allowed()
        alpha = float(opts.object.step_size)
        beta = float(opts.probe.step_size)
        reg = float(opts.object.regularisation)
        flat = self.object.view(-1)
        valid = None if self.all_valid else self.valid
        illumination = torch.zeros(flat.shape[0], dtype=torch.float32, device=self.device)
        misfit = torch.zeros((), dtype=torch.float32, device=self.device)
        for frames, index in self._batches:
            count = frames.shape[0]
            patches = ops.gather(flat, index, self.frame_shape)
            # (B, M, H, W): every probe mode at every position of the batch
            probes = self.shifted_probes(frames, ops.fft2(self.probe) if self.subpixel else None)
            spectrum = ops.fft2(patches.unsqueeze(1) * probes)
            amplitudes = torch.index_select(self.amplitudes, 0, frames)
            misfit += ops.modulus_correct_(spectrum, amplitudes, valid)
            dpsi = ops.ifft2(spectrum)
            if update_positions:
                self.add_position_steps(frames, self._position_moves(patches, probes, dpsi))
            # the batch's illumination from the unshifted modes (a normaliser, not the model)
            probe_intensity = ops.intensity(self.probe).sum(0)
            if count > 1:
                illumination.zero_()
                ops.scatter_add(illumination, index, probe_intensity.expand(count, -1, -1))
                peak = illumination.max()
                weight = ops.gather(illumination, index, self.frame_shape)
            else:
                peak = probe_intensity.max()
                weight = probe_intensity.expand(1, -1, -1)
            if self.subpixel:
                update = probes.conj_physical_().mul_(dpsi).sum(1)
            else:
                update = (probes.conj() * dpsi).sum(1)
            if reg < 1:
                update.div_(weight.mul(1.0 - reg).add_(peak * reg))
                scale = alpha
            else:
                scale = alpha / (float(peak) + ops.EPS)
            flat.index_add_(0, index.reshape(-1), update.reshape(-1), alpha=scale)
            if update_probe:
                # each window's step normalised by its own max |O|^2 (as pty-chi's ePIE)
                peaks = ops.intensity(patches).amax(dim=(-2, -1), keepdim=True).add_(ops.EPS)
                step = patches.conj_physical_().div_(peaks).unsqueeze(1).mul(dpsi)
                self.probe.add_(self.unshift_sum(frames, step), alpha=beta / count)
        return float(misfit)
