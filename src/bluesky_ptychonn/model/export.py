"""ONNX export with a dynamic batch axis, checked against the PyTorch outputs.

`export_onnx` writes ``OUT.onnx`` and its sidecar ``OUT.json`` (the weights' sidecar with the
ONNX file and its sha256 in ``files``); the same JSON is stored in the graph's
``metadata_props`` under ``bluesky_ptychonn`` for tools that see only the ONNX file. The graph
has one input ``diffraction`` (N, 1, H, W) float32 and one output ``object`` (N, 2, H, W)
float32, N dynamic. After writing, the graph is run with ONNX Runtime (when installed) on a
few random batches and compared with the eager model; a difference above ``tolerance``
raises `ExportCheckError` and removes the files.

The exporter is ``torch.onnx.export``'s torch.export-based one (needs ``onnxscript``) when
available, else the TorchScript-based one.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .architectures import PtychoNNNet
from .checkpoint import Sidecar, load_model, sha256_file
from .inference_form import inference_form

log = logging.getLogger(__name__)

INPUT_NAME = "diffraction"
OUTPUT_NAME = "object"
DEFAULT_OPSET = 18
MAX_EXPORT_BATCH = 4096


class ExportCheckError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model's outputs."""


def _has_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _export(model: PtychoNNNet, path: Path, opset: int) -> str:
    h, w = model.config.input_shape
    example = (torch.zeros(2, 1, h, w),)
    if _has_onnxscript():
        batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                example,
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        return "torch.export"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=min(opset, 17),
            dynamo=False,
        )
    return "torchscript"


def check_onnx(
    onnx_path: str | os.PathLike[str],
    model: PtychoNNNet,
    *,
    batch_sizes: tuple[int, ...] = (1, 3),
    tolerance: float = 1e-3,
    seed: int = 0,
) -> float | None:
    """Largest |ONNX - PyTorch| over random inputs (rad or amplitude), None without onnxruntime.

    Raises:
        ExportCheckError: the difference exceeds ``tolerance`` or the output shape is wrong.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    h, w = model.config.input_shape
    worst = 0.0
    model = model.eval().to("cpu", torch.float32)
    for b in batch_sizes:
        x = rng.uniform(0, 1, (b, 1, h, w)).astype(np.float32)
        (got,) = session.run(None, {session.get_inputs()[0].name: x})
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        if got.shape != want.shape:
            raise ExportCheckError(f"ONNX output shape {got.shape}, PyTorch {want.shape}")
        worst = max(worst, float(np.max(np.abs(got - want))))
    if worst > tolerance:
        raise ExportCheckError(
            f"the ONNX graph differs from the PyTorch model by up to {worst:.3g} (> {tolerance})"
        )
    return worst


def export_onnx(
    model: PtychoNNNet | str | os.PathLike[str],
    out: str | os.PathLike[str],
    sidecar: Sidecar | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = 1e-3,
    factor_output: bool = True,
) -> Path:
    """Export a model to ``out`` (.onnx) with a dynamic batch axis and write its sidecar.

    Args:
        model: a `PtychoNNNet` (give ``sidecar``) or a model path (weights, sidecar, directory).
        out: the ONNX file to write; its sidecar is ``out`` with suffix ``.json``. When ``out``
            sits next to the weights with the same stem, the weights' sidecar gains the
            ``onnx`` entry instead.
        sidecar: the model's sidecar when ``model`` is a network.
        opset: ONNX opset.
        check: compare the graph with the eager model (needs onnxruntime; skipped without).
        tolerance: largest allowed absolute difference.
        factor_output: export `inference_form(model)`: the same function with the output
            convolution factored into a low-resolution 1x1 conv, the upsampling and a tap sum,
            which CPU engines run faster (exact to float rounding; checked like any export).

    Returns:
        The ONNX file's path.
    """
    if not isinstance(model, PtychoNNNet):
        model, sidecar = load_model(model)
    elif sidecar is None:
        raise ValueError("exporting a network needs its sidecar (architecture, preprocessing)")
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"the ONNX file name must end in .onnx, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).eval().to("cpu", torch.float32)
    graph_model = inference_form(model) if factor_output else model
    exporter = _export(graph_model, out, opset)
    import onnx

    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    meta = dict(sidecar.to_dict())
    meta.pop("files", None)
    entry = graph.metadata_props.add()
    entry.key, entry.value = "bluesky_ptychonn", json.dumps(meta)
    graph.producer_name = "bluesky-ptychonn"
    onnx.save(graph, str(out))
    max_diff = None
    if check:
        try:
            max_diff = check_onnx(out, model, tolerance=tolerance)
        except ExportCheckError:
            out.unlink(missing_ok=True)
            raise
    digest = sha256_file(out)
    side = Sidecar.from_dict(sidecar.to_dict())
    side_path = out.with_suffix(".json")
    if side_path.is_file():
        try:
            existing = Sidecar.read(side_path)
            if existing.files.get("weights"):
                side = existing  # the weights' own sidecar: add the graph to it
        except ValueError:
            pass
    export_facts: dict[str, Any] = {
        "path": out.name,
        "sha256": digest,
        "format": "onnx",
        "opset": str(opset),
        "exporter": exporter,
        "output_stage": "factored" if factor_output else "plain",
        "max_abs_diff_vs_torch": "" if max_diff is None else f"{max_diff:.3g}",
    }
    side.files = {
        k: v
        for k, v in side.files.items()
        if k in ("weights", "probe")
        and (out.parent / v["path"]).is_file()
        and side_path.parent == out.parent
    }
    side.files["onnx"] = export_facts
    side.created = ""
    side.write(side_path)
    log.info("exported %s (%s, max |diff| vs torch %s)", out, exporter, max_diff)
    return out
