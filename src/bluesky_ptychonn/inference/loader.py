"""`load_engine`: one call from a model file to the fastest engine this machine can run.

``backend="auto"`` picks, by availability: TensorRT (TensorRT 10 or 11 and a CUDA device) >
ONNX Runtime with its CUDA provider > ONNX Runtime on CPU > PyTorch (CUDA when present, else
CPU). When the chosen backend fails to build (an API change in a new TensorRT, a CUDA library
missing underneath, an engine that does not build), ``auto`` logs why and takes the next one;
the reasons are kept in ``engine.info.details["fallback"]``. A model file that fails its
checks is never retried elsewhere.
A model given only as weights is exported to ONNX on demand (into the cache, keyed by the
weights' sha256); a model given only as ONNX cannot run on the PyTorch backend. int8 graphs
are quantised on demand (calibrated on simulated patterns) and cached by the ONNX sha256.

Every file is checked against its sidecar's sha256 before use: a tampered file, a pickle or a
file without a sidecar is refused with `ModelFileError` before any runtime sees it.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.checkpoint import ModelFileError, ModelFiles, load_model, resolve, sha256_file
from .cache import cache_dir, slug
from .engine import MAX_BATCH, BackendUnavailable, InferenceEngine
from .onnx_engine import OnnxRuntimeEngine, available_providers, cuda_provider_usable
from .tensorrt_engine import TensorRTEngine, tensorrt_usable

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "pytorch")


@dataclass(frozen=True)
class BackendChoice:
    """A backend that can run here, on a device, with the precisions it offers."""

    backend: str
    device: str
    precisions: tuple[str, ...]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def available_backends() -> list[BackendChoice]:
    """Every (backend, device) this machine can run, fastest first, with their precisions."""
    choices = []
    if tensorrt_usable():
        choices.append(BackendChoice("tensorrt", "cuda", ("fp16", "fp32")))
    if cuda_provider_usable():
        choices.append(BackendChoice("onnxruntime", "cuda", ("fp32",)))
    if _cuda():
        choices.append(BackendChoice("pytorch", "cuda", ("fp16", "fp32")))
    if "CPUExecutionProvider" in available_providers():
        choices.append(BackendChoice("onnxruntime", "cpu", ("fp32", "int8")))
    choices.append(BackendChoice("pytorch", "cpu", ("fp32", "bf16")))
    return choices


EXPORT_FORM = "factored1"  # `model.inference_form` output stage, export version 1


def _onnx_for(files: ModelFiles) -> Path:
    """The model's verified ONNX graph, exported into the cache when it has only weights."""
    if "onnx" in files.sidecar.files:
        return files.verified("onnx")
    weights = files.verified("weights")
    from ..model.export import export_onnx

    # the graph's form is part of the name: a change of export form must not reuse old graphs
    out = cache_dir("onnx") / f"{sha256_file(weights)[:24]}-{EXPORT_FORM}.onnx"
    if out.is_file() and out.with_suffix(".json").is_file():
        try:
            return resolve(out).verified("onnx")
        except (ModelFileError, FileNotFoundError):
            log.warning("cached ONNX export %s is stale; exporting again", out)
    model, sidecar = load_model(files.sidecar_path)
    log.info("exporting %s to ONNX for inference (cached at %s)", weights.name, out)
    return export_onnx(model, out, sidecar)


def _int8_for(
    onnx_path: Path,
    files: ModelFiles,
    calibration: np.ndarray | None,
    float_before_output: int,
    float_input: int = 0,
) -> Path:
    import onnxruntime as ort

    from .quantize import calibration_inputs, quantize_onnx, shipped_int8

    if calibration is None:
        shipped = shipped_int8(files, onnx_path, float_before_output, float_input)
        if shipped is not None:
            log.info("int8 graph shipped with the model: %s", shipped.name)
            return shipped

    tag = "custom" if calibration is not None else "sim"
    name = f"{sha256_file(onnx_path)[:24]}-ort{slug(ort.__version__)}-{tag}-f{float_before_output}"
    if float_input:
        name += f"-i{float_input}"
    out = cache_dir("int8") / f"{name}.onnx"
    if out.is_file() and calibration is None:
        return out
    if calibration is None:
        inputs = calibration_inputs(files.sidecar)
    else:
        inputs = files.sidecar.preprocessing.apply(calibration)
    log.info("quantising %s to int8 (calibration: %d patterns)", onnx_path.name, len(inputs))
    return quantize_onnx(
        onnx_path,
        out,
        inputs,
        float_convs_before_output=float_before_output,
        float_input_convs=float_input,
    )


def _engine_class(backend: str) -> type:
    if backend == "tensorrt":
        return TensorRTEngine
    if backend == "onnxruntime":
        return OnnxRuntimeEngine
    from .torch_engine import TorchEngine

    return TorchEngine


def _options_for(backend: str, options: dict[str, object]) -> dict[str, object]:
    """The engine options that ``backend``'s engine class takes (auto may try several)."""
    accepted = inspect.signature(_engine_class(backend).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return dict(options)
    return {key: value for key, value in options.items() if key in accepted}


def _load_auto(
    path: str | os.PathLike[str], files: ModelFiles, device: str | None, **arguments: object
) -> InferenceEngine:
    """Try each backend this machine offers for ``device``, fastest first (see module doc)."""
    options = arguments.pop("options")
    precision = arguments.pop("precision")
    choices = [
        choice
        for choice in available_backends()
        if device is None or device.split(":")[0] == choice.device
    ]
    if "weights" not in files.sidecar.files:
        choices = [c for c in choices if c.backend != "pytorch"]
    if not choices:
        if device in (None, "cpu"):
            raise BackendUnavailable(
                f"{path} is an ONNX-only model and onnxruntime is not installed"
            )
        raise BackendUnavailable(f"no backend can run on device {device!r}")
    failures: list[str] = []
    for index, choice in enumerate(choices):
        wanted = precision if precision in choice.precisions else None
        try:
            engine = load_engine(
                path,
                choice.backend,
                precision=wanted,
                device=device or choice.device,
                **arguments,
                **_options_for(choice.backend, options),
            )
        except (ModelFileError, FileNotFoundError):
            raise  # the model itself is at fault: no other backend will do better
        except Exception as error:  # noqa: BLE001 - any engine failure: try the next backend
            reason = f"{choice.backend} on {choice.device}: {type(error).__name__}: {error}"
            if index == len(choices) - 1:
                raise
            failures.append(reason)
            log.warning("backend auto: %s; falling back to %s on %s", reason,
                        choices[index + 1].backend, choices[index + 1].device)  # fmt: skip
            continue
        if precision is not None and wanted is None:
            log.warning("backend auto: %s on %s runs %s, not %s", choice.backend, choice.device,
                        engine.info.precision, precision)  # fmt: skip
        if failures:
            engine.info.details["fallback"] = failures
        return engine
    raise AssertionError("unreachable")  # pragma: no cover


def load_engine(
    path: str | os.PathLike[str],
    backend: str = "auto",
    *,
    precision: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    max_batch: int = MAX_BATCH,
    calibration: np.ndarray | None = None,
    int8_float_convs: int = 0,
    int8_float_input_convs: int = 3,
    spin: bool = True,
    **options: object,
) -> InferenceEngine:
    """An inference engine for a model file (weights, ONNX, sidecar, or model directory).

    Args:
        path: the model.
        backend: "auto", "tensorrt", "onnxruntime" or "pytorch".
        precision: "fp32", "fp16" (CUDA), "bf16" (PyTorch CPU) or "int8" (ONNX Runtime CPU);
            default fp16 for TensorRT and PyTorch on CUDA, fp32 otherwise.
        device: "cpu", "cuda" or "cuda:N"; default the backend's natural device.
        threads: CPU threads (ONNX Runtime intra-op threads).
        max_batch: largest batch the engine accepts (TensorRT's profile maximum).
        calibration: (N, h, w) detector frames for int8 calibration, instead of simulated ones.
        spin: ONNX Runtime worker threads spin between calls (its default; lowest latency
            when nothing else needs the cores). Ignored by the other backends.
        int8_float_convs: how many convs before each output conv an int8 graph keeps in float
            besides the output convs themselves (2: the decoder's last up block; more
            accurate, slower).
        int8_float_input_convs: how many of the first convs an int8 graph keeps in float
            (default 3: the first block and the next conv, whose 8-bit activations carry most
            of a trained model's int8 error: phase SSIM vs fp32 0.932 -> 0.982 on a trained
            edge model, 0.874 -> 0.989 on the demo model, for about 8 % of the int8 speed;
            0: everything but the output stage in int8; docs/benchmarks.md).
        **options: passed to the engine class (e.g. ``channels_last``, ``cuda_graphs``,
            ``compile`` for PyTorch; ``opt_batch``, ``cache`` for TensorRT; ``workers`` for
            ONNX Runtime on CPU).

    Raises:
        ModelFileError: missing sidecar, sha256 mismatch, pickle, unloadable graph.
        BackendUnavailable: the backend, device or precision cannot run here.
        FileNotFoundError: the path does not exist.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not 1 <= max_batch <= 4096:
        raise ValueError(f"max_batch must lie in 1..4096, got {max_batch}")
    files = resolve(path)
    if backend == "auto":
        if precision in ("int8",):
            backend, device = "onnxruntime", device or "cpu"
        elif precision == "bf16":
            backend, device = "pytorch", device or "cpu"
        else:
            return _load_auto(
                path, files, device, precision=precision, threads=threads,
                max_batch=max_batch, calibration=calibration,
                int8_float_convs=int8_float_convs, int8_float_input_convs=int8_float_input_convs,
                spin=spin, options=options,
            )  # fmt: skip
    if backend == "tensorrt":
        onnx_path = _onnx_for(files)
        return TensorRTEngine(
            onnx_path,
            files.sidecar,
            device=device or "cuda",
            precision=precision or "fp16",
            max_batch=max_batch,
            **options,
        )
    if backend == "onnxruntime":
        device = device or "cpu"
        precision = precision or "fp32"
        if precision not in ("fp32", "int8"):
            raise BackendUnavailable(
                f"ONNX Runtime engine precisions: fp32, int8 (not {precision})"
            )
        onnx_path = _onnx_for(files)
        if precision == "int8":
            if device != "cpu":
                raise BackendUnavailable("int8 graphs run on the CPU provider")
            onnx_path = _int8_for(
                onnx_path, files, calibration, int8_float_convs, int8_float_input_convs
            )
        return OnnxRuntimeEngine(
            onnx_path,
            files.sidecar,
            device=device,
            precision=precision,
            threads=threads,
            max_batch=max_batch,
            spin=spin,
            **options,
        )
    # pytorch
    from .torch_engine import TorchEngine

    if "weights" not in files.sidecar.files:
        raise BackendUnavailable(
            f"{path} has no weights file (ONNX only): the PyTorch backend needs the safetensors"
        )
    device = device or ("cuda" if _cuda() else "cpu")
    if precision is None:
        precision = "fp16" if device.startswith("cuda") else "fp32"
    model, sidecar = load_model(files.sidecar_path)
    return TorchEngine(
        model, sidecar, device=device, precision=precision, max_batch=max_batch, **options
    )
