"""Reading Bluesky runs back from Tiled: search, a run as a `PtychoDataset`, CXI-or-Tiled input.

A run written by ``TiledWriter`` is read with plain Tiled clients; this module only adds the
ptychography conventions.

The start document of a ptychography run carries the keys of `documents.PtychographyStart`
(the devices and plans write them; see `dataset_from_run`); older spellings of recorded runs
(``distance_m``, ``positions_keys``, ``sample``) are read through `documents.read_start`, with
a DeprecationWarning:

====================================  ===============================================  ======
key                                   meaning                                          needed
====================================  ===============================================  ======
``energy_ev``                         photon energy, eV                                yes
``detector_distance_m``               sample-to-detector distance, m                   yes
``detector_pixel_size_m``             (binned) detector pixel pitch, m                 yes
``object_pixel_size_m``               object pixel size, m (checked against geometry)  no
``sample_name``                       sample name (searchable)                         no
``scan_pattern``                      "spiral", "raster", "sparse", ...                no
``beam_size_m``                       beam size on the sample, m                       no
``overlap``                           requested overlap ratio                          no
``frames_key``                        data key of the detector frames                  no
``position_keys``                     [y key, x key] of the (y, x) beam positions      no
====================================  ===============================================  ======

Without ``frames_key`` the frames are the one data key of the stream whose readings are 2-D;
without position keys the positions are the readings of the start document's ``motors``
(or of any scalar data key) whose names end in ``y`` and ``x`` (``stage_y``, ``sy``...).
Positions are converted to metres by each data key's ``units`` (m, mm, um, nm; none means
metres) and returned as (y, x), the beam position on the object (``translation_sign=-1`` for
stages that report the sample's displacement).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..dataset import PtychoDataset
from ..documents import REQUIRED_START_KEYS, read_start
from .tiled_catalog import TiledCatalog, connect, open_node

__all__ = [
    "REQUIRED_START_KEYS",
    "add_source_arguments",
    "dataset_from_args",
    "dataset_from_run",
    "find_runs",
    "is_tiled_uri",
    "load_dataset",
    "open_run",
    "sample_of",
]

log = logging.getLogger(__name__)

_LENGTH_UNITS = {
    "m": 1.0,
    "metre": 1.0,
    "meter": 1.0,
    "mm": 1e-3,
    "um": 1e-6,
    "µm": 1e-6,
    "μm": 1e-6,
    "micron": 1e-6,
    "microns": 1e-6,
    "nm": 1e-9,
}
_PIXEL_SIZE_RTOL = 0.01


def _epoch(value: float | str | date | datetime) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # local time, as a person typing a date means it
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).astimezone().timestamp()
    raise TypeError(f"cannot read a time from {value!r}")


def find_runs(
    catalog: TiledCatalog | Any,
    *,
    sample: str | None = None,
    plan: str | None = None,
    since: float | str | date | datetime | None = None,
    until: float | str | date | datetime | None = None,
    **start: Any,
) -> Any:
    """Runs whose start document matches (a Tiled container of runs; iterate ``.values()``).

    Args:
        catalog: a `TiledCatalog` or a container of runs (``from_uri(...)["raw"]``).
        sample: start document ``sample_name`` (runs recorded with the older ``sample`` are
            found when no run has ``sample_name``).
        plan: start document ``plan_name`` (e.g. "list_scan").
        since, until: start time bounds (epoch seconds, ISO 8601 text, date or datetime;
            naive times are local time); ``until`` is exclusive.
        start: more start-document fields that must be equal (``scan_pattern="spiral"``).
    """
    from tiled.queries import Comparison, Key

    runs = catalog.raw if isinstance(catalog, TiledCatalog) else catalog
    if sample is not None:
        by_name = runs.search(Key("start.sample_name") == sample)
        runs = by_name if len(by_name) else runs.search(Key("start.sample") == sample)
    equal = {"plan_name": plan, **start}
    for name, value in equal.items():
        if value is not None:
            runs = runs.search(Key(f"start.{name}") == value)
    if since is not None:
        runs = runs.search(Comparison("ge", "start.time", _epoch(since)))
    if until is not None:
        runs = runs.search(Comparison("lt", "start.time", _epoch(until)))
    return runs


# ----------------------------------------------------------------------------------------------
# a run as a data set


def _scale_to_metres(data_key: dict[str, Any], key: str) -> float:
    units = str(data_key.get("units") or "m").strip()
    scale = _LENGTH_UNITS.get(units) or _LENGTH_UNITS.get(units.lower())
    if scale is None:
        raise ValueError(
            f"position data key {key!r} has units {units!r}; known: {sorted(_LENGTH_UNITS)}"
        )
    return scale


def _frames_key(data_keys: dict[str, Any], start: dict[str, Any]) -> str:
    if start.get("frames_key"):
        return str(start["frames_key"])
    images = [k for k, v in data_keys.items() if len(v.get("shape") or ()) == 2]
    if len(images) != 1:
        raise ValueError(
            f"cannot tell which data key holds the frames (2-D readings: {images or 'none'}); "
            "pass frames_key= or put frames_key in the start document"
        )
    return images[0]


def sample_of(start: dict[str, Any]) -> str | None:
    """The sample name of a start document (``sample_name``; older runs: ``sample``)."""
    return read_start(start, warn=False).get("sample_name")


def _position_keys(data_keys: dict[str, Any], start: dict[str, Any]) -> tuple[str, str]:
    keys = start.get("position_keys")  # normalised by read_start: [y key, x key]
    if keys:
        y_key, x_key = keys
        return str(y_key), str(x_key)
    scalars = [k for k, v in data_keys.items() if not (v.get("shape") or [])]
    motors = [m for m in start.get("motors") or [] if m in scalars]
    for pool in (motors, scalars):
        ys = [k for k in pool if re.search(r"y$", k, re.IGNORECASE)]
        xs = [k for k in pool if re.search(r"x$", k, re.IGNORECASE)]
        if len(ys) == 1 and len(xs) == 1:
            return ys[0], xs[0]
    raise ValueError(
        f"cannot tell which readings are the y and x positions (motors: "
        f"{start.get('motors')}, scalar data keys: {scalars}); pass position_keys=(y, x) or "
        "put position_keys=[y key, x key] in the start document"
    )


def dataset_from_run(
    run: Any,
    *,
    stream: str = "primary",
    frames_key: str | None = None,
    position_keys: tuple[str, str] | None = None,
    translation_sign: int = 1,
    energy_ev: float | None = None,
    distance_m: float | None = None,
    detector_pixel_size_m: float | None = None,
) -> PtychoDataset:
    """A run read from Tiled as a `PtychoDataset` (frames, positions, geometry).

    The geometry comes from the start document (see the module docstring for its keys); the
    keyword arguments override it. Frames may be event data or external files (fly scans):
    Tiled serves both as arrays.

    Raises:
        ValueError: missing geometry, frames or positions that cannot be identified, or
            counts of frames and positions that differ.
    """
    if translation_sign not in (1, -1) or isinstance(translation_sign, bool):
        raise ValueError(f"translation_sign must be +1 or -1, got {translation_sign!r}")
    start = dict(read_start(run.metadata["start"]))
    uid = start.get("uid", "?")
    geometry = {
        "energy_ev": energy_ev if energy_ev is not None else start.get("energy_ev"),
        "detector_distance_m": distance_m
        if distance_m is not None
        else start.get("detector_distance_m"),
        "detector_pixel_size_m": detector_pixel_size_m
        if detector_pixel_size_m is not None
        else start.get("detector_pixel_size_m"),
    }
    missing = [k for k, v in geometry.items() if v is None]
    if missing:
        raise ValueError(
            f"run {uid} lacks {', '.join(missing)} in its start document (needed: "
            f"{', '.join(REQUIRED_START_KEYS)}); pass them as arguments"
        )
    if stream not in run:
        raise ValueError(f"run {uid} has no {stream!r} stream (it has {list(run)})")
    node = run[stream]
    data_keys = dict(node.metadata.get("data_keys") or {})
    frames_key = frames_key or _frames_key(data_keys, start)
    y_key, x_key = position_keys or _position_keys(data_keys, start)
    patterns = np.asarray(node[frames_key].read())
    y = np.asarray(node[y_key].read(), dtype=np.float64) * _scale_to_metres(
        data_keys.get(y_key, {}), y_key
    )
    x = np.asarray(node[x_key].read(), dtype=np.float64) * _scale_to_metres(
        data_keys.get(x_key, {}), x_key
    )
    if not (patterns.shape[0] == y.shape[0] == x.shape[0]):
        raise ValueError(
            f"run {uid}: {patterns.shape[0]} frames ({frames_key!r}) but {y.shape[0]} y and "
            f"{x.shape[0]} x positions ({y_key!r}, {x_key!r})"
        )
    positions = np.stack([y, x], axis=1) * translation_sign
    keep = (
        "scan_pattern",
        "beam_size_m",
        "overlap",
        "object_pixel_size_m",
        "plan_name",
        "scan_id",
        "time",
        "uid",
    )
    metadata = {k: start[k] for k in keep if k in start}
    metadata["sample"] = sample_of(start)
    metadata["tiled"] = {
        "uri": str(run.uri),
        "catalog_uri": str(run.uri).rsplit("/", 2)[0],  # the parent of the runs' container
        "scan_uid": uid,
        "stream": stream,
        "frames_key": frames_key,
        "position_keys": [y_key, x_key],
    }
    dataset = PtychoDataset(
        patterns=patterns,
        positions_m=positions,
        energy_ev=float(geometry["energy_ev"]),
        distance_m=float(geometry["detector_distance_m"]),
        detector_pixel_size_m=float(geometry["detector_pixel_size_m"]),
        metadata=metadata,
    )
    declared = start.get("object_pixel_size_m")
    if declared and not math.isclose(
        float(declared), dataset.object_pixel_size_m, rel_tol=_PIXEL_SIZE_RTOL
    ):
        log.warning(
            "run %s declares object_pixel_size_m=%.4g but its geometry gives %.4g m",
            uid,
            float(declared),
            dataset.object_pixel_size_m,
        )
    return dataset


# ----------------------------------------------------------------------------------------------
# CXI or Tiled


def is_tiled_uri(source: Any) -> bool:
    """True for ``http(s)://`` text (a Tiled node or server address)."""
    return isinstance(source, str) and urlsplit(source).scheme in ("http", "https")


def open_run(uri: str, run: str | None = None, *, api_key: str | None = None) -> Any:
    """A run client: ``uri`` is the run's own node URI, or a server/catalog URI plus ``run``.

    ``run`` may be a full start uid, a partial one (at least 5 characters), a negative index
    (-1: the latest) or a scan_id.
    """
    if run is None:
        return open_node(uri, api_key=api_key)
    catalog = connect(uri, api_key=api_key)
    key: Any = run
    if isinstance(run, str) and re.fullmatch(r"-?\d+", run):
        key = int(run)
    return catalog.raw[key]


def load_dataset(
    source: str | os.PathLike[str] | Any,
    *,
    run: str | None = None,
    api_key: str | None = None,
    translation_sign: int = 1,
    **run_options: Any,
) -> PtychoDataset:
    """A data set from a CXI file or a Tiled run, whichever ``source`` names.

    Args:
        source: a CXI path; a Tiled run node URI
            (``http://127.0.0.1:8000/api/v1/metadata/raw/<uid>``); a Tiled server or
            catalog URI together with ``run``; or a run client.
        run: the run (uid, partial uid, -1, scan_id) when ``source`` is a server URI.
        api_key: Tiled API key (default ``$TILED_API_KEY``).
        translation_sign: +1 when positions are the beam on the object, -1 for stage
            displacements (CXI and Tiled alike).
        run_options: more `dataset_from_run` arguments (``frames_key``, ``stream``...).
    """
    if hasattr(source, "metadata") and hasattr(source, "uri"):
        return dataset_from_run(source, translation_sign=translation_sign, **run_options)
    if is_tiled_uri(source):
        client = open_run(str(source), run, api_key=api_key)
        return dataset_from_run(client, translation_sign=translation_sign, **run_options)
    if run is not None:
        raise ValueError(f"run={run!r} needs a Tiled URI as the source, not {source!r}")
    from .cxi import read_cxi

    return read_cxi(Path(source), translation_sign=translation_sign)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the input options of a command that reads a scan from CXI or Tiled.

    ``DATA`` is a CXI file or a Tiled run URI; or ``--tiled-uri URI --run UID`` names a run on
    a Tiled server (``DATA`` may also be the server URI, with ``--run``). ``--api-key``
    (default ``$TILED_API_KEY``) and ``--translation-sign`` complete them. Read the data set
    with `dataset_from_args`.
    """
    parser.add_argument(
        "data",
        nargs="?",
        help="a CXI file, or a Tiled run URI (http://HOST:PORT/api/v1/metadata/raw/UID)",
    )
    group = parser.add_argument_group("Tiled input")
    group.add_argument("--tiled-uri", help="Tiled server (or catalog) URI; use with --run")
    group.add_argument("--run", help="run uid (or partial uid, -1, scan_id) on the Tiled server")
    group.add_argument("--api-key", help="Tiled API key (default: $TILED_API_KEY)")
    group.add_argument(
        "--translation-sign",
        type=int,
        default=1,
        choices=[1, -1],
        help="-1 when positions are stage displacements instead of beam positions",
    )


def dataset_from_args(args: argparse.Namespace) -> PtychoDataset:
    """The data set that `add_source_arguments`' options name.

    Raises:
        ValueError: neither or both of DATA and --tiled-uri, or --run without a Tiled URI.
    """
    data, tiled_uri = getattr(args, "data", None), getattr(args, "tiled_uri", None)
    if (data is None) == (tiled_uri is None):
        raise ValueError("give the input as DATA (a CXI file or Tiled run URI) or --tiled-uri")
    if tiled_uri is not None and getattr(args, "run", None) is None:
        raise ValueError("--tiled-uri needs --run UID")
    return load_dataset(
        data if data is not None else tiled_uri,
        run=getattr(args, "run", None),
        api_key=getattr(args, "api_key", None),
        translation_sign=getattr(args, "translation_sign", 1),
    )
