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


def __getattr__(name: str) -> object:
    """Import a public name's module on first use (PEP 562), so that importing one module of
    this package does not load the others (and their heavy dependencies)."""
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
