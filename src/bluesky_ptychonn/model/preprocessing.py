"""From detector frames to network input: crop or bin, dtype, intensity scaling, optional log.

A `Preprocessing` is stored in a model's sidecar and applied identically at training time
(here) and at inference time (every engine in `inference` calls `Preprocessing.apply`), so a
model never sees data prepared differently from what it was trained on.

Steps, in order, on (N, h, w) or (h, w) centred frames (photon counts, any real dtype):

1. ``reduce``: bring the (h, w) frame to the model's (H, W) input:
   ``"crop"`` keeps the central (H, W) pixels (zero frequency stays on pixel (H//2, W//2));
   ``"bin"`` sums ``h // H`` x ``w // W`` blocks (the frame must be an exact multiple).
   Cropping keeps the field of view of the object patch and coarsens its pixels by ``h / H``;
   binning keeps the object pixel size and shrinks the field of view by the bin factor (see
   `object_patch_geometry`). Frames that already have the input shape pass unchanged.
2. cast to float32;
3. multiply by ``intensity_scale`` (low-dose data scaled up to the counts the model was
   trained on, as the seeds did);
4. ``log``: ``log1p`` (compresses the ~6 decades of a diffraction pattern);
5. multiply by ``input_scale`` (a fixed normalisation chosen at training time so that the
   network sees values of order 1).

The result is (N, 1, H, W) float32, C-contiguous, ready for any engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

REDUCE_MODES = ("crop", "bin")


@dataclass
class Preprocessing:
    """How detector frames become network input (stored in the model sidecar).

    Attributes:
        input_shape: (H, W) pixels the network takes.
        frame_shape: (h, w) pixels of the detector frames the model was trained on (after the
            detector's own crop/bin); frames of another shape are refused by `apply`.
        reduce: ``"crop"`` or ``"bin"`` (see the module docstring).
        intensity_scale: factor on the counts before the log (dimensionless).
        log: apply ``log1p`` after scaling.
        input_scale: factor after the log (normalisation fixed at training time).
    """

    input_shape: tuple[int, int] = (128, 128)
    frame_shape: tuple[int, int] = (128, 128)
    reduce: str = "crop"
    intensity_scale: float = 1.0
    log: bool = True
    input_scale: float = 1.0

    def __post_init__(self) -> None:
        self.input_shape = (int(self.input_shape[0]), int(self.input_shape[1]))
        self.frame_shape = (int(self.frame_shape[0]), int(self.frame_shape[1]))
        if self.reduce not in REDUCE_MODES:
            raise ValueError(f"reduce must be one of {REDUCE_MODES}, got {self.reduce!r}")
        h, w = self.frame_shape
        big_h, big_w = self.input_shape
        if min(h, w, big_h, big_w) < 1:
            raise ValueError("input_shape and frame_shape must be positive")
        if h < big_h or w < big_w:
            raise ValueError(
                f"frames of {self.frame_shape} are smaller than the model input {self.input_shape}"
            )
        if self.reduce == "bin" and (h % big_h or w % big_w or h // big_h != w // big_w):
            raise ValueError(
                f"binning needs frames {self.frame_shape} to be one integer multiple of the input "
                f"{self.input_shape} along both axes"
            )
        for name in ("intensity_scale", "input_scale"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
            setattr(self, name, value)
        self.log = bool(self.log)

    # ---- geometry ---------------------------------------------------------------------------
    @property
    def factor(self) -> int:
        """Crop ratio (``reduce="crop"``) or bin factor (``"bin"``) along rows (1: no change)."""
        return self.frame_shape[0] // self.input_shape[0]

    def object_patch_geometry(self, frame_pixel_size_m: float) -> tuple[float, tuple[int, int]]:
        """(pixel size in m, (H, W)) of the network's output patch.

        Args:
            frame_pixel_size_m: object pixel size of the full frame, ``lambda z / (h d)`` (m).
        """
        if self.reduce == "crop":
            return frame_pixel_size_m * self.frame_shape[0] / self.input_shape[0], self.input_shape
        return frame_pixel_size_m, self.input_shape

    # ---- application ------------------------------------------------------------------------
    def check_frames(self, frames: np.ndarray) -> np.ndarray:
        """Validate frames and return them as (N, h, w); raises ValueError with the reason."""
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.ndim == 4 and frames.shape[1] == 1:
            frames = frames[:, 0]
        if frames.ndim != 3:
            raise ValueError(
                f"frames must be (N, h, w) or (h, w), got shape {frames.shape}; this model takes "
                f"{self.frame_shape[0]}x{self.frame_shape[1]} frames"
            )
        if frames.shape[0] == 0:
            raise ValueError("no frames given (batch of 0)")
        shape = frames.shape[-2:]
        if shape != self.frame_shape and shape != self.input_shape:
            raise ValueError(
                f"frames of {shape[0]}x{shape[1]} pixels do not fit this model: it was trained on "
                f"{self.frame_shape[0]}x{self.frame_shape[1]} frames ({self.reduce} to "
                f"{self.input_shape[0]}x{self.input_shape[1]})"
            )
        if not (
            np.issubdtype(frames.dtype, np.integer)
            or np.issubdtype(frames.dtype, np.floating)
            or frames.dtype == np.bool_
        ):
            raise ValueError(f"frames must hold real numbers, got dtype {frames.dtype}")
        return frames

    def reduce_frames(self, frames: np.ndarray) -> np.ndarray:
        """(N, h, w) -> (N, H, W) by crop or bin (no dtype change beyond binning's sum)."""
        h, w = frames.shape[-2:]
        big_h, big_w = self.input_shape
        if (h, w) == (big_h, big_w):
            return frames
        if self.reduce == "crop":
            top, left = h // 2 - big_h // 2, w // 2 - big_w // 2
            return frames[:, top : top + big_h, left : left + big_w]
        b = h // big_h
        acc = np.float32 if np.issubdtype(frames.dtype, np.floating) else np.int64
        return frames.reshape(frames.shape[0], big_h, b, big_w, b).sum(axis=(2, 4), dtype=acc)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Frames (N, h, w) or (h, w), counts -> (N, 1, H, W) float32 network input."""
        frames = self.check_frames(frames)
        x = np.array(self.reduce_frames(frames), dtype=np.float32, copy=True, order="C")
        if not np.all(np.isfinite(x)):
            raise ValueError("frames contain NaN or infinite values")
        if self.intensity_scale != 1.0:
            x *= np.float32(self.intensity_scale)
        if self.log:
            np.maximum(x, 0, out=x)
            np.log1p(x, out=x)
        if self.input_scale != 1.0:
            x *= np.float32(self.input_scale)
        return x[:, None]

    __call__ = apply

    @classmethod
    def fit(
        cls,
        frames: np.ndarray,
        input_shape: tuple[int, int],
        frame_shape: tuple[int, int] | None = None,
        *,
        reduce: str = "crop",
        intensity_scale: float = 1.0,
        log: bool = True,
    ) -> Preprocessing:
        """A preprocessing whose ``input_scale`` maps the median frame maximum to 1.

        Args:
            frames: (N, h, w) representative training frames (counts).
            input_shape: the network's (H, W).
            frame_shape: (h, w), default the frames' shape.
            reduce, intensity_scale, log: as the attributes.
        """
        frames = np.asarray(frames)
        frame_shape = tuple(frames.shape[-2:]) if frame_shape is None else frame_shape
        draft = cls(input_shape, frame_shape, reduce, intensity_scale, log, 1.0)
        sample = frames[:: max(1, frames.shape[0] // 256)]
        peaks = draft.apply(sample).reshape(sample.shape[0], -1).max(axis=1)
        typical = float(np.median(peaks))
        return cls(
            input_shape,
            frame_shape,
            reduce,
            intensity_scale,
            log,
            1.0 / typical if typical > 0 else 1.0,
        )

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["frame_shape"] = list(self.frame_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        known = {"input_shape", "frame_shape", "reduce", "intensity_scale", "log", "input_scale"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}")
        return cls(**d)
