"""An fp16 copy of an ONNX graph for strongly typed TensorRT builds (TensorRT 11).

TensorRT 11 removed ``BuilderFlag.FP16``: every network is strongly typed, so the precision is
the graph's own. NVIDIA's replacement is to cast the graph itself (ModelOpt AutoCast); here
ONNX Runtime's converter (`onnxruntime.transformers.float16`, no extra dependency) turns the
weights and activations to float16 while the graph's input and output stay float32
(``keep_io_types``: casts at the boundary), so the engine's buffers and callers are unchanged.
The copy is cached by the source graph's sha256 (`cache.cache_dir("onnx-fp16")`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..model.checkpoint import sha256_file
from .cache import cache_dir

log = logging.getLogger(__name__)

CONVERTER_FORM = "ortfp16-io32-v1"  # part of the cached name: a change makes a new copy


def fp16_onnx(onnx_path: str | os.PathLike[str], folder: Path | None = None) -> Path:
    """The float16 copy of ``onnx_path`` (float32 input and output), made once and cached."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx_path = Path(onnx_path)
    folder = folder or cache_dir("onnx-fp16")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{sha256_file(onnx_path)[:24]}-{CONVERTER_FORM}.onnx"
    if out.is_file():
        return out
    model = onnx.load(str(onnx_path))
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    tmp = out.with_suffix(".tmp")
    onnx.save(converted, str(tmp))
    tmp.replace(out)
    log.info("float16 graph of %s for strongly typed TensorRT: %s", onnx_path.name, out.name)
    return out
