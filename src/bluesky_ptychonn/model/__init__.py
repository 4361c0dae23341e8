"""The PtychoNN model family: networks, preprocessing, training data, training, files, export.

Holds the networks (``architectures``: the original PtychoNN and the edge model "PtychoNN
2.0", one (N, 2, H, W) output: phase in rad, amplitude), the frame preprocessing stored with
every model (``preprocessing``), training pairs from the simulator or from a reconstruction
(``data``), the training loop (``train``), evaluation (``evaluate``), model files as
safetensors + JSON sidecar with sha256 (``checkpoint``) and ONNX export (``export``). Uses
torch; may import ``geometry``, ``dataset``, ``metrics`` and ``sim``; never ``inference``,
``storage`` or anything that knows bluesky.
"""

from .architectures import MODEL_NAMES, ModelConfig, PtychoNNNet, build_model, count_parameters
from .checkpoint import ModelFileError, Sidecar, load_model, resolve, save_model, sha256_file
from .data import (
    TrainingSet,
    illuminated_mask,
    remove_phase_offset,
    simulate_training_set,
    training_set_from_reconstruction,
)
from .evaluate import evaluate, patch_phase_ssim, predict
from .preprocessing import Preprocessing
from .train import TrainingOptions, TrainingResult, fit, train_model

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
    "evaluate",
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
