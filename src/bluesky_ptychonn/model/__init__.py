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

from ..lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
