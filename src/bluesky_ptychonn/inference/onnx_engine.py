"""ONNX Runtime engine: CPU (fp32, or int8 after static quantisation) and the CUDA provider.

The session runs with all graph optimisations (conv + activation fusion, NCHWc layouts on
x86), ``intra_op_num_threads`` threads (default: the cores this process may use) and
sequential execution. With ``workers`` > 1 on CPU the engine holds that many sessions, each
with ``threads // workers`` threads, and splits every batch between them (data parallel over
the cores): small convolutions scale badly over intra-op threads, so two one-thread sessions
on two halves of a batch beat one two-thread session on all of it (measured:
docs/benchmarks.md). An int8 model comes from `quantize.quantize_onnx` (QOperator format,
per-channel int8 weights, uint8 activations calibrated on simulated patterns) and runs through
the same engine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..model.checkpoint import Sidecar
from .engine import MAX_BATCH, BackendUnavailable, InferenceEngine


def available_providers() -> list[str]:
    """ONNX Runtime execution providers of this installation ([] without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def cuda_provider_usable() -> bool:
    """True when ONNX Runtime has its CUDA provider *and* a CUDA device is visible."""
    if "CUDAExecutionProvider" not in available_providers():
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def default_threads() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class OnnxRuntimeEngine(InferenceEngine):
    """Run an ONNX graph of a PtychoNN model with ONNX Runtime.

    Args:
        onnx_path: the graph to run (fp32 export, or its int8 quantisation).
        sidecar: the model's sidecar (preprocessing, version).
        device: "cpu" or "cuda[:N]" (the CUDA execution provider).
        precision: label of the graph's arithmetic ("fp32" or "int8"); it does not convert.
        threads: intra-op threads on CPU (default: all cores this process may use).
        workers: sessions that split each batch between them on CPU (threads are divided
            among them); 1 (default) is one session with all threads. A batch with fewer
            frames than workers runs on one more session that has all the threads.
        spin: let the worker threads spin between calls (ONNX Runtime's default).
        micro_batch: each session runs its share of a batch in pieces of this many frames
            (None: in one piece). Small pieces keep the activations in the CPU caches: with
            int8 a 128x128 edge model ran ~10 % faster in pieces of 2 than in pieces of 32.
        max_batch: largest batch accepted.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        sidecar: Sidecar,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        max_batch: int = MAX_BATCH,
        spin: bool = True,
        workers: int = 1,
        micro_batch: int | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)"
            ) from None
        if precision not in ("fp32", "int8"):
            raise BackendUnavailable(
                f"ONNX Runtime engine runs fp32 or int8 graphs, not {precision!r}"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        threads = threads or default_threads()
        workers = int(workers)
        if workers < 1 or (device.startswith("cuda") and workers != 1):
            raise BackendUnavailable(f"workers must be 1 on CUDA and >= 1 on CPU, got {workers}")
        options.intra_op_num_threads = max(1, int(threads) // workers)
        if micro_batch is not None and int(micro_batch) < 1:
            raise BackendUnavailable(f"micro_batch must be >= 1, got {micro_batch}")
        self._micro_batch = None if micro_batch is None else int(micro_batch)
        options.inter_op_num_threads = 1
        # spinning workers answer the next call sooner but burn CPU that other threads need
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if device.startswith("cuda"):
            if not cuda_provider_usable():
                raise BackendUnavailable(
                    "ONNX Runtime's CUDA provider is not available (needs onnxruntime-gpu and a "
                    "CUDA device)"
                )
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
            device = f"cuda:{index}"
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise BackendUnavailable(f"ONNX Runtime engine runs on cpu or cuda, not {device!r}")
        super().__init__(sidecar, precision, device, max_batch)
        self.onnx_path = Path(onnx_path)
        try:
            self._sessions = [
                ort.InferenceSession(str(self.onnx_path), options, providers=providers)
                for _ in range(workers)
            ]
            # a batch too small to give every worker a frame runs on all the threads at once
            self._whole = self._sessions[0]
            if workers > 1:
                options.intra_op_num_threads = int(threads)
                self._whole = ort.InferenceSession(
                    str(self.onnx_path), options, providers=providers
                )
        except Exception as error:  # ORT raises its own exception types for bad files
            from ..model.checkpoint import ModelFileError

            raise ModelFileError(
                f"ONNX Runtime could not load {self.onnx_path}: {str(error).splitlines()[0]}"
            ) from None
        inputs = self._sessions[0].get_inputs()
        if len(inputs) != 1:
            raise BackendUnavailable(f"{self.onnx_path} has {len(inputs)} inputs; expected one")
        self._input_name = inputs[0].name
        self._output_name = self._sessions[0].get_outputs()[0].name
        shape = inputs[0].shape
        if len(shape) != 4 or tuple(shape[1:]) != (1, *self.input_shape):
            from ..model.checkpoint import ModelFileError

            raise ModelFileError(
                f"{self.onnx_path} takes input {shape}, but its sidecar says (N, 1, "
                f"{self.input_shape[0]}, {self.input_shape[1]})"
            )
        self.info.details.update(
            {
                "providers": self._sessions[0].get_providers(),
                "threads": int(threads),
                "spin": bool(spin),
                "workers": workers,
                "micro_batch": self._micro_batch,
                "onnxruntime": ort.__version__,
                "graph": self.onnx_path.name,
            }
        )

        self._pool = None
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            # session.run releases the GIL: the sessions really run side by side
            self._pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="ort-worker")

    def _run_one(self, session, x: np.ndarray) -> np.ndarray:
        step = self._micro_batch or x.shape[0]
        pieces = [
            session.run([self._output_name], {self._input_name: x[s : s + step]})[0]
            for s in range(0, x.shape[0], step)
        ]
        out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return np.asarray(out, dtype=np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        workers = len(self._sessions)
        if workers == 1 or x.shape[0] < workers:
            return self._run_one(self._whole, x)
        chunks = np.array_split(x, workers)
        futures = [
            self._pool.submit(self._run_one, session, np.ascontiguousarray(chunk))
            for session, chunk in zip(self._sessions[1:], chunks[1:], strict=True)
        ]
        first = self._run_one(self._sessions[0], np.ascontiguousarray(chunks[0]))
        return np.concatenate([first] + [f.result() for f in futures])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._sessions = []
        self._whole = None
