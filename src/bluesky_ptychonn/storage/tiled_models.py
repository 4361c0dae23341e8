"""The model registry in Tiled: model versions with sidecar, metrics, sha256 and their files.

A model version is one container in the catalog's ``models`` container, keyed by
``safe_key(version)``. Its metadata (searchable with ``tiled.queries.Key``):

================  ==============================================================================
``version``       the sidecar's version string
``sidecar``       the JSON sidecar itself (architecture, preprocessing, files, training, ...)
``files``         role -> {"path" (relative to the sidecar), "sha256", "size_bytes", "format"}
``sidecar_file``  {"path", "sha256", "size_bytes"} of the sidecar file
``metrics``       evaluation numbers given at registration (dict)
``parent_version`` the model it was fine-tuned from (from the sidecar's training provenance)
``registered``    ISO 8601 UTC
================  ==============================================================================

Arrays: one 1-D ``uint8`` array per file, named by its role (``weights``, ``onnx``), plus
``sidecar`` (the sidecar file's bytes), so `fetch_model` rebuilds the folder byte for byte and
an inference endpoint can be updated from Tiled alone. Nothing here unpickles anything: bytes
are checked against the sha256 recorded at registration and written to files; the model
loaders (``model.checkpoint``) check the sha256 again and never unpickle either.

This module reads sidecar JSON directly (format ``bluesky-ptychonn-model``) and needs neither
torch nor an ONNX runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .tiled_catalog import NodeWrite, TiledCatalog, safe_key, utc_now

__all__ = [
    "ModelRegistryError",
    "fetch_model",
    "find_models",
    "model_write",
    "register_model",
    "sha256_bytes",
]

SIDECAR_FORMAT = "bluesky-ptychonn-model"
MODEL_SPEC = "PtychoNNModel"


class ModelRegistryError(ValueError):
    """A sidecar or a stored model is inconsistent (sha256 mismatch, missing file, ...)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sidecar_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    elif path.suffix != ".json":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"no model sidecar at {path}")
    return path


def model_write(
    sidecar: str | os.PathLike[str],
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> NodeWrite:
    """The `NodeWrite` that registers the model described by a sidecar (path, file or folder).

    Every file the sidecar lists is read and checked against the sidecar's sha256 first.

    Raises:
        FileNotFoundError: no sidecar, or a listed file is missing.
        ModelRegistryError: not a bluesky-ptychonn sidecar, no version, a sha256 mismatch, or
            a file path that leaves the sidecar's folder.
    """
    path = _sidecar_path(sidecar)
    raw = path.read_bytes()
    try:
        described = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ModelRegistryError(f"{path} is not JSON: {error}") from None
    if not isinstance(described, dict) or described.get("format") != SIDECAR_FORMAT:
        raise ModelRegistryError(f"{path} is not a {SIDECAR_FORMAT} sidecar (format field)")
    version = str(described.get("version") or "")
    if not version:
        raise ModelRegistryError(f"{path} has no version: a registered model needs one")
    files = described.get("files") or {}
    if not files:
        raise ModelRegistryError(f"{path} lists no files")
    arrays: dict[str, np.ndarray] = {}
    listed: dict[str, dict[str, Any]] = {}
    for role, entry in files.items():
        relative = Path(entry["path"])
        if relative.is_absolute() or ".." in relative.parts:
            raise ModelRegistryError(f"{path}: file paths must stay next to the sidecar")
        file = path.parent / relative
        if not file.is_file():
            raise FileNotFoundError(f"{file} (listed as {role!r} in {path}) is missing")
        data = file.read_bytes()
        digest = sha256_bytes(data)
        if digest != entry["sha256"]:
            raise ModelRegistryError(
                f"sha256 of {file} is {digest[:16]}..., its sidecar says "
                f"{str(entry['sha256'])[:16]}...: refusing to register a changed file"
            )
        name = safe_key(role)
        if name == "sidecar":
            raise ModelRegistryError(f"{path}: 'sidecar' is not allowed as a file role")
        arrays[name] = np.frombuffer(data, dtype=np.uint8)
        listed[name] = {
            "path": relative.as_posix(),
            "sha256": digest,
            "size_bytes": len(data),
            "format": entry.get("format"),
        }
    arrays["sidecar"] = np.frombuffer(raw, dtype=np.uint8)
    training = described.get("training") or {}
    metadata = {
        "version": version,
        "sidecar": described,
        "files": listed,
        "sidecar_file": {"path": path.name, "sha256": sha256_bytes(raw), "size_bytes": len(raw)},
        "metrics": dict(metrics or {}),
        "parent_version": training.get("parent_version") or training.get("parent"),
        "registered": utc_now(),
        "package_version": __version__,
        **(extra or {}),
    }
    return NodeWrite(
        parent="models",
        key=safe_key(version),
        metadata=metadata,
        arrays=arrays,
        specs=[MODEL_SPEC],
    )


def register_model(
    catalog: TiledCatalog,
    sidecar: str | os.PathLike[str],
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Any:
    """Store a model version (sidecar, files, metrics, sha256) in the registry; return its node.

    Registering the same files again updates the metrics; different files under a version
    that exists already are refused unless ``overwrite``.

    Raises:
        FileExistsError: the version exists with other files and ``overwrite`` is False.
    """
    write = model_write(sidecar, metrics=metrics, extra=extra)
    models = catalog.models
    if write.key in models and not overwrite:
        stored = dict(models[write.key].metadata).get("files", {})
        mine = write.metadata["files"]
        if {r: e["sha256"] for r, e in stored.items()} != {r: e["sha256"] for r, e in mine.items()}:
            raise FileExistsError(
                f"model version {write.metadata['version']!r} is registered with other files; "
                "give the new model a new version (or pass overwrite=True)"
            )
        write.metadata["registered"] = dict(models[write.key].metadata).get(
            "registered", write.metadata["registered"]
        )
    return catalog.put(write)


def find_models(catalog: TiledCatalog, **equal: Any) -> Any:
    """Model versions whose metadata match (``find_models(cat, parent_version="v1")``)."""
    from tiled.queries import Key

    container = catalog.models
    for name, value in equal.items():
        container = container.search(Key(name) == value)
    return container


def latest_version(catalog: TiledCatalog) -> str:
    """The version registered last."""
    entries = [
        (dict(node.metadata).get("registered", ""), dict(node.metadata).get("version", key))
        for key, node in catalog.models.items()
    ]
    if not entries:
        raise KeyError(f"no model is registered in {catalog.uri}")
    return max(entries)[1]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def fetch_model(
    catalog: TiledCatalog,
    version: str | None,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a registered model's files and sidecar into ``directory``; return the sidecar path.

    Each file's bytes are checked against the sha256 recorded at registration before anything
    is written; files are written atomically (temporary name, then rename).

    Args:
        catalog: the catalog.
        version: the model version; None fetches the one registered last.
        directory: where to put the files (created if missing).
        overwrite: replace existing files of the same names.

    Raises:
        KeyError: no such version.
        ModelRegistryError: stored bytes do not match their sha256.
        FileExistsError: a file exists and ``overwrite`` is False.
    """
    if version is None:
        version = latest_version(catalog)
    key = safe_key(version)
    if key not in catalog.models:
        raise KeyError(f"model version {version!r} is not registered in {catalog.uri}")
    node = catalog.models[key]
    metadata = dict(node.metadata)
    wanted = {**metadata["files"], "sidecar": metadata["sidecar_file"]}
    contents: dict[Path, bytes] = {}
    directory = Path(directory)
    for role, entry in wanted.items():
        data = np.asarray(node[role].read(), dtype=np.uint8).tobytes()
        digest = sha256_bytes(data)
        if digest != entry["sha256"]:
            raise ModelRegistryError(
                f"the {role!r} bytes of model {version!r} in {catalog.uri} have sha256 "
                f"{digest[:16]}..., registered as {entry['sha256'][:16]}...: refusing them"
            )
        relative = Path(entry["path"])
        if relative.is_absolute() or ".." in relative.parts:
            raise ModelRegistryError(f"model {version!r}: stored path {relative} leaves its folder")
        contents[directory / relative] = data
    if not overwrite:
        existing = [str(p) for p in contents if p.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} exist; pass overwrite=True")
    for path, data in contents.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
    return directory / metadata["sidecar_file"]["path"]
