"""CXI (Coherent X-ray Imaging format 1.6, HDF5) files: read and write ptychography scans.

This module is the only place that converts between CXI conventions and the package's own
(see `bluesky_ptychonn.geometry`):

* CXI translations are (N, 3) (x, y, z) metres; the package uses (N, 2) (y, x) metres.
  Both mean the position of the beam centre on the object. Files whose translations are the
  sample stage displacement need ``read_cxi(..., translation_sign=-1)``.
* CXI energies are in joules; the package uses electronvolts.
* CXI diffraction patterns are centred (zero frequency at pixel (H // 2, W // 2)), like ours:
  no shift is applied either way.
* CXI pixel masks are bitmasks (0 = good pixel); the package uses a bool ``valid_mask``
  (True = good pixel).

Only ``/entry_1`` is read or written.

HDF5 layout written by `write_cxi` (and read back by `read_cxi` / `read_reconstruction`)
-----------------------------------------------------------------------------------------

``<det>`` = ``/entry_1/instrument_1/detector_1``, ``<src>`` = ``/entry_1/instrument_1/source_1``,
``<sample>`` = ``/entry_1/sample_1``, ``<image>`` = ``/entry_1/image_K`` (K = 1, 2, ...).
Fields in the last column are those of `PtychoDataset`, or of `Reconstruction` for ``<image>``.

==================================  =======================  =====  ============================
Path                                Shape, type              Unit   Package field
==================================  =======================  =====  ============================
/cxi_version                        int64 = 160
/entry_1/program_name               str                             "bluesky-ptychonn <version>"
/entry_1/metadata_json              str, a JSON object              PtychoDataset.metadata
<det>/data                          (N, H, W), dtype kept    count  patterns (centred)
<det>/distance                      float64                  m      distance_m
<det>/x_pixel_size, y_pixel_size    float64                  m      detector_pixel_size_m
<det>/basis_vectors                 (2, 3) float64           m      written, not read
<det>/mask                          (H, W) uint32 bits              valid_mask (when set)
<src>/energy                        float64                  J      energy_ev
<src>/wavelength                    float64                  m      from energy_ev
<src>/illumination                  ([M,] H, W) complex             probe (when set)
<sample>/geometry_1/translation     (N, 3) (x, y, z)         m      positions_m (y, x); z = 0
<sample>/ground_truth/object        (H, W) complex                  ground_truth.array
<sample>/ground_truth/pixel_size    float64                  m      ground_truth.pixel_size_m
<sample>/ground_truth/origin_m      (2,) (y, x)              m      ground_truth.origin_m
/entry_1/data_1/data                soft link to <det>/data
<image>/data                        (H, W) complex                  Reconstruction.object.array
<image>/x_pixel_size, y_pixel_size  float64                  m      object.pixel_size_m
<image>/origin_m                    (2,) (y, x)              m      object.origin_m
<image>/data_space                  str = "real"
<image>/probe                       ([M,] H, W) complex             probe (when set)
<image>/translation                 (N, 3) (x, y, z)         m      positions_m (when set)
<image>/error_history               (I,) float64                    error_history
<image>/process_1/algorithm         str                             algorithm
<image>/process_1/settings_json     str, a JSON object              settings
==================================  =======================  =====  ============================

Patterns are chunked one frame per chunk and gzip-compressed (with shuffle) by default. The
mask is written only when ``valid_mask`` is set: 0 for a valid pixel, ``PIXEL_IS_INVALID`` (1)
for an invalid one. ``basis_vectors`` copy the reference file's (rows along -y, columns along -x
of the lab frame); they are for other tools, this module never reads them.

Datasets with a physical unit carry a ``units`` attribute ("m", "J"). ``origin_m`` is the
(y, x) position of the centre of pixel [0, 0] (package order, not CXI's (x, y, z)); the
``translation`` datasets of ``image_K`` groups hold beam positions in (x, y, z), like
``geometry_1/translation``.

Reading (`read_cxi`) accepts files from other tools:

* patterns: ``detector_1/data``, else ``/entry_1/data_1/data``; they must be 3-D (N, H, W).
* energy: ``source_1/energy`` (J), else ``source_1/wavelength`` (m).
* detector pixel size: ``x_pixel_size`` and ``y_pixel_size`` must agree (square pixels, to a
  relative 1e-6) when both exist; one alone is used as it is.
* probe, first found: ``source_1/illumination``, ``source_1/probe``, ``/entry_1/image_1/probe``
  (the reference file ``siemens-star-tike.cxi`` keeps its initial probe estimate there).
* valid pixels: ``detector_1/mask``; a pixel is invalid when any of the CXI "bad" bits is set
  (`CXI_BAD_PIXEL_BITS`: invalid, saturated, hot, dead, shadowed, to-be-ignored, bad, missing);
  a bool mask counts True as bad. A 3-D (per-frame) mask is reduced to the pixels valid in
  every frame. Informational bits (peak mask, noisy, artifact-corrected, resolution limits, ...)
  do not invalidate a pixel. No mask means ``valid_mask=None`` (all pixels valid).
* ``basis_vectors``, ``source_1/probe_mask`` (a probe support, not a detector mask), and any
  z translation are ignored.

Reconstructions go in ``/entry_1/image_K`` groups. `write_reconstruction` never modifies an
existing group: it appends the next index after the highest existing ``image_K`` (so a file
whose ``image_1`` holds only an initial probe, like the reference file, gets ``image_2``).
`read_reconstruction` reads the highest-numbered ``image_K`` that has a ``data`` dataset.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import __version__
from ..dataset import ComplexImage, PtychoDataset, Reconstruction
from ..geometry import ELECTRONVOLT_J, HC_EV_M, as_positions_m, energy_ev_from_joules

__all__ = [
    "CXIFormatError",
    "CXI_VERSION",
    "CXI_BAD_PIXEL_BITS",
    "write_cxi",
    "write_reconstruction",
    "read_cxi",
    "read_reconstruction",
]

CXI_VERSION = 160

# CXI pixel-mask bits (Maia 2012, cxidb.org; the values used by Cheetah and Condor).
PIXEL_IS_INVALID = 1
PIXEL_IS_SATURATED = 2
PIXEL_IS_HOT = 4
PIXEL_IS_DEAD = 8
PIXEL_IS_SHADOWED = 16
PIXEL_IS_TO_BE_IGNORED = 64
PIXEL_IS_BAD = 128
PIXEL_IS_MISSING = 512
#: Mask bits that make a pixel invalid on reading. Writing sets PIXEL_IS_INVALID only.
CXI_BAD_PIXEL_BITS = (
    PIXEL_IS_INVALID
    | PIXEL_IS_SATURATED
    | PIXEL_IS_HOT
    | PIXEL_IS_DEAD
    | PIXEL_IS_SHADOWED
    | PIXEL_IS_TO_BE_IGNORED
    | PIXEL_IS_BAD
    | PIXEL_IS_MISSING
)

ENTRY = "/entry_1"
DETECTOR = f"{ENTRY}/instrument_1/detector_1"
SOURCE = f"{ENTRY}/instrument_1/source_1"
DATA_PATH = f"{DETECTOR}/data"
DATA_LINK_PATH = f"{ENTRY}/data_1/data"
TRANSLATION_PATH = f"{ENTRY}/sample_1/geometry_1/translation"
GROUND_TRUTH = f"{ENTRY}/sample_1/ground_truth"
METADATA_PATH = f"{ENTRY}/metadata_json"
PROBE_PATHS = (f"{SOURCE}/illumination", f"{SOURCE}/probe", f"{ENTRY}/image_1/probe")

_COMPRESSIONS = ("gzip", "lzf", None)
_IMAGE_RE = re.compile(r"^image_(\d+)$")
_SQUARE_RTOL = 1e-6


class CXIFormatError(ValueError):
    """A file is not HDF5, or lacks or has an invalid item of the CXI layout this module reads."""


# ----------------------------------------------------------------------------------------------
# JSON helpers


def _json_ready(value: Any, where: str) -> Any:
    """Return ``value`` with numpy scalars made Python scalars; TypeError/ValueError if not JSON.

    Accepted: dict with str keys, list, tuple (read back as list), str, int, finite float,
    bool, None, and numpy bool/int/float scalars (read back as Python scalars).
    """
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}: JSON has no NaN or infinity")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has a key {key!r} of type {type(key).__name__}: JSON object keys "
                    "must be str"
                )
            out[key] = _json_ready(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_json_ready(item, f"{where}[{i}]") for i, item in enumerate(value)]
    hint = " (use .tolist())" if isinstance(value, np.ndarray) else ""
    raise TypeError(f"{where} is a {type(value).__name__}, which is not JSON-serialisable{hint}")


def _to_json(value: Mapping[str, Any], name: str) -> str:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    return json.dumps(_json_ready(value, name), allow_nan=False)


# ----------------------------------------------------------------------------------------------
# Writing


def _joules_from_ev(energy_ev: float) -> float:
    """Photon energy in joules from eV (inverse of `geometry.energy_ev_from_joules`)."""
    return float(energy_ev) * ELECTRONVOLT_J


def _translation_xyz(positions_m: np.ndarray) -> np.ndarray:
    """(N, 2) (y, x) metres -> (N, 3) CXI (x, y, z=0) metres."""
    out = np.zeros((positions_m.shape[0], 3), dtype=np.float64)
    out[:, 0] = positions_m[:, 1]
    out[:, 1] = positions_m[:, 0]
    return out


def _write_scalar(group: h5py.Group, name: str, value: float, units: str | None = None) -> None:
    ds = group.create_dataset(name, data=np.float64(value))
    if units:
        ds.attrs["units"] = units


def _validate_dataset(dataset: PtychoDataset) -> None:
    """Re-check a data set's invariants (the dataclass fields may have changed since __init__)."""
    patterns = np.asarray(dataset.patterns)
    if patterns.ndim != 3 or patterns.shape[0] == 0:
        raise ValueError(f"patterns must be a non-empty (N, H, W) array, got {patterns.shape}")
    if patterns.dtype.kind not in "biuf":
        raise TypeError(f"patterns must be real numbers, got dtype {patterns.dtype}")
    positions = as_positions_m(dataset.positions_m)
    if positions.shape[0] != patterns.shape[0]:
        raise ValueError(f"{patterns.shape[0]} patterns but {positions.shape[0]} positions")
    for name in ("energy_ev", "distance_m", "detector_pixel_size_m"):
        value = getattr(dataset, name)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    shape = patterns.shape[1:]
    if dataset.probe is not None and np.shape(dataset.probe)[-2:] != shape:
        raise ValueError(f"probe shape {np.shape(dataset.probe)} does not match patterns {shape}")
    if dataset.valid_mask is not None and np.shape(dataset.valid_mask) != shape:
        raise ValueError(
            f"valid_mask shape {np.shape(dataset.valid_mask)} does not match patterns {shape}"
        )


def _validate_reconstruction(reconstruction: Reconstruction) -> str:
    """Check a reconstruction can be written; return its settings as JSON."""
    if not isinstance(reconstruction, Reconstruction):
        raise TypeError(f"expected a Reconstruction, got {type(reconstruction).__name__}")
    if np.asarray(reconstruction.object.array).ndim != 2:
        raise ValueError("the reconstructed object must be a 2-D array")
    if reconstruction.positions_m is not None:
        as_positions_m(reconstruction.positions_m)
    if not isinstance(reconstruction.algorithm, str):
        raise TypeError(f"algorithm must be a str, got {type(reconstruction.algorithm).__name__}")
    return _to_json(reconstruction.settings, "reconstruction.settings")


def _write_image_group(
    entry: h5py.Group, name: str, reconstruction: Reconstruction, settings_json: str
) -> None:
    image = entry.create_group(name)
    obj = reconstruction.object
    image.create_dataset("data", data=np.asarray(obj.array))
    image.create_dataset("data_space", data="real")
    _write_scalar(image, "x_pixel_size", obj.pixel_size_m, "m")
    _write_scalar(image, "y_pixel_size", obj.pixel_size_m, "m")
    origin = image.create_dataset("origin_m", data=np.asarray(obj.origin_m, dtype=np.float64))
    origin.attrs["units"] = "m"
    origin.attrs["axes"] = "y, x: centre of pixel [0, 0]"
    if reconstruction.probe is not None:
        image.create_dataset("probe", data=np.asarray(reconstruction.probe))
    if reconstruction.positions_m is not None:
        translation = image.create_dataset(
            "translation", data=_translation_xyz(as_positions_m(reconstruction.positions_m))
        )
        translation.attrs["units"] = "m"
        translation.attrs["axes"] = "x, y, z: beam position on the object"
    image.create_dataset(
        "error_history", data=np.asarray(reconstruction.error_history, dtype=np.float64).ravel()
    )
    process = image.create_group("process_1")
    process.create_dataset("algorithm", data=reconstruction.algorithm)
    process.create_dataset("settings_json", data=settings_json)


def _write_contents(
    f: h5py.File,
    dataset: PtychoDataset,
    reconstruction: Reconstruction | None,
    metadata_json: str,
    settings_json: str | None,
    compression: str | None,
) -> None:
    patterns = np.asarray(dataset.patterns)
    n, h, w = patterns.shape
    f.create_dataset("cxi_version", data=np.int64(CXI_VERSION))
    entry = f.create_group(ENTRY)
    entry.create_dataset("program_name", data=f"bluesky-ptychonn {__version__}")
    entry.create_dataset("metadata_json", data=metadata_json)

    detector = f.create_group(DETECTOR)
    data = detector.create_dataset(
        "data",
        data=patterns,
        chunks=(1, h, w),
        compression=compression,
        shuffle=compression is not None,
    )
    data.attrs["axes"] = "translation:y:x"
    _write_scalar(detector, "distance", dataset.distance_m, "m")
    _write_scalar(detector, "x_pixel_size", dataset.detector_pixel_size_m, "m")
    _write_scalar(detector, "y_pixel_size", dataset.detector_pixel_size_m, "m")
    p = float(dataset.detector_pixel_size_m)
    basis = detector.create_dataset("basis_vectors", data=np.array([[0, -p, 0], [-p, 0, 0]]))
    basis.attrs["units"] = "m"
    if dataset.valid_mask is not None:
        valid = np.asarray(dataset.valid_mask, dtype=bool)
        mask = np.where(valid, 0, PIXEL_IS_INVALID).astype(np.uint32)
        detector.create_dataset("mask", data=mask)

    source = f.create_group(SOURCE)
    _write_scalar(source, "energy", _joules_from_ev(dataset.energy_ev), "J")
    _write_scalar(source, "wavelength", HC_EV_M / float(dataset.energy_ev), "m")
    if dataset.probe is not None:
        source.create_dataset("illumination", data=np.asarray(dataset.probe))

    translation = f.create_dataset(
        TRANSLATION_PATH, data=_translation_xyz(as_positions_m(dataset.positions_m))
    )
    translation.attrs["units"] = "m"
    translation.attrs["axes"] = "x, y, z: beam position on the object"

    if dataset.ground_truth is not None:
        gt = f.create_group(GROUND_TRUTH)
        gt.create_dataset("object", data=np.asarray(dataset.ground_truth.array))
        _write_scalar(gt, "pixel_size", dataset.ground_truth.pixel_size_m, "m")
        origin = gt.create_dataset(
            "origin_m", data=np.asarray(dataset.ground_truth.origin_m, dtype=np.float64)
        )
        origin.attrs["units"] = "m"
        origin.attrs["axes"] = "y, x: centre of pixel [0, 0]"

    f.create_group(f"{ENTRY}/data_1")
    f[DATA_LINK_PATH] = h5py.SoftLink(DATA_PATH)

    if reconstruction is not None:
        assert settings_json is not None
        _write_image_group(entry, "image_1", reconstruction, settings_json)


def write_cxi(
    path: str | os.PathLike[str],
    dataset: PtychoDataset,
    reconstruction: Reconstruction | None = None,
    *,
    overwrite: bool = False,
    compression: str | None = "gzip",
) -> Path:
    """Write a scan (and optionally a reconstruction as ``/entry_1/image_1``) to a CXI file.

    The file is written to a temporary file in the same folder and renamed into place, so a
    failure never leaves a half-written file at ``path``. Everything is validated first.

    Args:
        path: the .cxi file to create.
        dataset: patterns (dtype kept), positions (y, x) m, energy eV, distance m, detector
            pixel size m, optional probe, valid_mask, ground truth and metadata.
        reconstruction: written as ``/entry_1/image_1`` when given.
        overwrite: replace an existing file; otherwise FileExistsError.
        compression: "gzip" (level 4 with shuffle), "lzf" or None, for the patterns, which are
            chunked one frame per chunk.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        TypeError: metadata or settings are not JSON-serialisable (key path named).
        ValueError: inconsistent data set (shapes, counts, non-positive geometry), NaN or
            infinity in metadata, unknown compression.
    """
    path = Path(path)
    if compression not in _COMPRESSIONS:
        raise ValueError(f"compression must be one of {_COMPRESSIONS}, got {compression!r}")
    if not isinstance(dataset, PtychoDataset):
        raise TypeError(f"expected a PtychoDataset, got {type(dataset).__name__}")
    _validate_dataset(dataset)
    metadata_json = _to_json(dataset.metadata, "metadata")
    settings_json = None
    if reconstruction is not None:
        settings_json = _validate_reconstruction(reconstruction)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")

    # A hidden temporary file next to the target, created by h5py so it gets the usual
    # permissions (tempfile.mkstemp would make it private to the owner).
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with h5py.File(tmp, "x") as f:
            _write_contents(f, dataset, reconstruction, metadata_json, settings_json, compression)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:  # atomic "create if absent": fails if someone created `path` meanwhile
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
            except OSError:  # file system without hard links
                if path.exists():
                    raise FileExistsError(
                        f"{path} exists; pass overwrite=True to replace it"
                    ) from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _image_indices(entry: h5py.Group) -> list[int]:
    indices = []
    for name in entry:
        match = _IMAGE_RE.match(name)
        if match and isinstance(entry.get(name), h5py.Group):
            indices.append(int(match.group(1)))
    return sorted(indices)


def write_reconstruction(
    path: str | os.PathLike[str],
    reconstruction: Reconstruction,
    *,
    image_index: int | None = None,
) -> str:
    """Add a reconstruction to an existing CXI file as a new ``/entry_1/image_K`` group.

    Existing groups are never modified: with ``image_index=None`` the group is ``image_K`` with
    K one more than the highest existing index (``image_1`` in a file without images,
    ``image_2`` in the reference file whose ``image_1`` holds only an initial probe). If
    writing fails half-way, the new group is removed again.

    Args:
        path: an existing CXI file with ``/entry_1``.
        reconstruction: object (complex, pixel size m, origin (y, x) m), optional probe and
            refined positions (y, x) m, error history, algorithm name, JSON settings.
        image_index: K of the group to create (>= 1); it must not exist yet.

    Returns:
        The name of the new group, e.g. ``"/entry_1/image_2"``.

    Raises:
        CXIFormatError: not an HDF5 file, or no ``/entry_1`` group.
        ValueError: ``image_index`` < 1 or that group exists.
        TypeError: settings are not JSON-serialisable.
    """
    path = Path(path)
    settings_json = _validate_reconstruction(reconstruction)
    if image_index is not None and (
        isinstance(image_index, bool) or not isinstance(image_index, int) or image_index < 1
    ):
        raise ValueError(f"image_index must be an int >= 1 or None, got {image_index!r}")
    _check_hdf5(path)
    with h5py.File(path, "r+") as f:
        entry = f.get(ENTRY)
        if not isinstance(entry, h5py.Group):
            raise CXIFormatError(f"{path}: no {ENTRY} group; is it a CXI file?")
        if image_index is None:
            image_index = max(_image_indices(entry), default=0) + 1
        name = f"image_{image_index}"
        if name in entry:
            raise ValueError(f"{path}: {ENTRY}/{name} exists already; choose another image_index")
        try:
            _write_image_group(entry, name, reconstruction, settings_json)
        except BaseException:
            if name in entry:
                del entry[name]
            raise
    return f"{ENTRY}/{name}"


def write_phase_uncertainty(
    path: str | os.PathLike[str], sigma_rad: np.ndarray, *, image_index: int = 1
) -> str:
    """Add a phase uncertainty map to ``/entry_1/image_K`` as ``phase_uncertainty``.

    Args:
        path: a CXI file whose ``image_K`` holds the object (``data``).
        sigma_rad: (R, C) one standard deviation of the phase (rad) on the object's grid; NaN
            where nothing was measured.
        image_index: K.

    Raises:
        CXIFormatError: no such image group with ``data``.
        ValueError: a map of another shape than the object, or one already there.
    """
    path = Path(path)
    sigma = np.asarray(sigma_rad, dtype=np.float32)
    _check_hdf5(path)
    group = f"{ENTRY}/image_{int(image_index)}"
    with h5py.File(path, "r+") as f:
        data = _dataset(f, f"{group}/data")
        if data is None:
            raise CXIFormatError(f"{path}: no {group}/data to put a phase uncertainty beside")
        if sigma.shape != data.shape:
            raise ValueError(
                f"phase uncertainty {sigma.shape} does not match the object {data.shape}"
            )
        if "phase_uncertainty" in f[group]:
            raise ValueError(f"{path}: {group}/phase_uncertainty exists already")
        written = f[group].create_dataset("phase_uncertainty", data=sigma)
        written.attrs["units"] = "rad"
        written.attrs["meaning"] = "one standard deviation of the phase; NaN: not measured"
    return f"{group}/phase_uncertainty"


# ----------------------------------------------------------------------------------------------
# Reading


def _check_hdf5(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not h5py.is_hdf5(path):
        raise CXIFormatError(f"{path} is not an HDF5 (CXI) file")


def _dataset(f: h5py.File, name: str) -> h5py.Dataset | None:
    """The dataset at ``name`` (following soft links), or None if absent or dangling."""
    try:
        obj = f.get(name)
    except (KeyError, ValueError):
        return None
    return obj if isinstance(obj, h5py.Dataset) else None


def _read_float(f: h5py.File, path: Path, name: str) -> float | None:
    ds = _dataset(f, name)
    if ds is None:
        return None
    try:
        value = float(np.asarray(ds[()], dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError) as exc:
        raise CXIFormatError(f"{path}: {name} is not a number ({exc})") from exc
    if not (math.isfinite(value) and value > 0):
        raise CXIFormatError(f"{path}: {name} must be a positive number, got {value!r}")
    return value


def _read_str(ds: h5py.Dataset) -> str:
    value = ds[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _read_json(f: h5py.File, path: Path, name: str) -> dict[str, Any]:
    ds = _dataset(f, name)
    if ds is None:
        return {}
    try:
        value = json.loads(_read_str(ds))
    except json.JSONDecodeError as exc:
        raise CXIFormatError(f"{path}: {name} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise CXIFormatError(f"{path}: {name} must hold a JSON object")
    return value


def _positions_from_translation(
    translation: np.ndarray, path: Path, name: str, sign: int
) -> np.ndarray:
    if translation.ndim != 2 or translation.shape[1] not in (2, 3):
        raise CXIFormatError(
            f"{path}: {name} must have shape (N, 3) (x, y, z metres), got {translation.shape}"
        )
    positions = np.empty((translation.shape[0], 2), dtype=np.float64)
    positions[:, 0] = translation[:, 1]
    positions[:, 1] = translation[:, 0]
    if sign == -1:
        positions = -positions
    if not np.all(np.isfinite(positions)):
        bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
        raise CXIFormatError(f"{path}: {name} rows {bad[:20].tolist()} are NaN or infinite")
    return positions


def _non_finite_frames(patterns: np.ndarray, block: int = 256) -> np.ndarray:
    if patterns.dtype.kind not in "fc":
        return np.zeros(0, dtype=np.int64)
    bad = [
        start + np.flatnonzero(~np.isfinite(patterns[start : start + block]).all(axis=(1, 2)))
        for start in range(0, patterns.shape[0], block)
    ]
    return np.concatenate(bad)


def _detector_pixel_size(f: h5py.File, path: Path) -> float:
    x = _read_float(f, path, f"{DETECTOR}/x_pixel_size")
    y = _read_float(f, path, f"{DETECTOR}/y_pixel_size")
    if x is None and y is None:
        raise CXIFormatError(f"{path}: missing {DETECTOR}/x_pixel_size and {DETECTOR}/y_pixel_size")
    if x is not None and y is not None and not math.isclose(x, y, rel_tol=_SQUARE_RTOL):
        raise CXIFormatError(
            f"{path}: non-square detector pixels (x_pixel_size={x!r} m, y_pixel_size={y!r} m) "
            "are not supported"
        )
    return x if x is not None else y  # type: ignore[return-value]


def _valid_mask(f: h5py.File, path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    ds = _dataset(f, f"{DETECTOR}/mask")
    if ds is None:
        return None
    mask = np.asarray(ds[()])
    if mask.shape[-2:] != shape or mask.ndim not in (2, 3):
        raise CXIFormatError(
            f"{path}: {DETECTOR}/mask has shape {mask.shape}, patterns are {shape}"
        )
    if mask.dtype.kind == "b":
        bad = mask
    elif mask.dtype.kind in "iu":
        bad = (mask.astype(np.int64) & CXI_BAD_PIXEL_BITS) != 0
    else:
        raise CXIFormatError(
            f"{path}: {DETECTOR}/mask must be an integer bitmask, got {mask.dtype}"
        )
    if bad.ndim == 3:
        bad = bad.any(axis=0)
    return ~bad


def read_cxi(
    path: str | os.PathLike[str],
    *,
    translation_sign: int = 1,
    allow_nan: bool = False,
) -> PtychoDataset:
    """Read a ptychography scan from a CXI file into a `PtychoDataset` (package conventions).

    Args:
        path: the CXI file.
        translation_sign: +1 when the file's translations are the beam position on the object
            (CXI, tike, this package's writer), -1 when they are the sample stage displacement.
        allow_nan: return patterns holding NaN or infinite values instead of failing.

    Returns:
        patterns (N, H, W) with the file's dtype, positions (N, 2) (y, x) m, energy in eV,
        distance m, detector pixel size m, probe, valid_mask, ground truth and metadata (see
        the module docstring for where each comes from).

    Raises:
        FileNotFoundError: no such file.
        CXIFormatError: not HDF5; missing patterns, translations, energy, distance or pixel
            size; inconsistent shapes or counts; NaN/infinite patterns (frames listed) unless
            ``allow_nan``.
        ValueError: ``translation_sign`` is not +1 or -1.
    """
    if isinstance(translation_sign, bool) or translation_sign not in (1, -1):
        raise ValueError(f"translation_sign must be +1 or -1, got {translation_sign!r}")
    path = Path(path)
    _check_hdf5(path)
    with h5py.File(path, "r") as f:
        data = _dataset(f, DATA_PATH)
        data_name = DATA_PATH
        if data is None:
            data = _dataset(f, DATA_LINK_PATH)
            data_name = DATA_LINK_PATH
        if data is None:
            raise CXIFormatError(f"{path}: missing {DATA_PATH} (and no {DATA_LINK_PATH})")
        if data.ndim != 3 or data.shape[0] == 0:
            raise CXIFormatError(
                f"{path}: {data_name} must be a non-empty (N, H, W) stack, got shape {data.shape}"
            )
        if data.dtype.kind not in "biuf":
            raise CXIFormatError(f"{path}: {data_name} must be real numbers, got {data.dtype}")
        n, h, w = data.shape

        translation_ds = _dataset(f, TRANSLATION_PATH)
        if translation_ds is None:
            raise CXIFormatError(f"{path}: missing {TRANSLATION_PATH}")
        positions = _positions_from_translation(
            np.asarray(translation_ds[()], dtype=np.float64),
            path,
            TRANSLATION_PATH,
            translation_sign,
        )
        if positions.shape[0] != n:
            raise CXIFormatError(
                f"{path}: {TRANSLATION_PATH} has {positions.shape[0]} positions but "
                f"{data_name} has {n} patterns"
            )

        energy_j = _read_float(f, path, f"{SOURCE}/energy")
        if energy_j is not None:
            energy_ev = energy_ev_from_joules(energy_j)
        else:
            wavelength = _read_float(f, path, f"{SOURCE}/wavelength")
            if wavelength is None:
                raise CXIFormatError(
                    f"{path}: missing {SOURCE}/energy (J) and {SOURCE}/wavelength (m)"
                )
            energy_ev = HC_EV_M / wavelength
        distance = _read_float(f, path, f"{DETECTOR}/distance")
        if distance is None:
            raise CXIFormatError(f"{path}: missing {DETECTOR}/distance")
        pixel_size = _detector_pixel_size(f, path)
        valid_mask = _valid_mask(f, path, (h, w))

        probe = None
        for name in PROBE_PATHS:
            ds = _dataset(f, name)
            if ds is not None:
                probe = np.asarray(ds[()])
                if probe.shape[-2:] != (h, w) or probe.ndim not in (2, 3):
                    raise CXIFormatError(
                        f"{path}: {name} has shape {probe.shape}, patterns are {(h, w)}"
                    )
                break

        ground_truth = None
        gt_object = _dataset(f, f"{GROUND_TRUTH}/object")
        if gt_object is not None:
            gt_pixel = _read_float(f, path, f"{GROUND_TRUTH}/pixel_size")
            if gt_pixel is None:
                raise CXIFormatError(f"{path}: missing {GROUND_TRUTH}/pixel_size")
            origin_ds = _dataset(f, f"{GROUND_TRUTH}/origin_m")
            origin = (0.0, 0.0) if origin_ds is None else tuple(np.asarray(origin_ds[()]))
            ground_truth = ComplexImage(np.asarray(gt_object[()]), gt_pixel, origin)

        metadata = _read_json(f, path, METADATA_PATH)
        patterns = np.asarray(data[()])

    if not allow_nan:
        bad = _non_finite_frames(patterns)
        if bad.size:
            shown = ", ".join(str(i) for i in bad[:20]) + (" ..." if bad.size > 20 else "")
            raise CXIFormatError(
                f"{path}: {bad.size} of {n} patterns in {data_name} hold NaN or infinite values "
                f"(frames {shown}); pass allow_nan=True to read them anyway"
            )
    try:
        return PtychoDataset(
            patterns=patterns,
            positions_m=positions,
            energy_ev=energy_ev,
            distance_m=distance,
            detector_pixel_size_m=pixel_size,
            probe=probe,
            valid_mask=valid_mask,
            ground_truth=ground_truth,
            metadata=metadata,
        )
    except ValueError as exc:
        raise CXIFormatError(f"{path}: {exc}") from exc


def read_reconstruction(
    path: str | os.PathLike[str], image_index: int | None = None
) -> Reconstruction:
    """Read a reconstruction from ``/entry_1/image_K`` of a CXI file.

    Args:
        path: the CXI file.
        image_index: K; None reads the highest-numbered ``image_K`` that has a ``data`` dataset.

    Returns:
        The object (pixel size from ``x_pixel_size``, origin (y, x) m, default (0, 0)), probe,
        positions (y, x) m from ``translation`` (beam positions), error history, algorithm
        ("unknown" when absent) and settings.

    Raises:
        FileNotFoundError: no such file.
        CXIFormatError: not HDF5, no image group with ``data``, missing pixel size,
            non-square pixels or a malformed item.
    """
    path = Path(path)
    _check_hdf5(path)
    with h5py.File(path, "r") as f:
        entry = f.get(ENTRY)
        if not isinstance(entry, h5py.Group):
            raise CXIFormatError(f"{path}: no {ENTRY} group; is it a CXI file?")
        if image_index is None:
            with_data = [k for k in _image_indices(entry) if f"image_{k}/data" in entry]
            if not with_data:
                raise CXIFormatError(
                    f"{path}: no {ENTRY}/image_K group with a data dataset (no reconstruction)"
                )
            image_index = with_data[-1]
        group = f"{ENTRY}/image_{image_index}"
        data = _dataset(f, f"{group}/data")
        if data is None:
            raise CXIFormatError(f"{path}: missing {group}/data")
        array = np.asarray(data[()])
        if array.ndim != 2:
            raise CXIFormatError(f"{path}: {group}/data must be 2-D, got shape {array.shape}")
        x = _read_float(f, path, f"{group}/x_pixel_size")
        y = _read_float(f, path, f"{group}/y_pixel_size")
        if x is None and y is None:
            raise CXIFormatError(f"{path}: missing {group}/x_pixel_size")
        if x is not None and y is not None and not math.isclose(x, y, rel_tol=_SQUARE_RTOL):
            raise CXIFormatError(f"{path}: non-square pixels in {group} ({x!r}, {y!r} m)")
        pixel_size = x if x is not None else y
        origin_ds = _dataset(f, f"{group}/origin_m")
        origin = (0.0, 0.0) if origin_ds is None else tuple(np.asarray(origin_ds[()]))
        probe_ds = _dataset(f, f"{group}/probe")
        probe = None if probe_ds is None else np.asarray(probe_ds[()])
        translation_ds = _dataset(f, f"{group}/translation")
        positions = None
        if translation_ds is not None:
            positions = _positions_from_translation(
                np.asarray(translation_ds[()], dtype=np.float64),
                path,
                f"{group}/translation",
                1,
            )
        history_ds = _dataset(f, f"{group}/error_history")
        history = np.zeros(0) if history_ds is None else np.asarray(history_ds[()])
        algorithm_ds = _dataset(f, f"{group}/process_1/algorithm")
        algorithm = "unknown" if algorithm_ds is None else _read_str(algorithm_ds)
        settings = _read_json(f, path, f"{group}/process_1/settings_json")
    try:
        return Reconstruction(
            object=ComplexImage(array, pixel_size, origin),  # type: ignore[arg-type]
            probe=probe,
            positions_m=positions,
            error_history=history,
            algorithm=algorithm,
            settings=settings,
        )
    except ValueError as exc:
        raise CXIFormatError(f"{path}: {exc}") from exc
