"""Fourier helpers shared by the simulator, reconstruction and metrics (numpy / scipy only).

* `far_field`: the centred unitary 2-D FFT (the far-field propagator; conserves energy).
* `shift_ramps`, `fourier_shift`: sub-pixel translation by the shift theorem.

Arrays are centred: zero frequency (or the beam centre) on pixel (n//2, n//2).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

FFT_WORKERS = -1  # all cores


def _checkerboard(shape: tuple[int, int]) -> np.ndarray:
    """(-1)^(row + column): multiplying by it moves a spectrum by half the window."""
    rows, cols = np.indices(shape)
    return (1 - 2 * ((rows + cols) % 2)).astype(np.float32)


def far_field(exit_waves: np.ndarray, workers: int = FFT_WORKERS) -> np.ndarray:
    """Centred unitary 2-D FFT over the last two axes (energy-conserving propagator).

    Equals ``fftshift(fft2(ifftshift(x), norm="ortho"))``; for even sizes the two shifts are
    replaced by multiplications with a checkerboard, which is cheaper than rolling the arrays.
    ``workers``: scipy's FFT threads (default all cores; 1 for small batches on a busy host).
    """
    shape = exit_waves.shape[-2:]
    if shape[0] % 2 or shape[1] % 2:
        shifted = sfft.ifftshift(exit_waves, axes=(-2, -1))
        spectrum = sfft.fft2(shifted, norm="ortho", workers=workers)
        return sfft.fftshift(spectrum, axes=(-2, -1))
    board = _checkerboard(shape)
    sign = -1 if (shape[0] // 2 + shape[1] // 2) % 2 else 1
    spectrum = sfft.fft2(exit_waves * board, norm="ortho", workers=workers, overwrite_x=True)
    spectrum *= board * sign
    return spectrum


def shift_ramps(
    shape: tuple[int, int], shifts_px: np.ndarray, dtype: type = np.complex64
) -> np.ndarray:
    """(B, rows, cols) Fourier multipliers exp(-2 pi i f.s) in unshifted FFT order.

    Multiplying a spectrum by them translates the image by ``shifts_px`` (B, 2) (row, column)
    pixels: out(r) = in(r - s).
    """
    real = np.float32 if np.dtype(dtype) == np.complex64 else np.float64
    fy = np.fft.fftfreq(shape[0]).astype(real)
    fx = np.fft.fftfreq(shape[1]).astype(real)
    shifts_px = np.atleast_2d(np.asarray(shifts_px, dtype=real))
    ramp_y = np.exp(-2j * np.pi * shifts_px[:, 0, None] * fy[None, :]).astype(dtype)
    ramp_x = np.exp(-2j * np.pi * shifts_px[:, 1, None] * fx[None, :]).astype(dtype)
    return ramp_y[:, :, None] * ramp_x[:, None, :]


def fourier_shift(images: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Translate images by sub-pixel amounts: out(r) = in(r - s), periodic boundaries.

    Args:
        images: (B, rows, cols) or (rows, cols), real or complex; complex64 input is shifted
            in single precision, anything else in double precision.
        shifts_px: (B, 2) or (2,) (row, column) shifts in pixels.
    """
    images = np.asarray(images)
    dtype = np.complex64 if images.dtype in (np.complex64, np.float32) else np.complex128
    single = images.ndim == 2
    stack = images[None] if single else images
    spectrum = sfft.fft2(stack.astype(dtype), workers=FFT_WORKERS)
    spectrum *= shift_ramps(stack.shape[-2:], shifts_px, dtype)
    shifted = sfft.ifft2(spectrum, workers=FFT_WORKERS, overwrite_x=True)
    return shifted[0] if single else shifted
