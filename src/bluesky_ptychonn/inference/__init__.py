"""Inference engines behind one interface, chosen by `load_engine`.

Holds the engine interface (``engine``: ``run`` on preprocessed batches, ``infer`` on raw
frames, input validation), the engines (``torch_engine``: PyTorch eager fp32 reference,
bf16 on CPU, fp16 + CUDA graphs on GPU; ``onnx_engine``: ONNX Runtime on CPU or CUDA;
``tensorrt_engine``: TensorRT 10 or 11 with cached plans, ``fp16_graph`` the float16 graph
that TensorRT 11's strongly typed builds need), int8 static quantisation (``quantize``), the
on-disk cache of derived files (``cache``) and ``loader`` (`load_engine`,
`available_backends`, with ``auto``'s fallback). On top of them: the endpoint server that
batches frames from the wire (``server``, ``process``), ``offline``: the stitched network
image of a recorded scan (``bluesky-ptychonn infer``), and the server's guard (``security``: CURVE,
allow-lists, refused traffic, model digests). May import ``model`` (and what it imports) and,
for the server, ``stream``; never ``devices`` or anything that knows bluesky. onnxruntime and
tensorrt are optional and imported lazily.
"""

from ..lazy import lazy_exports

_LAZY = {
    "MAX_BATCH": ".engine",
    "BackendUnavailable": ".engine",
    "EngineInfo": ".engine",
    "EngineInputError": ".engine",
    "InferenceEngine": ".engine",
    "BACKENDS": ".loader",
    "BackendChoice": ".loader",
    "available_backends": ".loader",
    "load_engine": ".loader",
}

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
