"""Pixel detector model: photon counting, insensitive pixels, saturation, crop, binning, dtype.

A `DetectorModel` turns expected photon counts on the native pixels of a square readout crop
around the beam centre into the integer frame the detector delivers:

1. Poisson counting noise on each native pixel;
2. insensitive pixels (chip gaps, dead pixels) read zero;
3. each pixel saturates at ``saturation_counts`` per frame (the counter depth, or the count
   rate limit times the frame time);
4. ``bin_factor`` x ``bin_factor`` blocks are summed (the seeds binned the Medipix3 by 4);
5. the result is cast to the detector's dtype.

The presets follow the data sheets of the DECTRIS EIGER2 X 500K (75 um pixels, up to 2 kHz
in 16-bit mode at 500K; a 128x128 region of interest read out) and the ASI Medipix3 quad
(516x516, 55 um, 100 Hz; crop to 512 and bin by 4 to 128x128). Where a data sheet gives a
count-rate limit, saturation is that rate times the frame period at the maximum frame rate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

# numpy's Poisson sampler releases the GIL: frames are counted in parallel threads
_COUNTING_POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1))

RandomSource = np.random.Generator | Sequence[np.random.Generator]


def poisson_counts(expected: np.ndarray, rng: RandomSource) -> np.ndarray:
    """Poisson draws with means ``expected`` (..., H, W).

    ``rng`` is one generator, or one generator per frame along the first axis; per-frame
    generators make each frame's noise independent of how frames are batched, and the frames
    are drawn in parallel threads.
    """
    if isinstance(rng, np.random.Generator):
        return rng.poisson(expected)
    if len(rng) != expected.shape[0]:
        raise ValueError(f"{len(rng)} generators for {expected.shape[0]} frames")
    counts = np.empty(expected.shape, dtype=np.int64)

    def count(index: int) -> None:
        counts[index] = rng[index].poisson(expected[index])

    list(_COUNTING_POOL.map(count, range(len(rng))))
    return counts


@dataclass(frozen=True)
class DetectorModel:
    """Geometry and response of a photon-counting pixel detector.

    Attributes:
        name: preset name ("eiger", "medipix3") or a label.
        shape_px: native (rows, columns) of the sensor.
        pixel_size_m: native pixel pitch in metres.
        max_frame_rate_hz: highest frame rate of the readout mode modelled.
        saturation_counts: counts at which one native pixel saturates within one frame.
        dtype: dtype of delivered frames (numpy name).
        crop_px: side of the square region read out around the beam centre, native pixels.
        bin_factor: side of the square blocks summed after cropping.
        beam_centre_px: (row, column) native pixel that receives the direct beam.
        gap_rows, gap_cols: native rows / columns without sensor (chip or module gaps).
        dead_pixel_fraction: fraction of native pixels that never count.
        dead_pixel_seed: seed that places the dead pixels (a property of the sensor).
    """

    name: str
    shape_px: tuple[int, int]
    pixel_size_m: float
    max_frame_rate_hz: float
    saturation_counts: int
    dtype: str = "uint16"
    crop_px: int = 128
    bin_factor: int = 1
    beam_centre_px: tuple[int, int] | None = None
    gap_rows: tuple[int, ...] = field(default=())
    gap_cols: tuple[int, ...] = field(default=())
    dead_pixel_fraction: float = 0.0
    dead_pixel_seed: int = 7

    def __post_init__(self) -> None:
        rows, cols = self.shape_px
        if not (
            self.pixel_size_m > 0 and self.max_frame_rate_hz > 0 and self.saturation_counts > 0
        ):
            raise ValueError(
                f"detector {self.name!r}: pixel size, frame rate, saturation must be > 0"
            )
        if self.bin_factor < 1 or self.crop_px % self.bin_factor:
            raise ValueError(
                f"detector {self.name!r}: crop {self.crop_px} is not a multiple of "
                f"bin {self.bin_factor}"
            )
        if not 0 <= self.dead_pixel_fraction < 1:
            raise ValueError(
                f"dead_pixel_fraction must lie in [0, 1), got {self.dead_pixel_fraction}"
            )
        np.dtype(self.dtype)  # validates the dtype name
        top, left = self.crop_origin_px
        if top < 0 or left < 0 or top + self.crop_px > rows or left + self.crop_px > cols:
            raise ValueError(
                f"detector {self.name!r}: a {self.crop_px}-pixel crop around beam centre "
                f"{self.centre_px} leaves the {rows}x{cols} sensor"
            )

    @property
    def centre_px(self) -> tuple[int, int]:
        """(row, column) of the direct beam on the native sensor."""
        if self.beam_centre_px is not None:
            return (int(self.beam_centre_px[0]), int(self.beam_centre_px[1]))
        return (self.shape_px[0] // 2, self.shape_px[1] // 2)

    @property
    def crop_origin_px(self) -> tuple[int, int]:
        """Native (row, column) of the crop's pixel [0, 0]; the beam sits on crop pixel crop//2."""
        r, c = self.centre_px
        return (r - self.crop_px // 2, c - self.crop_px // 2)

    @property
    def readout_shape(self) -> tuple[int, int]:
        """Shape of a delivered frame after crop and binning."""
        n = self.crop_px // self.bin_factor
        return (n, n)

    @property
    def readout_pixel_size_m(self) -> float:
        """Pitch of a delivered (binned) pixel in metres."""
        return self.pixel_size_m * self.bin_factor

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.readout_shape)) * np.dtype(self.dtype).itemsize

    @cached_property
    def sensor_valid_mask(self) -> np.ndarray:
        """(rows, cols) bool over the whole sensor: False on gaps and dead pixels."""
        mask = np.ones(self.shape_px, dtype=bool)
        mask[list(self.gap_rows), :] = False
        mask[:, list(self.gap_cols)] = False
        if self.dead_pixel_fraction > 0:
            rng = np.random.default_rng(self.dead_pixel_seed)
            mask &= rng.random(self.shape_px) >= self.dead_pixel_fraction
        return mask

    @cached_property
    def crop_valid_mask(self) -> np.ndarray:
        """(crop, crop) bool: valid native pixels inside the readout crop."""
        top, left = self.crop_origin_px
        return self.sensor_valid_mask[top : top + self.crop_px, left : left + self.crop_px]

    @cached_property
    def readout_valid_mask(self) -> np.ndarray:
        """Readout-shaped bool: True where every native pixel of the bin is valid."""
        return self._bin(self.crop_valid_mask.astype(np.int64)) == self.bin_factor**2

    def _bin(self, frames: np.ndarray) -> np.ndarray:
        b = self.bin_factor
        if b == 1:
            return frames
        n = self.crop_px // b
        return frames.reshape(*frames.shape[:-2], n, b, n, b).sum(axis=(-3, -1))

    def read_out(self, expected_counts: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Frames as delivered, from expected photons per native crop pixel.

        Args:
            expected_counts: (..., crop, crop) expected photons per native pixel per frame.
            rng: random generator for the counting noise, or one generator per frame (see
                `poisson_counts`); None returns the noiseless expectation (still masked,
                saturated, binned, in float32).
        """
        expected_counts = np.asarray(expected_counts)
        if expected_counts.shape[-2:] != (self.crop_px, self.crop_px):
            raise ValueError(
                f"detector {self.name!r} expects ({self.crop_px}, {self.crop_px}) crops, "
                f"got {expected_counts.shape[-2:]}"
            )
        if rng is None:
            counts = np.where(self.crop_valid_mask, expected_counts, 0).astype(np.float32)
            return self._bin(np.minimum(counts, self.saturation_counts))
        peak = float(expected_counts.max(initial=0.0))
        if self.bin_factor > 1 and peak + 10 * np.sqrt(peak) < self.saturation_counts:
            # No native pixel can plausibly saturate, and a sum of Poisson variables is Poisson:
            # count once per binned pixel (bin_factor^2 fewer random draws), exact in law.
            masked = np.where(self.crop_valid_mask, np.maximum(expected_counts, 0), 0)
            binned = poisson_counts(self._bin(masked), rng)
        else:
            counts = poisson_counts(np.maximum(expected_counts, 0), rng)
            counts = np.where(self.crop_valid_mask, counts, 0)
            binned = self._bin(np.minimum(counts, self.saturation_counts))
        if np.issubdtype(np.dtype(self.dtype), np.integer):
            binned = np.minimum(binned, np.iinfo(self.dtype).max)
        return binned.astype(self.dtype)

    def with_options(self, **changes: object) -> DetectorModel:
        """A copy with some fields changed (e.g. ``crop_px``, ``dead_pixel_fraction``)."""
        return replace(self, **changes)


def _eiger2_x_500k() -> DetectorModel:
    # 2 x 4 chips of 256 x 256 with 2-pixel inter-chip gaps: 514 x 1030 pixels (38.6 x 77.2 mm).
    # The beam is placed inside one chip so that the 128-pixel region of interest holds no gap.
    rows, cols = 514, 1030
    gap_rows = (256, 257)
    gap_cols = (256, 257, 514, 515, 772, 773)
    return DetectorModel(
        name="eiger",
        shape_px=(rows, cols),
        pixel_size_m=75e-6,
        max_frame_rate_hz=2000.0,
        saturation_counts=5000,  # 1e7 photons/s/pixel count-rate capability x 0.5 ms frame
        dtype="uint16",
        crop_px=128,
        bin_factor=1,
        beam_centre_px=(128, 386),
        gap_rows=gap_rows,
        gap_cols=gap_cols,
    )


def _medipix3_quad() -> DetectorModel:
    # 2 x 2 chips, 516 x 516 including the enlarged pixels of the central cross, which the
    # readout interpolates (no insensitive gap). 12-bit counters. Crop 512, bin 4 -> 128.
    return DetectorModel(
        name="medipix3",
        shape_px=(516, 516),
        pixel_size_m=55e-6,
        max_frame_rate_hz=100.0,
        saturation_counts=4095,
        dtype="uint16",
        crop_px=512,
        bin_factor=4,
        beam_centre_px=(258, 258),
    )


DETECTOR_PRESETS = {"eiger": _eiger2_x_500k, "medipix3": _medipix3_quad}


def detector_preset(name: str, **changes: object) -> DetectorModel:
    """A detector preset by name ("eiger", "medipix3"), with optional field changes."""
    key = name.lower()
    if key not in DETECTOR_PRESETS:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(DETECTOR_PRESETS)}")
    detector = DETECTOR_PRESETS[key]()
    return detector.with_options(**changes) if changes else detector
