"""Reconstructions and training pairs in Tiled: what is stored, how to write and find it.

Reconstructions live in the catalog's ``reconstructions`` container, one container per result
(see `storage.tiled_catalog` for why not under the run). Metadata, searchable with
``tiled.queries.Key``:

=====================  =========================================================================
``scan_uid``           start uid of the run the result was computed from
``kind``               ``"live-mosaic"`` (CNN patches stitched during the scan) or the iterative
                       algorithm's name (``"epie"``, ``"ap"``, ...)
``model_version``      the CNN model's version (live mosaics; None for iterative results)
``pixel_size_m``       object pixel size, m
``origin_m``           [y, x] of the centre of pixel [0, 0], m
``frames_used``        frames that went into the result
``final``              False for a snapshot taken during the scan, True for the last one
``snapshot_index``     0, 1, 2, ... (live mosaics)
``metrics``            quality numbers (dict, e.g. {"frc_resolution_m": ...})
``settings``           the algorithm's settings (iterative results)
``sample``             the run's sample, when known
``created``, ``updated``  ISO 8601 UTC
=====================  =========================================================================

Arrays: live mosaics hold ``phase`` (rad), ``amplitude`` and ``weights`` (float32, (H, W)),
and ``phase_uncertainty`` (rad, one standard deviation, NaN where unmeasured) when the model
states one;
iterative results hold ``object`` (complex64 (H, W)), ``probe`` (complex64, (H, W) or
(modes, H, W)), ``positions_m`` ((N, 2) (y, x) m, refined) and ``error_history`` ((I,)).

Training pairs live in ``training``, one container per set cut from one reconstruction:
arrays ``patterns`` ((N, H, W) counts, centred), ``phase`` and ``amplitude`` ((N, h, w) labels),
``positions_m`` ((N, 2) (y, x) m) and ``frame_indices`` ((N,) the frames' indices in the run);
metadata ``scan_uid``, ``reconstruction`` (the key of the result the labels were cut from),
``reconstruction_kind``, ``pixel_size_m``, ``n_pairs`` and free ``provenance``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..dataset import ComplexImage, PtychoDataset, Reconstruction
from ..geometry import PixelGrid, as_positions_m
from ..intervals import FIELD
from ..stitch.mosaic import MosaicSnapshot
from .tiled_catalog import NodeWrite, TiledCatalog, safe_key, utc_now

__all__ = [
    "KIND_LIVE_MOSAIC",
    "LiveMosaic",
    "MosaicSnapshot",
    "TrainingPairs",
    "find_reconstructions",
    "find_training_pairs",
    "live_mosaic_write",
    "mosaic_key",
    "read_live_mosaic",
    "read_reconstruction",
    "read_training_pairs",
    "reconstruction_write",
    "save_reconstruction_for_dataset",
    "training_pairs_write",
]

KIND_LIVE_MOSAIC = "live-mosaic"
RECONSTRUCTION_SPEC = "PtychoReconstruction"
TRAINING_SPEC = "PtychoTrainingPairs"


# ----------------------------------------------------------------------------------------------
# live mosaics


@dataclass
class LiveMosaic:
    """A live mosaic read back from Tiled."""

    phase: np.ndarray
    amplitude: np.ndarray
    weights: np.ndarray
    pixel_size_m: float
    origin_m: tuple[float, float]
    metadata: dict[str, Any]
    phase_uncertainty: np.ndarray | None = None

    @property
    def grid(self) -> PixelGrid:
        return PixelGrid(self.pixel_size_m, self.origin_m, self.phase.shape)

    @property
    def object(self) -> ComplexImage:
        """amplitude * exp(i phase) on the mosaic's grid."""
        return ComplexImage(
            self.amplitude * np.exp(1j * self.phase.astype(np.float64)),
            self.pixel_size_m,
            self.origin_m,
        )


def mosaic_key(scan_uid: str, model_version: str) -> str:
    """Node key of a run's live mosaic made by one model version."""
    return safe_key(f"{scan_uid}-{KIND_LIVE_MOSAIC}-{model_version or 'unknown'}")


def live_mosaic_write(
    scan_uid: str,
    snapshot: MosaicSnapshot,
    *,
    snapshot_index: int,
    final: bool,
    sample: str | None = None,
    created: str | None = None,
    extra: dict[str, Any] | None = None,
) -> NodeWrite:
    """The `NodeWrite` that stores (or updates) a run's live mosaic.

    Every snapshot of a run and model version goes to the same node (`mosaic_key`), so a
    reader always finds the newest one there; ``final`` marks the last.
    """
    now = utc_now()
    metadata = {
        "scan_uid": scan_uid,
        "kind": KIND_LIVE_MOSAIC,
        "model_version": snapshot.model_version,
        "pixel_size_m": snapshot.pixel_size_m,
        "origin_m": list(snapshot.origin_m),
        "shape": list(snapshot.phase.shape),
        "frames_used": int(snapshot.frames_used),
        "snapshot_index": int(snapshot_index),
        "final": bool(final),
        "metrics": dict(snapshot.metrics),
        "sample": sample,
        "created": created or now,
        "updated": now,
        "package_version": __version__,
        **(extra or {}),
    }
    return NodeWrite(
        parent="reconstructions",
        key=mosaic_key(scan_uid, snapshot.model_version),
        metadata=metadata,
        arrays={
            "phase": snapshot.phase,
            "amplitude": snapshot.amplitude,
            "weights": snapshot.weights,
            **(
                {FIELD: snapshot.phase_uncertainty}
                if snapshot.phase_uncertainty is not None
                else {}
            ),
        },
        specs=[RECONSTRUCTION_SPEC],
    )


def read_live_mosaic(node: Any) -> LiveMosaic:
    """A `LiveMosaic` from a reconstructions node written by `live_mosaic_write`."""
    metadata = dict(node.metadata)
    if metadata.get("kind") != KIND_LIVE_MOSAIC:
        raise ValueError(f"{node.uri} is a {metadata.get('kind')!r} result, not a live mosaic")
    return LiveMosaic(
        phase=node["phase"].read(),
        amplitude=node["amplitude"].read(),
        weights=node["weights"].read(),
        pixel_size_m=float(metadata["pixel_size_m"]),
        origin_m=tuple(metadata["origin_m"]),
        metadata=metadata,
        phase_uncertainty=node[FIELD].read() if FIELD in node else None,
    )


# ----------------------------------------------------------------------------------------------
# iterative reconstructions


def reconstruction_write(
    scan_uid: str,
    reconstruction: Reconstruction,
    *,
    metrics: dict[str, Any] | None = None,
    key: str | None = None,
    sample: str | None = None,
    frames_used: int | None = None,
    extra: dict[str, Any] | None = None,
) -> NodeWrite:
    """The `NodeWrite` that stores an iterative reconstruction (ePIE, AP, ...) of a run.

    Args:
        scan_uid: the run's start uid.
        reconstruction: object, probe, refined positions, error history, algorithm, settings.
        metrics: quality numbers.
        key: node key (default ``<scan_uid>-<algorithm>-<UTC time>``).
        sample: the run's sample, for searching.
        frames_used: frames reconstructed (default: the number of positions, if known).
        extra: more metadata.
    """
    kind = reconstruction.algorithm or "unknown"
    now = utc_now()
    if key is None:
        key = safe_key(f"{scan_uid}-{kind}-{now.replace(':', '').replace('.', '')}")
    arrays: dict[str, np.ndarray] = {
        "object": np.asarray(reconstruction.object.array, dtype=np.complex64),
        "error_history": np.asarray(reconstruction.error_history, dtype=np.float64),
    }
    if reconstruction.probe is not None:
        arrays["probe"] = np.asarray(reconstruction.probe, dtype=np.complex64)
    if reconstruction.positions_m is not None:
        arrays["positions_m"] = as_positions_m(reconstruction.positions_m)
        if frames_used is None:
            frames_used = int(reconstruction.positions_m.shape[0])
    history = reconstruction.error_history
    metadata = {
        "scan_uid": scan_uid,
        "kind": kind,
        "algorithm": kind,
        "model_version": None,
        "pixel_size_m": reconstruction.object.pixel_size_m,
        "origin_m": list(reconstruction.object.origin_m),
        "shape": list(reconstruction.object.array.shape),
        "frames_used": frames_used,
        "iterations": int(history.size),
        "final_error": float(history[-1]) if history.size else None,
        "final": True,
        "settings": reconstruction.settings,
        "metrics": dict(metrics or {}),
        "sample": sample,
        "created": now,
        "updated": now,
        "package_version": __version__,
        **(extra or {}),
    }
    return NodeWrite(
        parent="reconstructions",
        key=key,
        metadata=metadata,
        arrays=arrays,
        specs=[RECONSTRUCTION_SPEC],
    )


def save_reconstruction_for_dataset(
    dataset: PtychoDataset,
    reconstruction: Reconstruction,
    *,
    metrics: dict[str, Any] | None = None,
    api_key: str | None = None,
) -> str:
    """Write a reconstruction of a data set read from Tiled next to its run; return the key.

    The catalog and the run come from ``dataset.metadata["tiled"]`` (set by
    `storage.tiled_runs.dataset_from_run`).

    Raises:
        ValueError: the data set did not come from Tiled.
    """
    from .tiled_catalog import connect

    source = dataset.metadata.get("tiled")
    if not source:
        raise ValueError("the data set was not read from Tiled (no metadata['tiled'])")
    write = reconstruction_write(
        source["scan_uid"],
        reconstruction,
        metrics=metrics,
        sample=dataset.metadata.get("sample"),
        frames_used=dataset.n_patterns,
    )
    connect(source["catalog_uri"], api_key=api_key).put(write)
    return write.key


def read_reconstruction(node: Any) -> Reconstruction:
    """A `Reconstruction` from a reconstructions node (iterative result or live mosaic)."""
    metadata = dict(node.metadata)
    if metadata.get("kind") == KIND_LIVE_MOSAIC:
        mosaic = read_live_mosaic(node)
        return Reconstruction(
            object=mosaic.object,
            algorithm=KIND_LIVE_MOSAIC,
            settings={"model_version": metadata.get("model_version")},
        )
    keys = set(node)
    return Reconstruction(
        object=ComplexImage(
            node["object"].read(), float(metadata["pixel_size_m"]), tuple(metadata["origin_m"])
        ),
        probe=node["probe"].read() if "probe" in keys else None,
        positions_m=node["positions_m"].read() if "positions_m" in keys else None,
        error_history=node["error_history"].read() if "error_history" in keys else np.zeros(0),
        algorithm=str(metadata.get("algorithm", metadata.get("kind", "unknown"))),
        settings=dict(metadata.get("settings") or {}),
    )


def _search(container: Any, equal: dict[str, Any]) -> Any:
    from tiled.queries import Key

    for name, value in equal.items():
        if value is not None:
            container = container.search(Key(name) == value)
    return container


def find_reconstructions(
    catalog: TiledCatalog,
    *,
    scan_uid: str | None = None,
    kind: str | None = None,
    model_version: str | None = None,
    sample: str | None = None,
    final: bool | None = None,
) -> Any:
    """Reconstructions matching every given field (a Tiled container of results).

    >>> for key, node in find_reconstructions(cat, scan_uid=uid, model_version="v3").items():
    ...     mosaic = read_live_mosaic(node)
    """
    return _search(
        catalog.reconstructions,
        {
            "scan_uid": scan_uid,
            "kind": kind,
            "model_version": model_version,
            "sample": sample,
            "final": final,
        },
    )


# ----------------------------------------------------------------------------------------------
# training pairs


@dataclass
class TrainingPairs:
    """Diffraction patterns with the object patches (labels) cut at their positions.

    Attributes:
        patterns: (N, H, W) counts, centred.
        phase, amplitude: (N, h, w) label patches, beam centre on (h//2, w//2).
        positions_m: (N, 2) (y, x) m.
        frame_indices: (N,) indices of the frames in their run.
        scan_uid: the run's start uid.
        reconstruction: node key of the reconstruction the labels come from.
        reconstruction_kind: its kind ("epie", ...).
        pixel_size_m: the labels' pixel size, m.
        provenance: anything more (label settings, the model whose mismatch picked them...).
    """

    patterns: np.ndarray
    phase: np.ndarray
    amplitude: np.ndarray
    positions_m: np.ndarray
    frame_indices: np.ndarray
    scan_uid: str
    reconstruction: str
    reconstruction_kind: str
    pixel_size_m: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patterns = np.asarray(self.patterns)
        self.phase = np.asarray(self.phase, dtype=np.float32)
        self.amplitude = np.asarray(self.amplitude, dtype=np.float32)
        self.positions_m = as_positions_m(self.positions_m)
        self.frame_indices = np.asarray(self.frame_indices, dtype=np.int64)
        n = self.patterns.shape[0]
        if (
            self.patterns.ndim != 3
            or self.phase.ndim != 3
            or self.phase.shape != (self.amplitude.shape)
        ):
            raise ValueError("patterns, phase and amplitude must be (N, H, W) stacks")
        if not (
            self.phase.shape[0] == self.positions_m.shape[0] == self.frame_indices.shape[0] == n
        ):
            raise ValueError(
                f"{n} patterns, {self.phase.shape[0]} labels, {self.positions_m.shape[0]} "
                f"positions and {self.frame_indices.shape[0]} frame indices: counts differ"
            )


def training_pairs_write(pairs: TrainingPairs, *, key: str | None = None) -> NodeWrite:
    """The `NodeWrite` that stores a set of training pairs (default key: scan + result)."""
    key = key or safe_key(f"{pairs.scan_uid}-{pairs.reconstruction}-pairs")
    metadata = {
        "scan_uid": pairs.scan_uid,
        "reconstruction": pairs.reconstruction,
        "reconstruction_kind": pairs.reconstruction_kind,
        "pixel_size_m": pairs.pixel_size_m,
        "n_pairs": int(pairs.patterns.shape[0]),
        "pattern_shape": list(pairs.patterns.shape[1:]),
        "label_shape": list(pairs.phase.shape[1:]),
        "provenance": pairs.provenance,
        "created": utc_now(),
        "package_version": __version__,
    }
    return NodeWrite(
        parent="training",
        key=key,
        metadata=metadata,
        arrays={
            "patterns": pairs.patterns,
            "phase": pairs.phase,
            "amplitude": pairs.amplitude,
            "positions_m": pairs.positions_m,
            "frame_indices": pairs.frame_indices,
        },
        specs=[TRAINING_SPEC],
    )


def read_training_pairs(node: Any) -> TrainingPairs:
    metadata = dict(node.metadata)
    return TrainingPairs(
        patterns=node["patterns"].read(),
        phase=node["phase"].read(),
        amplitude=node["amplitude"].read(),
        positions_m=node["positions_m"].read(),
        frame_indices=node["frame_indices"].read(),
        scan_uid=metadata["scan_uid"],
        reconstruction=metadata["reconstruction"],
        reconstruction_kind=metadata["reconstruction_kind"],
        pixel_size_m=float(metadata["pixel_size_m"]),
        provenance=dict(metadata.get("provenance") or {}),
    )


def find_training_pairs(
    catalog: TiledCatalog, *, scan_uid: str | None = None, reconstruction: str | None = None
) -> Any:
    """Training-pair sets matching every given field (a Tiled container)."""
    return _search(catalog.training, {"scan_uid": scan_uid, "reconstruction": reconstruction})
