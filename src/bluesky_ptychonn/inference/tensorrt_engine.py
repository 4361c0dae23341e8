"""TensorRT engine (TensorRT 10 and 11 APIs): a serialized engine built from the ONNX graph, cached.

Build: ``trt.Builder`` -> ``create_network(0)`` (explicit batch, the only mode since TensorRT
10) -> ``trt.OnnxParser.parse`` -> a builder config with a workspace limit and one
``IOptimizationProfile`` for the input spanning batch 1 to
``max_batch`` (optimised for ``opt_batch``) -> ``build_serialized_network``. The plan is written
to the cache (`cache.cache_dir("tensorrt")`) under a name made of the ONNX file's sha256, the
GPU's name and compute capability, the TensorRT version, the precision and the batch range,
and read back from there next time (building takes tens of seconds; loading, milliseconds).

fp16, by TensorRT version (`fp16_strategy`): TensorRT 10 parses the float32 graph and sets
``BuilderFlag.FP16`` (weak typing: TensorRT picks fp16 kernels where it may). TensorRT 11
removed that flag and builds every network strongly typed, so it parses a float16 copy of the
graph (`fp16_graph.fp16_onnx`: float16 weights and activations, float32 input and output) and
the precision is the graph's. Whatever fails here raises, and ``load_engine(backend="auto")``
then serves with ONNX Runtime and logs why.

Run: ``trt.Runtime.deserialize_cuda_engine`` -> ``create_execution_context``; input and
output live in CUDA buffers allocated once for ``max_batch`` (torch tensors, so no pycuda is
needed); per call ``set_input_shape`` for the batch, ``set_tensor_address`` for both tensors,
``execute_async_v3`` on a private CUDA stream, then one synchronisation. Inputs and outputs stay
float32 at the boundary; with fp16, TensorRT converts inside the engine.

Selected only where ``import tensorrt`` works and torch sees a CUDA device.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..model.checkpoint import ModelFileError, Sidecar, sha256_file
from .cache import cache_dir, slug
from .engine import MAX_BATCH, BackendUnavailable, InferenceEngine

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 1 << 30


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or None when it cannot be imported."""
    try:
        import tensorrt as trt
    except Exception:  # ImportError, or a broken CUDA library underneath
        return None
    return str(trt.__version__)


def tensorrt_usable() -> bool:
    """True when TensorRT 10+ imports and a CUDA device is visible."""
    version = tensorrt_version()
    if version is None or int(version.split(".")[0]) < 10:
        return False
    import torch

    return torch.cuda.is_available()


def fp16_strategy(trt: object) -> str:
    """How this TensorRT makes an fp16 engine: "builder-flag" (10) or "typed-graph" (11+)."""
    flags = getattr(trt, "BuilderFlag", None)
    return "builder-flag" if flags is not None and hasattr(flags, "FP16") else "typed-graph"


def _plan_name(onnx_sha: str, device_index: int, precision: str, max_batch: int, opt: int) -> str:
    import tensorrt as trt
    import torch

    props = torch.cuda.get_device_properties(device_index)
    gpu = f"{slug(props.name)}-sm{props.major}{props.minor}"
    return f"{onnx_sha[:16]}-{gpu}-trt{slug(trt.__version__)}-{precision}-b1-{opt}-{max_batch}.plan"


def build_serialized_engine(
    onnx_path: str | os.PathLike[str],
    input_shape: tuple[int, int],
    *,
    precision: str = "fp16",
    max_batch: int = MAX_BATCH,
    opt_batch: int = 32,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> bytes:
    """Build a TensorRT plan from an ONNX file (TensorRT 10 or 11 API); returns its bytes.

    Raises:
        ModelFileError: the ONNX parser rejects the graph.
        BackendUnavailable: TensorRT is missing or the build fails.
    """
    try:
        import tensorrt as trt
    except Exception:
        raise BackendUnavailable(
            "TensorRT is not installed (pip install 'bluesky-ptychonn[tensorrt]')"
        ) from None
    if precision not in ("fp16", "fp32"):
        raise BackendUnavailable(
            f"TensorRT engine precision must be fp16 or fp32, not {precision!r}"
        )
    strategy = fp16_strategy(trt)
    source = Path(onnx_path)
    if precision == "fp16" and strategy == "typed-graph":
        from .fp16_graph import fp16_onnx

        source = fp16_onnx(source)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 11: strongly typed whatever the flags
    parser = trt.OnnxParser(network, logger)
    data = source.read_bytes()
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"TensorRT cannot parse {onnx_path}: {errors}")
    if network.num_inputs != 1:
        raise ModelFileError(f"{onnx_path} has {network.num_inputs} inputs; expected one")
    input_name = network.get_input(0).name
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16" and strategy == "builder-flag":
        config.set_flag(trt.BuilderFlag.FP16)
    h, w = input_shape
    profile = builder.create_optimization_profile()
    opt = max(1, min(opt_batch, max_batch))
    profile.set_shape(input_name, (1, 1, h, w), (opt, 1, h, w), (max_batch, 1, h, w))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(plan)


class TensorRTEngine(InferenceEngine):
    """Run a model's ONNX graph as a TensorRT engine on one GPU.

    Args:
        onnx_path: the exported graph (its sha256 keys the plan cache).
        sidecar: the model's sidecar.
        device: "cuda" or "cuda:N".
        precision: "fp16" (default) or "fp32".
        max_batch: the optimisation profile's largest batch (at most 64 by default).
        opt_batch: the batch TensorRT tunes its kernels for.
        cache: folder for plans (default `cache.cache_dir("tensorrt")`); None-like "" disables.
        workspace_bytes: TensorRT's scratch memory limit.
    """

    backend = "tensorrt"

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        sidecar: Sidecar,
        *,
        device: str = "cuda",
        precision: str = "fp16",
        max_batch: int = MAX_BATCH,
        opt_batch: int = 32,
        cache: str | os.PathLike[str] | None = None,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    ):
        if not tensorrt_usable():
            raise BackendUnavailable(
                "TensorRT 10 or newer and a CUDA device are needed for this engine"
            )
        import tensorrt as trt
        import torch

        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        super().__init__(sidecar, precision, f"cuda:{index}", max_batch)
        self.onnx_path = Path(onnx_path)
        h, w = self.input_shape
        self._torch_device = torch.device("cuda", index)
        with torch.cuda.device(index):
            plan, plan_path = self._plan(precision, max_batch, opt_batch, cache, workspace_bytes)
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None and plan_path is not None:
                log.warning("cached TensorRT plan %s did not load; rebuilding", plan_path)
                plan_path.unlink(missing_ok=True)
                plan, plan_path = self._plan(
                    precision, max_batch, opt_batch, cache, workspace_bytes
                )
                self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise BackendUnavailable("TensorRT could not deserialize the engine it built")
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [
                n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT
            ]
            if len(inputs) != 1 or len(outputs) != 1:
                raise ModelFileError(f"{onnx_path}: expected one input and one output, got {names}")
            self._input_name, self._output_name = inputs[0], outputs[0]
            for name in names:
                if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                    raise ModelFileError(f"{onnx_path}: tensor {name!r} is not float32")
            self._input = torch.empty(
                (max_batch, 1, h, w), dtype=torch.float32, device=self._torch_device
            )
            channels = 3 if self.has_uncertainty else 2  # + the phase uncertainty
            self._output = torch.empty(
                (max_batch, channels, h, w), dtype=torch.float32, device=self._torch_device
            )
            self._host_in = torch.empty((max_batch, 1, h, w), dtype=torch.float32).pin_memory()
            self._host_out = torch.empty(
                (max_batch, channels, h, w), dtype=torch.float32
            ).pin_memory()
            self._stream = torch.cuda.Stream(self._torch_device)
            self._context.set_tensor_address(self._input_name, self._input.data_ptr())
            self._context.set_tensor_address(self._output_name, self._output.data_ptr())
        self.info.details.update(
            {
                "tensorrt": trt.__version__,
                "fp16": fp16_strategy(trt) if precision == "fp16" else None,
                "gpu": torch.cuda.get_device_name(index),
                "plan": None if plan_path is None else str(plan_path),
                "batch_profile": [1, opt_batch, max_batch],
            }
        )

    def _plan(
        self,
        precision: str,
        max_batch: int,
        opt_batch: int,
        cache: str | os.PathLike[str] | None,
        workspace_bytes: int,
    ) -> tuple[bytes, Path | None]:
        import torch

        plan_path = None
        if cache != "":
            folder = Path(cache) if cache else cache_dir("tensorrt")
            folder.mkdir(parents=True, exist_ok=True)
            name = _plan_name(
                sha256_file(self.onnx_path),
                torch.cuda.current_device(),
                precision,
                max_batch,
                opt_batch,
            )
            plan_path = folder / name
            if plan_path.is_file():
                return plan_path.read_bytes(), plan_path
        plan = build_serialized_engine(
            self.onnx_path,
            self.input_shape,
            precision=precision,
            max_batch=max_batch,
            opt_batch=opt_batch,
            workspace_bytes=workspace_bytes,
        )
        if plan_path is not None:
            tmp = plan_path.with_suffix(".tmp")
            tmp.write_bytes(plan)
            tmp.replace(plan_path)
        return plan, plan_path

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        n = x.shape[0]
        h, w = self.input_shape
        with torch.cuda.device(self._torch_device), torch.cuda.stream(self._stream):
            self._host_in[:n].copy_(torch.from_numpy(x))
            self._input[:n].copy_(self._host_in[:n], non_blocking=True)
            self._context.set_input_shape(self._input_name, (n, 1, h, w))
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            self._host_out[:n].copy_(self._output[:n], non_blocking=True)
            self._stream.synchronize()
        return self._host_out[:n].numpy().copy()

    def close(self) -> None:
        self._context = None
        self._engine = None
