"""`Mosaic`: a canvas in metres that accumulates phase/amplitude patches at beam positions.

The canvas holds sum(w * A * exp(i phi)) and sum(w) for every object pixel, so phases average
without wrapping artefacts. Patches are placed at the nearest object pixel of their position
(the error is at most half a pixel; pass ``subpixel=True`` to Fourier-shift each patch to its
exact position first). A patch from a CNN carries an arbitrary phase offset; with
``align_phase=True`` each new patch is rotated by the phase that best matches what the canvas
already holds in its footprint (a greedy phase synchronisation that costs one weighted inner
product per patch); patches that share no pixel with earlier ones keep their own offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..fourier import fourier_shift
from ..geometry import PixelGrid, as_positions_m, patch_corners

MIN_OVERLAP_WEIGHT = 1e-6  # canvas weight below which a pixel counts as empty


@dataclass
class MosaicSnapshot:
    """The mosaic at one moment, as a stitcher hands it over (copies, safe to keep).

    Attributes:
        phase: (R, C) radians (0 where nothing was measured).
        amplitude: (R, C) weighted mean amplitude.
        weights: (R, C) summed patch weights (0: not measured).
        pixel_size_m: object pixel size, m.
        origin_m: (y, x) of the centre of pixel [0, 0], m.
        frames_used: patches accumulated.
        model_version: version of the CNN that produced the patches ("" if unknown).
        frames_outside: patches that fell entirely outside the canvas.
        metrics: optional quality numbers (e.g. SSIM against a reference).
    """

    phase: np.ndarray
    amplitude: np.ndarray
    weights: np.ndarray
    pixel_size_m: float
    origin_m: tuple[float, float]
    frames_used: int
    model_version: str = ""
    frames_outside: int = 0
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.phase = np.asarray(self.phase, dtype=np.float32)
        self.amplitude = np.asarray(self.amplitude, dtype=np.float32)
        self.weights = np.asarray(self.weights, dtype=np.float32)
        if self.phase.ndim != 2 or not (
            self.phase.shape == self.amplitude.shape == self.weights.shape
        ):
            raise ValueError(
                "phase, amplitude and weights must be 2-D arrays of one shape, got "
                f"{self.phase.shape}, {self.amplitude.shape}, {self.weights.shape}"
            )
        if not self.pixel_size_m > 0:
            raise ValueError(f"pixel_size_m must be positive, got {self.pixel_size_m!r}")
        self.origin_m = (float(self.origin_m[0]), float(self.origin_m[1]))

    @property
    def grid(self) -> PixelGrid:
        return PixelGrid(self.pixel_size_m, self.origin_m, self.phase.shape)

    @property
    def complex(self) -> np.ndarray:
        """amplitude * exp(i phase), zero where unmeasured."""
        return self.amplitude * np.exp(1j * self.phase) * (self.weights > MIN_OVERLAP_WEIGHT)


class Mosaic:
    """Accumulates patches on a fixed canvas.

    Args:
        grid: the canvas in metres (pixel size = the patches' object pixel size).
        weight: (H, W) patch weight (e.g. `probe_weight`), which fixes the patch shape.
        align_phase: rotate each new patch to agree with the canvas where they overlap.
        subpixel: Fourier-shift patches to their exact sub-pixel positions (slower).
    """

    def __init__(
        self,
        grid: PixelGrid,
        weight: np.ndarray,
        *,
        align_phase: bool = True,
        subpixel: bool = False,
    ):
        weight = np.asarray(weight, dtype=np.float32)
        if weight.ndim != 2 or not np.all(np.isfinite(weight)) or weight.min() < 0:
            raise ValueError("the patch weight must be a finite, non-negative (H, W) array")
        self.grid = grid
        self.weight = weight
        self.patch_shape = weight.shape
        self.align_phase = align_phase
        self.subpixel = subpixel
        # one interleaved canvas: per pixel [sum w A cos, sum w A sin, sum w A, sum w], so each
        # patch lands with a single slice addition
        self._canvas = np.zeros((*grid.shape, 4), dtype=np.float32)
        self._buffer: np.ndarray | None = None
        self.frames_used = 0
        self.frames_outside = 0

    @classmethod
    def covering(
        cls,
        positions_m: np.ndarray,
        pixel_size_m: float,
        weight: np.ndarray,
        margin_px: int = 2,
        **options,
    ) -> Mosaic:
        """A mosaic whose canvas covers every patch at ``positions_m`` (y, x metres).

        The canvas origin is snapped to a whole multiple of the pixel size, so mosaics of
        different scans at one pixel size share one pixel lattice.
        """
        positions_m = as_positions_m(positions_m)
        half = np.array(weight.shape) // 2 + margin_px
        lo = np.floor((positions_m.min(axis=0) - half * pixel_size_m) / pixel_size_m) * pixel_size_m
        hi = positions_m.max(axis=0) + half * pixel_size_m
        shape = tuple(int(n) for n in np.ceil((hi - lo) / pixel_size_m).astype(int) + 1)
        return cls(PixelGrid(pixel_size_m, (float(lo[0]), float(lo[1])), shape), weight, **options)

    def add(
        self, phase: np.ndarray, amplitude: np.ndarray | None, positions_m: np.ndarray
    ) -> np.ndarray:
        """Accumulate a batch of patches; return the phase rotation applied to each (rad).

        Args:
            phase: (B, H, W) radians.
            amplitude: (B, H, W), or None for unit amplitude.
            positions_m: (B, 2) (y, x) beam positions in metres.
        """
        phase = np.asarray(phase, dtype=np.float32)
        if phase.ndim == 2:
            phase = phase[None]
        if phase.shape[1:] != self.patch_shape:
            raise ValueError(f"patches of shape {phase.shape[1:]} for a {self.patch_shape} mosaic")
        if amplitude is not None:
            amplitude = np.asarray(amplitude, dtype=np.float32).reshape(phase.shape)
        positions_m = as_positions_m(np.atleast_2d(positions_m))
        if positions_m.shape[0] != phase.shape[0]:
            raise ValueError(f"{phase.shape[0]} patches but {positions_m.shape[0]} positions")
        if not np.isfinite(phase).all() or (
            amplitude is not None and not np.isfinite(amplitude).all()
        ):
            raise ValueError("patches contain NaN or infinite values")
        corners, offsets = patch_corners(self.grid.to_pixels(positions_m), self.patch_shape)
        if self.subpixel:
            unit = np.ones_like(phase) if amplitude is None else amplitude
            shifted = fourier_shift(unit * np.exp(1j * phase).astype(np.complex64), offsets)
            phase, amplitude = np.angle(shifted), np.abs(shifted)
        # every patch's contribution at once, into a reused (B, H, W, 4) buffer
        contributions = self._contributions(phase.shape[0])
        weighted = self.weight if amplitude is None else np.multiply(amplitude, self.weight)
        np.cos(phase, out=contributions[..., 0])
        np.sin(phase, out=contributions[..., 1])
        contributions[..., 0] *= weighted
        contributions[..., 1] *= weighted
        contributions[..., 2] = weighted
        contributions[..., 3] = self.weight
        rotations = np.zeros(len(contributions))
        h, w = self.patch_shape
        rows, cols = self.grid.shape
        for index, (r0, c0) in enumerate(corners):
            top, left = max(r0, 0), max(c0, 0)
            bottom, right = min(r0 + h, rows), min(c0 + w, cols)
            if top >= bottom or left >= right:
                self.frames_outside += 1
                continue
            window = self._canvas[top:bottom, left:right]
            piece = contributions[index, top - r0 : bottom - r0, left - c0 : right - c0]
            if self.align_phase:
                rotations[index] = self._align(piece, window)
            window += piece
            self.frames_used += 1
        return rotations

    def _contributions(self, count: int) -> np.ndarray:
        """A (count, H, W, 4) float32 work buffer, reused between calls."""
        if self._buffer is None or self._buffer.shape[0] < count:
            self._buffer = np.empty((count, *self.patch_shape, 4), dtype=np.float32)
        return self._buffer[:count]

    @staticmethod
    def _align(piece: np.ndarray, window: np.ndarray) -> float:
        """Rotate ``piece`` in place to best match the canvas ``window``; return the angle."""
        # sum over pixels of conj(w A e^{i phi}) * F, with F the canvas's complex field
        re = float(np.vdot(piece[..., 0], window[..., 0]) + np.vdot(piece[..., 1], window[..., 1]))
        im = float(np.vdot(piece[..., 0], window[..., 1]) - np.vdot(piece[..., 1], window[..., 0]))
        if re * re + im * im <= MIN_OVERLAP_WEIGHT**2:
            return 0.0
        rotation = np.arctan2(im, re)
        c, s = np.float32(np.cos(rotation)), np.float32(np.sin(rotation))
        real, imag = piece[..., 0].copy(), piece[..., 1]
        piece[..., 0] = c * real - s * imag
        piece[..., 1] = s * real + c * imag
        return float(rotation)

    def snapshot(self, model_version: str = "", **metrics) -> MosaicSnapshot:
        """A copy of the current mosaic (phase, amplitude, weights)."""
        canvas = self._canvas
        weights = canvas[..., 3].copy()
        measured = weights > MIN_OVERLAP_WEIGHT
        safe = np.where(measured, weights, 1.0)
        return MosaicSnapshot(
            phase=np.where(measured, np.arctan2(canvas[..., 1], canvas[..., 0]), 0.0).astype(
                np.float32
            ),
            amplitude=np.where(measured, canvas[..., 2] / safe, 0.0).astype(np.float32),
            weights=weights,
            pixel_size_m=self.grid.pixel_size_m,
            origin_m=self.grid.origin_m,
            frames_used=self.frames_used,
            model_version=model_version,
            frames_outside=self.frames_outside,
            metrics=dict(metrics),
        )
