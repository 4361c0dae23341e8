"""Inference engines behind one interface, chosen by `load_engine`.

Holds the engine interface (``engine``: ``run`` on preprocessed batches, ``infer`` on raw
frames, input validation), the engines (``torch_engine``: PyTorch eager fp32 reference,
bf16 on CPU, fp16 + CUDA graphs on GPU; ``onnx_engine``: ONNX Runtime on CPU or CUDA;
``tensorrt_engine``: TensorRT 10 with cached plans), int8 static quantisation
(``quantize``), the on-disk cache of derived files (``cache``) and ``loader`` (`load_engine`,
`available_backends`), and ``offline``: the stitched network image of a recorded scan
(``bluesky-ptychonn infer``). The endpoint server that batches frames from the wire comes later, on
top of this. May import ``model`` (and what it imports); never ``stream``, ``devices`` or
anything that knows bluesky. onnxruntime and tensorrt are optional and imported lazily.
"""

from .engine import MAX_BATCH, BackendUnavailable, EngineInfo, EngineInputError, InferenceEngine
from .loader import BACKENDS, BackendChoice, available_backends, load_engine

__all__ = [
    "BACKENDS",
    "MAX_BATCH",
    "BackendChoice",
    "BackendUnavailable",
    "EngineInfo",
    "EngineInputError",
    "InferenceEngine",
    "available_backends",
    "load_engine",
]
