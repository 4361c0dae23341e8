"""A label-free physics check: does the predicted patch explain the measured pattern?

With the probe known (the data set's, the simulator's, or the last ePIE's), a predicted patch
``A exp(i phi)`` gives an exit wave ``P * A exp(i phi)`` and so a predicted far-field pattern
``|F(P * A exp(i phi))|^2``. `PhysicsCheck.residuals` compares it with the measured frame,
per frame, with a Poisson-aware score. On the Anscombe scale, where Poisson counts have unit
variance at any count level,

    chi2(lambda) = mean over pixels of (2 sqrt(I + 3/8) - 2 sqrt(s lambda + 3/8))^2

(``s = sum(I) / sum(lambda)``: the Poisson maximum-likelihood flux of the frame, since label
amplitudes are normalised). ``chi2`` is about 1 per pixel when only photon noise differs, but
a small relative error of a bright pattern gives a large one, so by itself it says as much
about the dose and the sample's contrast as about the network. The residual published per
frame is therefore the *unexplained fraction*

    residual = max(chi2(patch) - 1, 0) / max(chi2(featureless) - 1, 1),

the excess over photon noise of the predicted patch against that of a featureless object (the
probe alone, amplitude 1, flat phase; its pattern is computed once). About 0: the patch
explains the pattern; about 1: it explains no more than "nothing there" would, which is what a
network does on a kind of feature it never learned, on a probe that drifted from the one it
was trained with, or on noise. A blank region (no structure to explain) scores 0, not 1.

Geometry (the package's conventions): the patch sits on the network's output grid with the beam
centre on pixel (H // 2, W // 2). With ``reduce="crop"`` that grid is ``f = h / H`` times
coarser than the frame's object grid and covers the same field of view; its far field is the
central H x W of the detector, which is what the network saw. The probe is moved by (f - 1) / 2
fine pixels (the label grid's beam centre, `model.data`) and band-limited to those H x W
frequencies. With ``reduce="bin"`` the patch is the central H x W of the frame's object grid:
the exit wave is zero-padded to the frame, propagated, and binned like the frame.

Cost: one H x W FFT and a few element-wise passes per frame (numpy, float32), measured as a
ratio to the engine's inference in ``bench uncertainty``.
"""

from __future__ import annotations

import numpy as np

from ..fourier import far_field, fourier_shift
from ..model.preprocessing import Preprocessing

ANSCOMBE_OFFSET = 3.0 / 8.0


def _centre_crop(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = a.shape[-2:]
    top, left = h // 2 - shape[0] // 2, w // 2 - shape[1] // 2
    return a[..., top : top + shape[0], left : left + shape[1]]


def probe_on_output_grid(probe: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """(H, W) complex64 probe on the network's output grid (see the module docstring)."""
    probe = np.asarray(probe)
    if probe.ndim == 3:
        probe = probe[int(np.argmax((np.abs(probe) ** 2).sum(axis=(1, 2))))]
    if probe.shape != preprocessing.frame_shape:
        raise ValueError(
            f"the probe is {probe.shape}, the model's frames {preprocessing.frame_shape}: the "
            "physics check needs the probe on the frame's object grid"
        )
    out_shape = preprocessing.input_shape
    if preprocessing.reduce == "bin" or preprocessing.factor == 1:
        return np.ascontiguousarray(_centre_crop(probe, out_shape), dtype=np.complex64)
    f = preprocessing.factor
    # the label grid's beam centre lies (f - 1) / 2 fine pixels after fine pixel (h//2, w//2)
    moved = fourier_shift(probe.astype(np.complex64), np.array([(f - 1) / 2, (f - 1) / 2]))
    spectrum = _centre_crop(far_field(moved), out_shape)
    # inverse centred unitary FFT: conj(F(conj(x)))
    coarse = np.conj(far_field(np.conj(spectrum)))
    return np.ascontiguousarray(coarse, dtype=np.complex64)


class PhysicsCheck:
    """Per-frame Poisson residual of predicted patches against the measured frames.

    Args:
        probe: (h, w) complex probe on the frame's object grid (sqrt(photons)), e.g. the
            model's ``probe`` file (`model.checkpoint.read_probe`), a data set's probe or
            the last ePIE's.
        preprocessing: the model's (frame shape, crop or bin, output grid).
    """

    def __init__(self, probe: np.ndarray, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        self.probe = probe_on_output_grid(probe, preprocessing)
        h, w = self.probe.shape
        blank = np.zeros((1, 2, h, w), dtype=np.float32)
        blank[:, 1] = 1.0
        self._featureless = self.predicted_patterns(blank)[0]  # the probe's own pattern

    def predicted_patterns(self, output: np.ndarray) -> np.ndarray:
        """(N, 2+, H, W) network output -> (N, H', W') predicted intensities on the reduced
        detector grid (arbitrary flux: `residuals` fits it per frame)."""
        phase = np.asarray(output[:, 0], dtype=np.float32)
        amplitude = np.asarray(output[:, 1], dtype=np.float32)
        wave = np.empty(phase.shape, dtype=np.complex64)  # cos + i sin: cheaper than exp(i x)
        wave.real = amplitude * np.cos(phase)
        wave.imag = amplitude * np.sin(phase)
        wave *= self.probe
        pre = self.preprocessing
        if pre.reduce == "bin" and pre.factor > 1:
            h, w = pre.frame_shape
            full = np.zeros((wave.shape[0], h, w), dtype=np.complex64)
            top, left = h // 2 - wave.shape[1] // 2, w // 2 - wave.shape[2] // 2
            full[:, top : top + wave.shape[1], left : left + wave.shape[2]] = wave
            wave = full
        field = far_field(wave, workers=1)  # small batches: one thread beats a pool
        intensity = np.square(field.real) + np.square(field.imag)
        if pre.reduce == "bin" and pre.factor > 1:
            intensity = pre.reduce_frames(intensity)
        return intensity.astype(np.float32, copy=False)

    def _measured(self, frames: np.ndarray) -> np.ndarray:
        pre = self.preprocessing
        measured = pre.reduce_frames(pre.check_frames(frames)).astype(np.float32)
        return np.maximum(measured, 0.0)

    @staticmethod
    def _chi2(measured: np.ndarray, root: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Anscombe chi-square per pixel; ``root`` is sqrt(measured + 3/8), computed once."""
        if predicted.shape[-2:] != measured.shape[-2:]:
            raise ValueError(f"predicted {predicted.shape} vs measured {measured.shape} patterns")
        total = predicted.sum(axis=(-2, -1))
        flux = measured.sum(axis=(1, 2)) / np.maximum(total, 1e-30)
        r = predicted * flux[:, None, None].astype(np.float32)
        r += np.float32(ANSCOMBE_OFFSET)
        np.sqrt(r, out=r)
        r -= root
        np.square(r, out=r)
        return (4.0 * np.mean(r, axis=(1, 2))).astype(np.float32)

    def chi2(self, frames: np.ndarray, output: np.ndarray) -> np.ndarray:
        """(N,) Anscombe chi-square per pixel of each frame against its predicted pattern
        (about 1 when only photon noise differs; grows with dose for a given error)."""
        measured = self._measured(frames)
        root = np.sqrt(measured + np.float32(ANSCOMBE_OFFSET))
        return self._chi2(measured, root, self.predicted_patterns(output))

    def residuals(self, frames: np.ndarray, output: np.ndarray) -> np.ndarray:
        """(N,) float32 unexplained fraction of each frame (module docstring): about 0 when
        the patch explains its pattern, about 1 when it explains no more than a featureless
        object.

        Args:
            frames: (N, h, w) measured detector frames (counts), as the engine received them.
            output: (N, 2+, H, W) the engine's output for them.
        """
        measured = self._measured(frames)
        root = np.sqrt(measured + np.float32(ANSCOMBE_OFFSET))
        patch = self._chi2(measured, root, self.predicted_patterns(output))
        featureless = self._chi2(measured, root, self._featureless)
        excess = np.maximum(patch - 1.0, 0.0) / np.maximum(featureless - 1.0, 1.0)
        return excess.astype(np.float32)
