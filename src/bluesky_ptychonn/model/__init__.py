"""The PtychoNN model family: networks, preprocessing, training data, training, files, export.

Holds the networks (``architectures``: the original PtychoNN and the edge model "PtychoNN
2.0", one (N, 2, H, W) output: phase in rad, amplitude), the frame preprocessing stored with
every model (``preprocessing``), training pairs from the simulator or from a reconstruction
(``data``), the training loop (``train``), evaluation (``evaluate``: the function is
`evaluate.evaluate`; `predict`), model files as
safetensors + JSON sidecar with sha256 (``checkpoint``) and ONNX export (``export``). Uses
torch; may import ``geometry``, ``dataset``, ``metrics`` and ``sim``; never ``inference``,
``storage`` or anything that knows bluesky.
"""


_LAZY = {
    "MODEL_NAMES": ".architectures",
    "ModelConfig": ".architectures",
    "PtychoNNNet": ".architectures",
    "build_model": ".architectures",
    "count_parameters": ".architectures",
    "ModelFileError": ".checkpoint",
    "Sidecar": ".checkpoint",
    "load_model": ".checkpoint",
    "resolve": ".checkpoint",
    "save_model": ".checkpoint",
    "sha256_file": ".checkpoint",
    "TrainingSet": ".data",
    "illuminated_mask": ".data",
    "remove_phase_offset": ".data",
    "simulate_training_set": ".data",
    "training_set_from_reconstruction": ".data",
    "patch_phase_ssim": ".evaluate",
    "predict": ".evaluate",
    "Preprocessing": ".preprocessing",
    "TrainingOptions": ".train",
    "TrainingResult": ".train",
    "fit": ".train",
    "train_model": ".train",
}

__all__ = [
    "MODEL_NAMES",
    "ModelConfig",
    "ModelFileError",
    "Preprocessing",
    "PtychoNNNet",
    "Sidecar",
    "TrainingOptions",
    "TrainingResult",
    "TrainingSet",
    "build_model",
    "count_parameters",
    "fit",
    "illuminated_mask",
    "load_model",
    "patch_phase_ssim",
    "predict",
    "remove_phase_offset",
    "resolve",
    "save_model",
    "sha256_file",
    "simulate_training_set",
    "train_model",
    "training_set_from_reconstruction",
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
