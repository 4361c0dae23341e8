"""int8 static quantisation of an exported model, calibrated on simulated diffraction patterns.

ONNX Runtime's static quantiser turns the fp32 graph into QLinearConv operators (QOperator
format; per-channel symmetric int8 weights, uint8 activations) whose scales come from running
the fp32 graph on calibration inputs. The calibration inputs are simulated patterns
(`model.data.simulate_training_set`) of several sample kinds, prepared with the model's own
preprocessing, so the activation ranges are those of real use.

What stays in float (measured choices, see docs/benchmarks.md): the bilinear ``Resize``
operators (ONNX Runtime's uint8 Resize is slower than the float one plus the conversions), the
output convolution and everything after it (the tanh / sigmoid output stage: an 8-bit
pre-activation quantises the phase to ~0.02 rad steps, which cost most of the accuracy).
Optionally the first convolutions too (``float_input_convs``; `inference.load_engine` keeps
three by default): on a trained model the 8-bit activations of the first block, which carry
the diffraction pattern's dynamic range, are where most of the remaining error comes from
(docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..model.checkpoint import ModelFiles, Sidecar
from ..model.data import simulate_training_set
from .engine import BackendUnavailable

log = logging.getLogger(__name__)

CALIBRATION_KINDS = ("etched", "siemens-star", "letters")
KEEP_FLOAT_OPS = ("Resize",)


def calibration_inputs(sidecar: Sidecar, n: int = 96, seed: int = 1234) -> np.ndarray:
    """(n, 1, H, W) float32 preprocessed simulated patterns for calibration.

    The beamline settings come from the sidecar's training provenance when it has them
    (detector, defocus, photons), else the simulator's defaults for training data.
    """
    prep = sidecar.preprocessing
    beamline = {}
    data = sidecar.training.get("data", {}) if isinstance(sidecar.training, dict) else {}
    if isinstance(data, dict):
        beamline = data.get("beamline") or {}
    options = {
        "detector": beamline.get("detector", "eiger"),
        "defocus_m": float(beamline.get("defocus_m", 250e-6)),
        "photons": float(beamline.get("photons", 1e6)),
    }
    per_kind = max(1, n // len(CALIBRATION_KINDS))
    frames = []
    for i, kind in enumerate(CALIBRATION_KINDS):
        ts = simulate_training_set(
            per_kind, prep, sample=kind, n_samples=1, seed=seed + i, **options
        )
        frames.append(ts.frames)
    return prep.apply(np.concatenate(frames))


def _float_nodes(
    model_path: Path, float_convs_before_output: int = 0, float_input_convs: int = 0
) -> list[str]:
    """Names of the nodes kept in float.

    The Resize ops; each output conv (a Conv with no other Conv downstream: the phase /
    amplitude heads, one per decoder) and everything downstream of it; per head, the
    ``float_convs_before_output`` convs that feed it (the decoder's last up block); and the
    first ``float_input_convs`` convs of the graph (in its topological order: the encoder's
    first block).
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    nodes = list(graph.node)
    weights = {init.name: init.dims for init in graph.initializer}
    producer = {out: node for node in nodes for out in node.output}
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = [n for n in nodes if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in weights]

    def feeds_a_conv(node) -> bool:
        stack, seen = [node], set()
        while stack:
            current = stack.pop()
            for out in current.output:
                for consumer in consumers.get(out, []):
                    if consumer.op_type == "Conv":
                        return True
                    if consumer.name not in seen:
                        seen.add(consumer.name)
                        stack.append(consumer)
        return False

    # the output convs: no other conv downstream (the plain 3x3 heads, or the channel-mixing
    # 1x1 conv of a factored output stage, `model.inference_form`)
    heads = [n for n in convs if not feeds_a_conv(n)]
    keep = {n.name for n in nodes if n.op_type in KEEP_FLOAT_OPS}
    stack, seen = list(heads), set()
    while stack:  # the heads and everything after them
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        for out in node.output:
            stack.extend(consumers.get(out, []))
    keep |= seen
    for head in heads:  # the convs feeding each head
        node, found = head, 0
        while found < float_convs_before_output:
            node = producer.get(node.input[0])
            if node is None:
                break
            if node.op_type == "Conv":
                keep.add(node.name)
                found += 1
    keep |= {n.name for n in convs[: max(0, float_input_convs)]}
    return sorted(keep)


def quantize_onnx(
    fp32_onnx: str | os.PathLike[str],
    out: str | os.PathLike[str],
    calibration: np.ndarray,
    *,
    float_convs_before_output: int = 0,
    float_input_convs: int = 0,
    method: str = "minmax",
) -> Path:
    """Write an int8 (QOperator) version of ``fp32_onnx`` calibrated on ``calibration``.

    Args:
        fp32_onnx: the exported graph.
        out: the quantised graph to write.
        calibration: (N, 1, H, W) float32 preprocessed inputs (e.g. `calibration_inputs`).
        float_convs_before_output: how many convolutions before each output conv also stay
            in float (2: the decoder's whole last up block; more accurate, slower). The output
            convs themselves always stay in float: their 8-bit output would quantise the phase
            to ~0.02 rad steps, which cost most of the accuracy in our measurements.
        float_input_convs: how many of the first convolutions stay in float (3 on the edge
            model: the first block and the next conv, whose input is the first quantised
            activation; the largest accuracy gain per float conv on a trained model).
        method: activation range calibration, "minmax", "percentile" (99.999 %) or
            "entropy".
    """
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise BackendUnavailable("int8 quantisation needs onnxruntime and onnx") from None
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or calibration.shape[0] < 1:
        raise ValueError(f"calibration inputs must be (N, 1, H, W), got {calibration.shape}")

    import onnx

    input_name = onnx.load(str(fp32_onnx)).graph.input[0].name
    batch = 16

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                [
                    {input_name: calibration[s : s + batch]}
                    for s in range(0, len(calibration), batch)
                ]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bpnn-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        keep = _float_nodes(pre, float_convs_before_output, float_input_convs)
        methods = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }
        if method not in methods:
            raise ValueError(f"calibration method must be one of {sorted(methods)}")
        partial = out.with_suffix(".partial.onnx")
        quantize_static(
            str(pre),
            str(partial),
            _Reader(),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=methods[method],
            nodes_to_exclude=keep,
            extra_options={"CalibPercentile": 99.999},
        )
        partial.replace(out)
    log.info("quantised %s -> %s (%d nodes kept in float)", fp32_onnx.name, out, len(keep))
    return out


INT8_ROLE = "onnx-int8"
"""Sidecar role of an int8 graph shipped with a model (made at promotion, `attach_int8`)."""


def attach_int8(
    model_dir: str | os.PathLike[str],
    calibration_frames: np.ndarray,
    *,
    float_convs_before_output: int = 0,
    float_input_convs: int = 3,
    calibration_note: str = "",
) -> Path:
    """Quantise a model's ONNX graph on measured frames and ship it in the model's folder.

    The continual-learning loop calls this when it promotes a model to an endpoint that runs
    int8: the endpoint then loads the shipped graph (`shipped_int8`) instead of quantising on
    simulated patterns during the hot swap, and the calibration is the beamline's own data.

    Args:
        model_dir: a model folder (or sidecar) with a verified ``onnx`` file.
        calibration_frames: (N, h, w) detector frames (counts), prepared with the model's own
            preprocessing before calibration.
        float_convs_before_output, float_input_convs: as `quantize_onnx` (the defaults are
            `inference.load_engine`'s, so the endpoint's default int8 engine uses the graph).
        calibration_note: where the frames came from (recorded in the sidecar).

    Returns:
        The int8 graph, registered in the sidecar as role `INT8_ROLE` with its sha256, the
        sha256 of the fp32 graph it was made from and the float settings.
    """
    from ..model.checkpoint import resolve, sha256_file

    files = resolve(model_dir)
    onnx_path = files.verified("onnx")
    frames = np.asarray(calibration_frames)
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"calibration frames must be (N, h, w), got {frames.shape}")
    inputs = files.sidecar.preprocessing.apply(frames)
    out = onnx_path.with_name(onnx_path.stem + ".int8.onnx")
    quantize_onnx(
        onnx_path,
        out,
        inputs,
        float_convs_before_output=float_convs_before_output,
        float_input_convs=float_input_convs,
    )
    sidecar = Sidecar.read(files.sidecar_path)
    sidecar.files[INT8_ROLE] = {
        "path": out.name,
        "sha256": sha256_file(out),
        "format": "onnx",
        "quantised_from": sha256_file(onnx_path),
        "float_convs_before_output": str(int(float_convs_before_output)),
        "float_input_convs": str(int(float_input_convs)),
        "calibration": calibration_note or f"{frames.shape[0]} measured frames",
    }
    sidecar.write(files.sidecar_path)
    return out


def shipped_int8(
    files: ModelFiles, onnx_path: Path, float_convs_before_output: int, float_input_convs: int
) -> Path | None:
    """The model's shipped int8 graph when it was made from ``onnx_path`` with these float
    settings (sha256 verified), else None (the caller quantises on simulated patterns)."""
    from ..model.checkpoint import sha256_file

    entry = files.sidecar.files.get(INT8_ROLE)
    if not entry:
        return None
    if (
        entry.get("quantised_from") != sha256_file(onnx_path)
        or entry.get("float_convs_before_output") != str(int(float_convs_before_output))
        or entry.get("float_input_convs") != str(int(float_input_convs))
    ):
        log.info("the shipped int8 graph does not match the engine's settings: quantising anew")
        return None
    return files.verified(INT8_ROLE)
