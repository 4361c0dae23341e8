"""Torch building blocks shared by the engines; the same code runs on CPU and CUDA.

Layout: frames and probes are centred in real space (beam on pixel (H//2, W//2)); Fourier
quantities are kept in the *unshifted* FFT layout. Since a real-space shift only multiplies a
spectrum by a phase ramp, |fft2(x)| = ifftshift(|far_field(x)|): the measured amplitudes are
moved to the unshifted layout once, and no fftshift is ever needed inside the iterations. The
FFT is unitary (``norm="ortho"``), so a probe in sqrt(photons) gives intensities in photons.
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-12


def resolve_device(name: str) -> torch.device:
    """ "cpu", "cuda" or "auto" (CUDA when available) -> a torch device; clear error if absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {name!r}")
    return torch.device(name)


def unshifted(array: np.ndarray) -> np.ndarray:
    """Move the zero frequency of centred patterns (..., H, W) to pixel [0, 0]."""
    return np.fft.ifftshift(array, axes=(-2, -1))


def window_indices(
    corners: torch.Tensor, frame_shape: tuple[int, int], object_width: int
) -> torch.Tensor:
    """(B, H*W) int64 flat indices into a row-major object of ``object_width`` columns."""
    h, w = frame_shape
    dev = corners.device
    rows = corners[:, 0, None] + torch.arange(h, device=dev)
    cols = corners[:, 1, None] + torch.arange(w, device=dev)
    return (rows[:, :, None] * object_width + cols[:, None, :]).reshape(corners.shape[0], h * w)


def gather(flat: torch.Tensor, index: torch.Tensor, frame_shape: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) windows of a flattened object at (B, H*W) flat indices."""
    return torch.index_select(flat, 0, index.reshape(-1)).reshape(index.shape[0], *frame_shape)


def scatter_add(flat: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """Add (B, H, W) ``values`` into a flattened object at (B, H*W) flat indices, in place."""
    flat.index_add_(0, index.reshape(-1), values.reshape(-1))


def shift_ramps(offsets: torch.Tensor, frame_shape: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) complex Fourier multipliers exp(-2 pi i f.s) (unshifted layout).

    Multiplying a spectrum by them moves the image by ``offsets`` (B, 2) (row, col) pixels:
    out(r) = in(r - s). Same convention as `sim.forward.shift_ramps`.
    """
    h, w = frame_shape
    dev = offsets.device
    fy = torch.fft.fftfreq(h, device=dev, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, device=dev, dtype=torch.float64)
    off = offsets.to(torch.float64)
    ry = torch.polar(
        torch.ones(1, device=dev, dtype=torch.float64), -2 * np.pi * off[:, 0, None] * fy
    )
    rx = torch.polar(
        torch.ones(1, device=dev, dtype=torch.float64), -2 * np.pi * off[:, 1, None] * fx
    )
    return (ry[:, :, None] * rx[:, None, :]).to(torch.complex64)


def fft2(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fft2(x, norm="ortho")


def ifft2(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(x, norm="ortho")


def modulus(x: torch.Tensor) -> torch.Tensor:
    """|x| of a complex tensor (faster than ``abs`` on CPU)."""
    return (x.real.square() + x.imag.square()).sqrt()


def intensity(x: torch.Tensor) -> torch.Tensor:
    """|x|^2 of a complex tensor."""
    return x.real.square() + x.imag.square()


def modulus_correct_(
    spectrum: torch.Tensor, amplitudes: torch.Tensor, valid: torch.Tensor | None
) -> torch.Tensor:
    """Turn ``spectrum`` in place into the Fourier-modulus correction; return the misfit.

    On return ``spectrum`` holds ``P_M(spectrum) - spectrum``, where the projection P_M
    replaces the modulus by the measured amplitude on valid pixels and keeps the rest; the
    returned scalar is the sum over valid pixels of (|spectrum| - amplitude)^2 (photons).
    Written for few passes over memory: ``(a - |s|) / |s| * s`` is the correction.

    With probe modes (a 4-D ``spectrum``) the modulus is the incoherent sum over the modes,
    sqrt(sum_m |s_m|^2), and every mode is scaled by the same factor (the modal projection of
    Thibault & Menzel 2013).

    Args:
        spectrum: (B, H, W) complex far fields, or (B, M, H, W) for M probe modes
            (unshifted layout).
        amplitudes: (B, H, W) measured sqrt(counts) (unshifted layout).
        valid: (H, W) bool of measured pixels, or None when all are measured.
    """
    modal = spectrum.dim() == 4
    if not modal:
        mod = spectrum.abs()
    elif spectrum.shape[1] == 1:
        mod = spectrum[:, 0].abs()
    else:
        mod = intensity(spectrum).sum(1).sqrt_()
    residual = amplitudes - mod
    if valid is not None:
        residual = residual * valid
    flat = residual.reshape(-1)
    misfit = torch.dot(flat, flat)
    factor = residual.div_(mod.add_(EPS))
    spectrum.mul_(factor.unsqueeze(1) if modal else factor)
    return misfit
