"""The one interface every inference engine implements.

An engine holds a model (and its sidecar) ready to run on one backend and one device:

* ``run(x)``: (N, 1, H, W) float32 preprocessed input -> (N, 2, H, W) float32 output,
  channel 0 phase (rad), channel 1 amplitude. The input is validated first (shape, dtype,
  batch size) and a bad one raises `EngineInputError` (a ValueError) naming what was expected,
  never an error from deep inside a runtime.
* ``infer(frames)``: detector frames (N, h, w) or (h, w), counts -> the same output, through
  the sidecar's `Preprocessing`.

A model with the uncertainty head (`model.uncertainty`) returns (N, 3, H, W): channel 2 is
one standard deviation of the phase in radians, already multiplied by the sidecar's
calibration factor here, in `run`, so that every backend (PyTorch, ONNX Runtime fp32 and
int8, TensorRT) states the same calibrated field; ``has_uncertainty`` says which kind a model is.

Engines are not thread-safe: give each thread its own (they are cheap to create from a model
file once the backend's caches are warm).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model.checkpoint import Sidecar
from ..model.preprocessing import Preprocessing

MAX_BATCH = 64
"""Largest batch every engine accepts (TensorRT's optimisation profile spans 1..64)."""


class EngineInputError(ValueError):
    """An input that does not fit the engine (shape, dtype, batch size, non-finite values)."""


class BackendUnavailable(RuntimeError):
    """The requested backend, device or precision cannot run on this machine."""


@dataclass
class EngineInfo:
    """What an engine is, for logs, benchmarks and the endpoint's metadata.

    Attributes:
        backend: "pytorch", "onnxruntime" or "tensorrt".
        precision: "fp32", "fp16", "bf16" or "int8".
        device: "cpu", "cuda:0", ...
        model_version: the sidecar's version string.
        details: backend-specific facts (providers, threads, cache file, GPU name, ...).
    """

    backend: str
    precision: str
    device: str
    model_version: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}-{self.device}"


class InferenceEngine(ABC):
    """Base of all engines; subclasses implement `_run` on validated input."""

    backend: str = "abstract"

    def __init__(self, sidecar: Sidecar, precision: str, device: str, max_batch: int = MAX_BATCH):
        self.sidecar = sidecar
        self.preprocessing: Preprocessing = sidecar.preprocessing
        self.input_shape: tuple[int, int] = tuple(sidecar.architecture.input_shape)
        self.max_batch = int(max_batch)
        self.info = EngineInfo(self.backend, precision, device, sidecar.version)
        self.has_uncertainty: bool = bool(sidecar.architecture.uncertainty)
        self.uncertainty_scale: float = sidecar.uncertainty_scale

    # ---- public interface --------------------------------------------------------------------
    @property
    def precision(self) -> str:
        return self.info.precision

    @property
    def device(self) -> str:
        return self.info.device

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """Validate a preprocessed batch; returns it as C-contiguous float32 (N, 1, H, W)."""
        if not isinstance(x, np.ndarray):
            raise EngineInputError(f"input must be a numpy array, got {type(x).__name__}")
        h, w = self.input_shape
        if x.ndim != 4 or x.shape[1:] != (1, h, w):
            raise EngineInputError(
                f"input of shape {x.shape} does not fit the model: expected (N, 1, {h}, {w}) "
                "preprocessed patterns (use infer() for raw detector frames)"
            )
        if not 1 <= x.shape[0] <= self.max_batch:
            raise EngineInputError(
                f"batch of {x.shape[0]} frames: this engine takes 1 to {self.max_batch} at a time"
            )
        if x.dtype != np.float32:
            if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
                raise EngineInputError(f"input dtype {x.dtype} is not a real number type")
            x = x.astype(np.float32)
        return np.ascontiguousarray(x)

    def run(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) preprocessed float32 -> (N, 2, H, W) float32 phase (rad), amplitude
        (N, 3, H, W with the calibrated phase uncertainty, rad, for a model that has it).

        Batches larger than ``max_batch`` are refused; use `run_batched` for long stacks.
        """
        out = self._run(self.check_input(x))
        if self.has_uncertainty and self.uncertainty_scale != 1.0 and out.shape[1] > 2:
            out[:, 2] *= np.float32(self.uncertainty_scale)
        return out

    def run_batched(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """`run` over a stack of any length, ``batch_size`` (default ``max_batch``) at a time."""
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise EngineInputError(
                f"input must be an (N, 1, H, W) array, got {getattr(x, 'shape', x)}"
            )
        b = min(batch_size or self.max_batch, self.max_batch)
        return np.concatenate([self.run(x[s : s + b]) for s in range(0, x.shape[0], b)])

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """Detector frames (N, h, w) or (h, w), counts -> (N, 2, H, W) via the preprocessing."""
        try:
            x = self.preprocessing.apply(frames)
        except ValueError as error:
            raise EngineInputError(str(error)) from None
        return self.run_batched(x)

    __call__ = infer

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run once per batch size on zeros (allocations, autotuning, graph capture)."""
        h, w = self.input_shape
        for b in batch_sizes:
            self.run(np.zeros((min(b, self.max_batch), 1, h, w), dtype=np.float32))

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the engine holds (GPU memory, sessions)."""

    def __enter__(self) -> InferenceEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.name} model={self.info.model_version!r}>"

    # ---- subclasses ------------------------------------------------------------------------
    @abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Validated (N, 1, H, W) float32, C-contiguous -> (N, 2, H, W) float32."""
