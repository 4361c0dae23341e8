"""Model files: weights (safetensors) or ONNX graphs, each with a JSON sidecar; never a pickle.

A model on disk is a file and its sidecar, ``<stem>.json`` next to it:

* ``model.safetensors``: the weights, for training and fine-tuning (`save_model`,
  `load_model`). A plain PyTorch state dict (``.pt`` / ``.pth``) is read too, with
  ``torch.load(weights_only=True)``, which refuses anything but tensors;
* ``model.onnx``: the graph for inference (`export.export_onnx`).

The sidecar (`Sidecar`) holds the architecture (`ModelConfig`), the preprocessing
(`Preprocessing`), a version string, the package version, the training provenance and, for
each file it describes, the file name and its sha256. Every loader checks the sha256 before
reading a byte of the file, so a truncated, swapped or tampered file is refused with a clear
`ModelFileError` (a ValueError) rather than failing deep inside torch or an engine.

``path`` arguments may name the weights file, the ONNX file, the sidecar, or a directory that
holds ``model.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .architectures import ModelConfig, PtychoNNNet
from .preprocessing import Preprocessing

SIDECAR_FORMAT = "bluesky-ptychonn-model"
SIDECAR_FORMAT_VERSION = 1
DEFAULT_STEM = "model"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


class ModelFileError(ValueError):
    """A model file or its sidecar is missing, inconsistent, tampered with or not allowed."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Sidecar:
    """The JSON description of a model's files (see the module docstring).

    Attributes:
        architecture: the network's `ModelConfig`.
        preprocessing: how frames become network input.
        version: the model's version string (shown by the inference endpoint); default
            ``"<name>-<first 12 hex digits of the weights' sha256>"``.
        files: role ("weights", "onnx") -> {"path": file name relative to the sidecar,
            "sha256": hex digest, "format": "safetensors" | "torch-state-dict" | "onnx"}.
        training: provenance: data sources, options, seed, epochs, losses, time, parent model.
        package_version: the bluesky-ptychonn version that wrote it.
        created: ISO 8601 UTC time of writing.
        uncertainty: for a model with the uncertainty head, its calibration
            (`uncertainty.calibrate_uncertainty`: ``calibration_scale``, coverage before and
            after); empty otherwise (and then not written).
    """

    architecture: ModelConfig
    preprocessing: Preprocessing
    version: str = ""
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    package_version: str = __version__
    created: str = ""
    uncertainty: dict[str, Any] = field(default_factory=dict)

    @property
    def uncertainty_scale(self) -> float:
        """The calibration factor on the stated phase sigma (1.0 when not calibrated)."""
        return float(self.uncertainty.get("calibration_scale", 1.0))

    def to_dict(self) -> dict[str, Any]:
        d = {
            "format": SIDECAR_FORMAT,
            "format_version": SIDECAR_FORMAT_VERSION,
            "version": self.version,
            "architecture": self.architecture.to_dict(),
            "input_shape": list(self.architecture.input_shape),
            "output": (
                "(N, 3, H, W) float32: channel 0 phase (rad), channel 1 amplitude, channel 2 "
                "phase uncertainty (rad, one standard deviation, times calibration_scale)"
                if self.architecture.uncertainty
                else "(N, 2, H, W) float32: channel 0 phase (rad), channel 1 amplitude"
            ),
            "preprocessing": self.preprocessing.to_dict(),
            "files": self.files,
            "training": self.training,
            "package_version": self.package_version,
            "created": self.created,
        }
        if self.uncertainty:
            d["uncertainty"] = self.uncertainty
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "sidecar") -> Sidecar:
        if d.get("format") != SIDECAR_FORMAT:
            raise ModelFileError(f"{where} is not a {SIDECAR_FORMAT} sidecar (format field)")
        if int(d.get("format_version", 0)) > SIDECAR_FORMAT_VERSION:
            raise ModelFileError(
                f"{where} has format version {d.get('format_version')}; this bluesky-ptychonn "
                f"reads up to {SIDECAR_FORMAT_VERSION}: upgrade the package"
            )
        try:
            architecture = ModelConfig.from_dict(dict(d["architecture"]))
            preprocessing = Preprocessing.from_dict(dict(d["preprocessing"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(
                f"{where}: invalid architecture or preprocessing: {error}"
            ) from None
        if architecture.input_shape != preprocessing.input_shape:
            raise ModelFileError(
                f"{where}: architecture input {architecture.input_shape} differs from the "
                f"preprocessing's {preprocessing.input_shape}"
            )
        files = d.get("files", {})
        if not isinstance(files, dict) or not all(
            isinstance(v, dict) and "path" in v and "sha256" in v for v in files.values()
        ):
            raise ModelFileError(f"{where}: 'files' must map roles to {{path, sha256}}")
        return cls(
            architecture=architecture,
            preprocessing=preprocessing,
            version=str(d.get("version", "")),
            files=files,
            training=dict(d.get("training", {})),
            package_version=str(d.get("package_version", "")),
            created=str(d.get("created", "")),
            uncertainty=dict(d.get("uncertainty", {})),
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        if not self.created:
            self.created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Sidecar:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model sidecar {path} does not exist")
        try:
            d = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelFileError(f"{path} is not a JSON sidecar: {error}") from None
        if not isinstance(d, dict):
            raise ModelFileError(f"{path} is not a JSON object")
        return cls.from_dict(d, str(path))


@dataclass
class ModelFiles:
    """A resolved model location: the sidecar, its contents, and its directory."""

    sidecar_path: Path
    sidecar: Sidecar

    @property
    def directory(self) -> Path:
        return self.sidecar_path.parent

    def file(self, role: str) -> Path | None:
        """Absolute path of the file with this role ("weights", "onnx"), or None if absent."""
        entry = self.sidecar.files.get(role)
        return None if entry is None else self.directory / entry["path"]

    def verified(self, role: str) -> Path:
        """The file with this role after checking its sha256 against the sidecar."""
        entry = self.sidecar.files.get(role)
        if entry is None:
            have = sorted(self.sidecar.files) or ["none"]
            raise ModelFileError(
                f"{self.sidecar_path} lists no {role!r} file (it has: {', '.join(have)})"
            )
        path = self.directory / entry["path"]
        if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
            raise ModelFileError(f"{self.sidecar_path}: file paths must stay next to the sidecar")
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} (listed in {self.sidecar_path}) is missing")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ModelFileError(
                f"sha256 of {path} is {actual[:16]}..., but its sidecar {self.sidecar_path.name} "
                f"says {str(entry['sha256'])[:16]}...: the file was changed or replaced; refusing "
                "to load it"
            )
        return path


def resolve(path: str | os.PathLike[str]) -> ModelFiles:
    """Find and read the sidecar of a model given by file, sidecar or directory."""
    path = Path(path)
    if path.is_dir():
        sidecar = path / f"{DEFAULT_STEM}.json"
        if not sidecar.is_file():
            jsons = sorted(path.glob("*.json"))
            if len(jsons) != 1:
                raise FileNotFoundError(
                    f"{path} holds no {DEFAULT_STEM}.json sidecar"
                    + (f" (and {len(jsons)} other JSON files)" if jsons else "")
                )
            sidecar = jsons[0]
    elif path.suffix == ".json":
        sidecar = path
    else:
        if not path.exists():
            raise FileNotFoundError(f"model file {path} does not exist")
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise ModelFileError(
                f"{path} has no sidecar {sidecar.name}: a model file is only loaded with its "
                "JSON sidecar (architecture, preprocessing, sha256)"
            )
    files = ModelFiles(sidecar, Sidecar.read(sidecar))
    if path.is_file() and path.suffix != ".json":
        listed = {Path(e["path"]).name for e in files.sidecar.files.values()}
        if path.name not in listed:
            raise ModelFileError(
                f"{sidecar} does not describe {path.name} (lists {sorted(listed)})"
            )
    return files


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _looks_pickled(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return any(head.startswith(m) for m in _PICKLE_MAGIC)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or a torch state dict with ``weights_only=True``.

    Raises:
        ModelFileError: a pickled object that is not a plain state dict, or a file that is
            not what its suffix says.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if _looks_pickled(path):
            raise ModelFileError(
                f"{path} is a pickle (or a torch.save archive), not safetensors: pickled models "
                "are never loaded"
            )
        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as error:
            raise ModelFileError(f"{path} is not a valid safetensors file: {error}") from None
    if path.suffix in (".pt", ".pth"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # protocol notes about foreign pickles
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # UnpicklingError and friends: refuse anything but tensors
            raise ModelFileError(
                f"{path} is not a plain state dict of tensors (torch.load with weights_only=True "
                f"refused it: {type(error).__name__}); whole pickled models are never loaded"
            ) from None
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ModelFileError(f"{path} does not hold a state dict of tensors")
        return state
    raise ModelFileError(f"{path}: unknown weights format (expected {', '.join(WEIGHT_SUFFIXES)})")


def save_model(
    model: PtychoNNNet,
    directory: str | os.PathLike[str],
    preprocessing: Preprocessing,
    *,
    stem: str = DEFAULT_STEM,
    version: str | None = None,
    training: dict[str, Any] | None = None,
    overwrite: bool = True,
    uncertainty: dict[str, Any] | None = None,
    probe: Any = None,
) -> Path:
    """Write ``<directory>/<stem>.safetensors`` and its sidecar ``<stem>.json``.

    Args:
        uncertainty: the calibration of the uncertainty head (`uncertainty`), if any.
        probe: the (h, w) complex probe on the frame's object grid, sqrt(photons), that the
            training frames were measured with; written as ``<stem>.probe.npy`` (role
            ``probe``) for the endpoint's physics check (`inference.physics`).

    Returns:
        The sidecar path.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{stem}.safetensors"
    sidecar_path = directory / f"{stem}.json"
    if not overwrite and (weights.exists() or sidecar_path.exists()):
        raise FileExistsError(f"{weights} or {sidecar_path} exists")
    if model.config.input_shape != preprocessing.input_shape:
        raise ValueError(
            f"the model takes {model.config.input_shape} input but the preprocessing makes "
            f"{preprocessing.input_shape}"
        )
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    save_file(state, str(weights), metadata={"format": SIDECAR_FORMAT})
    digest = sha256_file(weights)
    sidecar = Sidecar(
        architecture=model.config,
        preprocessing=preprocessing,
        version=version or f"{model.config.name}-{digest[:12]}",
        files={"weights": {"path": weights.name, "sha256": digest, "format": "safetensors"}},
        training=dict(training or {}),
        uncertainty=dict(uncertainty or {}),
    )
    if probe is not None:
        sidecar.files["probe"] = write_probe(directory / f"{stem}.probe.npy", probe)
    return sidecar.write(sidecar_path)


def write_probe(path: str | os.PathLike[str], probe: Any) -> dict[str, str]:
    """Write a complex probe as .npy (no pickle) and return its ``files`` entry."""
    import numpy as np

    probe = np.asarray(probe)
    if probe.ndim == 3:  # modes: the physics check uses the strongest
        probe = probe[int(np.argmax((np.abs(probe) ** 2).sum(axis=(1, 2))))]
    if probe.ndim != 2 or not np.iscomplexobj(probe) or not np.all(np.isfinite(probe)):
        raise ValueError("the probe must be a finite complex (h, w) array")
    path = Path(path)
    np.save(path, probe.astype(np.complex64), allow_pickle=False)
    return {"path": path.name, "sha256": sha256_file(path), "format": "npy"}


def read_probe(files: ModelFiles) -> Any:
    """The model's probe (complex64 (h, w), sqrt(photons)) after its sha256 check, or None."""
    import numpy as np

    if "probe" not in files.sidecar.files:
        return None
    return np.load(files.verified("probe"), allow_pickle=False)


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[PtychoNNNet, Sidecar]:
    """A model (in eval mode) and its sidecar from a weights file, sidecar or directory.

    The weights' sha256 is checked against the sidecar first.

    Raises:
        ModelFileError: no sidecar, sha256 mismatch, a pickle, or weights that do not fit the
            sidecar's architecture.
        FileNotFoundError: a missing file.
    """
    files = resolve(path)
    weights = files.verified("weights")
    state = read_state_dict(weights)
    model = PtychoNNNet(files.sidecar.architecture)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ModelFileError(
            f"{weights} does not fit the architecture in {files.sidecar_path.name}: {first}"
        ) from None
    return model.to(device).eval(), files.sidecar
