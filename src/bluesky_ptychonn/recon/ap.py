"""Alternating projections (error reduction) over all frames, with phase synchronisation.

State: the object O. One iteration, batched over all N frames z_k (exit waves):

1. z_k = Q_k O_k                              frames consistent with the object
2. z_k <- F^-1[ P_M(F z_k) ]                  data projection (measured moduli)
3. every ``sync.every`` iterations: z_k <- z_k exp(i phi_k), phi from the leading eigenvector
   of the overlap Gramian (`phase_sync`), warm-started from the previous one
4. O = sum_k conj(Q_k) z_k / sum_k |Q_k|^2    overlap projection (placed on the object grid)
5. optionally P = sum_k S_k^-1[conj(O_k) z_k] / sum_k |O_k|^2  (probe solve, from
   ``probe.start_iteration``)

Q_k is the probe moved by frame k's sub-pixel offset. One probe mode (the task's probe is
(1, H, W)); no position correction. Frames are processed in chunks so that
memory stays bounded; the error of an iteration is the misfit of step 2.
"""

from __future__ import annotations

import numpy as np
import torch

from . import ops
from .options import APOptions
from .phase_sync import leading_eigenvector, overlap_gramian
from .task import ReconstructionTask

CHUNK_ELEMENTS = 1 << 22  # frames per chunk x H x W: about 32 MB of complex64


class APTask(ReconstructionTask):
    """A steppable alternating-projections reconstruction (see the module docstring)."""

    options: APOptions

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        n = self.scan.n_frames
        h, w = self.frame_shape
        self.chunk = max(1, CHUNK_ELEMENTS // (h * w))
        self.frames = torch.empty((n, h, w), dtype=torch.complex64, device=self.device)
        self._probes: torch.Tensor | None = None  # (N, H, W) shifted probes when sub-pixel
        self._probe_version = -1
        self._probe_counter = 0
        self.weight = torch.zeros(self.object.numel(), dtype=torch.float32, device=self.device)
        self.sync_vector: np.ndarray | None = None
        self.sync_iterations: list[int] = []
        self._all = torch.arange(n, device=self.device)
        self._index: torch.Tensor | None = None  # every frame's window indices, when small
        if n * h * w <= CHUNK_ELEMENTS * 4:
            self._index = self.window_index(self._all)

    def _window(self, start: int, count: int) -> torch.Tensor:
        if self._index is not None:
            return self._index[start : start + count]
        return self.window_index(self._all[start : start + count])

    # ---- probes -------------------------------------------------------------------------------
    def _probe_changed(self) -> None:
        self._probe_counter += 1

    def _refresh_probes(self) -> None:
        """Recompute shifted probes and the summed illumination after a probe change."""
        if self._probe_version == self._probe_counter:
            return
        n = self.scan.n_frames
        self.weight.zero_()
        if self.subpixel:
            spectrum = ops.fft2(self.probe)
            self._probes = torch.empty_like(self.frames)
        for start in range(0, n, self.chunk):
            frames = self._all[start : start + self.chunk]
            if self.subpixel:
                probes = self.shifted_probes(frames, spectrum)[:, 0]
                self._probes[start : start + frames.shape[0]] = probes
            else:
                probes = self.probe[0].expand(frames.shape[0], *self.frame_shape)
            ops.scatter_add(
                self.weight, self._window(start, frames.shape[0]), ops.intensity(probes)
            )
        self._probe_version = self._probe_counter

    def _probes_of(self, start: int, count: int) -> torch.Tensor:
        if self.subpixel:
            return self._probes[start : start + count]
        return self.probe[0].expand(count, *self.frame_shape)

    # ---- one iteration ------------------------------------------------------------------------
    def _iterate(self) -> float:
        opts = self.options
        n = self.scan.n_frames
        self._refresh_probes()
        flat = self.object.view(-1)
        misfit = torch.zeros((), dtype=torch.float32, device=self.device)
        valid = None if self.all_valid else self.valid
        for start in range(0, n, self.chunk):
            count = min(self.chunk, n - start)
            index = self._window(start, count)
            z = ops.gather(flat, index, self.frame_shape) * self._probes_of(start, count)
            spectrum = ops.fft2(z)
            amplitudes = self.amplitudes[start : start + count]
            misfit += ops.modulus_correct_(spectrum, amplitudes, valid)
            self.frames[start : start + count] = z.add_(ops.ifft2(spectrum))
        if opts.sync.every and self.iteration % opts.sync.every == 0:
            self.synchronise()
        numerator = torch.zeros_like(flat)
        for start in range(0, n, self.chunk):
            count = min(self.chunk, n - start)
            probes = self._probes_of(start, count)
            ops.scatter_add(
                numerator,
                self._window(start, count),
                probes.conj() * self.frames[start : start + count],
            )
        covered = self.weight > self.weight.max() * 1e-9
        flat.copy_(torch.where(covered, numerator / (self.weight + ops.EPS), flat))
        if self.probes_update_allowed():
            self._solve_probe()
        return float(misfit)

    def _solve_probe(self) -> None:
        n = self.scan.n_frames
        flat = self.object.view(-1)
        numerator = torch.zeros_like(self.probe[0])
        denominator = torch.zeros(self.frame_shape, dtype=torch.float32, device=self.device)
        for start in range(0, n, self.chunk):
            frames = self._all[start : start + self.chunk]
            patches = ops.gather(flat, self._window(start, frames.shape[0]), self.frame_shape)
            z = self.frames[start : start + frames.shape[0]]
            contribution = patches.conj() * z
            numerator += self.unshift_sum(frames, contribution.unsqueeze(1))[0]
            denominator += ops.intensity(patches).sum(0)
        floor = denominator.max() * 1e-6
        self.probe[0].copy_(numerator / (denominator + floor))
        self._probe_counter += 1

    # ---- phase synchronisation ----------------------------------------------------------------
    def synchronise(self) -> np.ndarray:
        """Rotate every frame by the phase of its entry in the Gramian's leading eigenvector.

        Returns the (N,) phases applied (radians).
        """
        sync = self.options.sync
        n = self.scan.n_frames
        contributions = torch.empty_like(self.frames)
        for start in range(0, n, self.chunk):
            count = min(self.chunk, n - start)
            contributions[start : start + count] = (
                self._probes_of(start, count).conj() * self.frames[start : start + count]
            )
        norms = torch.linalg.vector_norm(self.frames.reshape(n, -1), dim=1)
        mask = None
        if sync.support_threshold > 0:
            q = ops.intensity(self.probe[0])
            mask = (q >= sync.support_threshold * q.max()).cpu().numpy()
        gram = overlap_gramian(
            contributions.cpu().numpy(),
            self.scan.corners,
            self.object_shape,
            norms.cpu().numpy(),
            self.weight.reshape(self.object_shape).cpu().numpy(),
            mask,
        )
        start_vector = None if self.sync_vector is None else np.abs(self.sync_vector)
        v, done, _ = leading_eigenvector(gram, start_vector, sync.power_iterations)
        self.sync_vector = v
        self.sync_iterations.append(done)
        rotation = v / np.maximum(np.abs(v), 1e-30)
        self.frames *= torch.from_numpy(rotation.astype(np.complex64)).to(self.device)[
            :, None, None
        ]
        return np.angle(rotation)
