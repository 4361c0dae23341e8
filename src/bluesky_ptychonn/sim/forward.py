"""Far-field forward model: object patches, sub-pixel shifts, exit waves, diffraction.

Conventions: a patch of shape (n, n) at a position holds the beam centre on its pixel
(n//2, n//2); diffraction patterns are centred (zero frequency at pixel (n//2, n//2)); the
propagator is the unitary FFT, so total intensity is conserved (Parseval) and a probe
normalised to sum |P|^2 = photons yields patterns in photons.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from ..fourier import FFT_WORKERS, far_field, fourier_shift, shift_ramps
from ..geometry import PixelGrid, patch_corners

CHUNK_ELEMENTS = 2**21  # complex values per forward-model chunk (16 MiB in complex64)

__all__ = ["FarFieldModel", "extract_patches", "far_field", "fourier_shift", "shift_ramps"]


def extract_patches(
    image: np.ndarray, corners: np.ndarray, shape: tuple[int, int], fill: complex = 1.0
) -> np.ndarray:
    """(B, rows, cols) patches of ``image`` whose pixel [0, 0] sits at ``corners`` (B, 2).

    Pixels outside the image take the value ``fill`` (free space: transmission 1).
    """
    corners = np.atleast_2d(corners)
    rows = corners[:, 0, None] + np.arange(shape[0])  # (B, rows)
    cols = corners[:, 1, None] + np.arange(shape[1])  # (B, cols)
    inside_r = (rows >= 0) & (rows < image.shape[0])
    inside_c = (cols >= 0) & (cols < image.shape[1])
    r = np.clip(rows, 0, image.shape[0] - 1)
    c = np.clip(cols, 0, image.shape[1] - 1)
    patches = image[r[:, :, None], c[:, None, :]]
    if not (inside_r.all() and inside_c.all()):
        inside = inside_r[:, :, None] & inside_c[:, None, :]
        patches = np.where(inside, patches, np.asarray(fill, dtype=image.dtype))
    return patches


class FarFieldModel:
    """Exit waves and far-field intensities of a probe scanned over an object.

    The probe spectrum is computed once; each position costs one inverse FFT (the probe at
    its sub-pixel offset) and one forward FFT (the exit wave).

    Args:
        object_array: (R, C) complex transmission.
        object_grid: where ``object_array`` lies in metres.
        probe: (n, n) complex probe on the same pixel size, centred, in sqrt(photons).
    """

    def __init__(self, object_array: np.ndarray, object_grid: PixelGrid, probe: np.ndarray):
        if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
            raise ValueError(f"the probe must be a square 2-D array, got {probe.shape}")
        self.object_array = np.ascontiguousarray(object_array, dtype=np.complex64)
        self.object_grid = object_grid
        self.probe = probe.astype(np.complex64)
        self.shape = probe.shape
        self._probe_spectrum = sfft.fft2(sfft.ifftshift(self.probe), workers=FFT_WORKERS)

    def shifted_probes(self, offsets_px: np.ndarray) -> np.ndarray:
        """(B, n, n) centred probes moved by sub-pixel ``offsets_px`` (B, 2)."""
        # a shift by half the window (n//2) turns the unshifted-layout result into a centred one
        half = np.array([self.shape[0] // 2, self.shape[1] // 2])
        spectra = self._probe_spectrum[None] * shift_ramps(self.shape, offsets_px + half)
        return sfft.ifft2(spectra, workers=FFT_WORKERS, overwrite_x=True)

    def exit_waves(self, positions_m: np.ndarray) -> np.ndarray:
        """(B, n, n) exit waves: object patch x probe centred at each (y, x) position (m)."""
        corners, offsets = patch_corners(self.object_grid.to_pixels(positions_m), self.shape)
        patches = extract_patches(self.object_array, corners, self.shape)
        return patches * self.shifted_probes(offsets)

    def intensities(self, positions_m: np.ndarray) -> np.ndarray:
        """(B, n, n) expected far-field intensities (photons per pixel), float32, centred.

        Large batches are computed in chunks of about ``CHUNK_ELEMENTS`` complex values, so
        the temporaries stay in cache-friendly sizes whatever the batch.
        """
        positions_m = np.atleast_2d(positions_m)
        out = np.empty((positions_m.shape[0], *self.shape), dtype=np.float32)
        chunk = max(1, CHUNK_ELEMENTS // (self.shape[0] * self.shape[1]))
        for start in range(0, positions_m.shape[0], chunk):
            wave = far_field(self.exit_waves(positions_m[start : start + chunk]))
            np.square(wave.real, out=out[start : start + chunk])
            out[start : start + chunk] += np.square(wave.imag)
        return out

    def object_patches(
        self, positions_m: np.ndarray, shape: tuple[int, int], margin_px: int = 16
    ) -> np.ndarray:
        """(B, rows, cols) object patches with the beam centre exactly on pixel (rows//2, cols//2).

        Sub-pixel positions are honoured by a Fourier shift of a patch ``margin_px`` larger on
        every side, cropped afterwards so that the periodic wrap does not reach the result.
        """
        big = (shape[0] + 2 * margin_px, shape[1] + 2 * margin_px)
        corners, offsets = patch_corners(self.object_grid.to_pixels(positions_m), big)
        patches = extract_patches(self.object_array, corners, big)
        # content at the beam (offset from the centre) moves to the centre: shift by -offset
        shifted = fourier_shift(patches, -offsets)
        return shifted[:, margin_px : margin_px + shape[0], margin_px : margin_px + shape[1]]
