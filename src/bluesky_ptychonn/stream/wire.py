"""Versioned multipart message: one JSON header frame, then one raw buffer per array.

Header (UTF-8 JSON object)::

    {"v": 1,                      # wire version
     "kind": "frames",            # frames | results | control | ...
     "run_uid": "…",              # the run the data belong to ("" outside runs)
     "seq": 17,                   # sender's sequence number of this message
     "timestamp": 1.7e9,          # sender's clock, unix seconds, at creation of the data
     "frame_ids": [340, 341],     # detector frame numbers of the batch (first array axis)
     "positions_m": [[y, x], …],  # beam positions in metres, or null
     "model_version": "…",        # results only, else null
     "arrays": [{"name": "frames", "dtype": "<u2", "shape": [2, 128, 128]}, …],
     "extra": {…}}                # small JSON-able annotations

Each array travels as its raw C-ordered bytes in the frame after the header, in the order
of ``arrays``. The decoder validates everything (JSON, version, field types, dtype from an
allow-list of little-endian numeric types, byte counts, size limits, ids matching the batch
axis) and raises `WireError` with the reason; it never evaluates or unpickles anything.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WIRE_VERSION = 1
SUPPORTED_VERSIONS = (1,)
ALLOWED_DTYPES = frozenset(
    np.dtype(name).str
    for name in (
        "uint8", "uint16", "uint32", "int8", "int16", "int32", "int64",
        "float16", "float32", "float64", "complex64", "complex128", "bool",
    )
)  # fmt: skip
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAY_BYTES = 1 << 30
MAX_NDIM = 5
MAX_ARRAYS = 16


class WireError(ValueError):
    """A message that does not follow the wire format; ``reason`` says what is wrong."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Message:
    """One message on the wire.

    Attributes:
        kind: what the message carries ("frames", "results", "control", ...).
        arrays: named arrays; batch data have the batch on axis 0.
        run_uid: the run the data belong to.
        seq: the sender's message sequence number.
        timestamp: unix seconds when the data were created (for latency).
        frame_ids: detector frame numbers, one per entry of the batch axis.
        positions_m: (N, 2) (y, x) beam positions in metres, or None.
        model_version: the model that produced results, or None.
        extra: small JSON-serialisable annotations.
    """

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    run_uid: str = ""
    seq: int = 0
    timestamp: float = field(default_factory=time.time)
    frame_ids: list[int] = field(default_factory=list)
    positions_m: np.ndarray | None = None
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def encode(message: Message) -> list[bytes | memoryview]:
    """The multipart frames of a message: header bytes, then one buffer per array."""
    descriptors = []
    buffers: list[bytes | memoryview] = []
    for name, array in message.arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.str not in ALLOWED_DTYPES:
            raise WireError(f"array {name!r} has dtype {array.dtype} that the wire does not carry")
        descriptors.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape)})
        buffers.append(memoryview(array).cast("B"))
    positions = None
    if message.positions_m is not None:
        positions = np.asarray(message.positions_m, dtype=np.float64).reshape(-1, 2).tolist()
    header = {
        "v": WIRE_VERSION,
        "kind": message.kind,
        "run_uid": message.run_uid,
        "seq": int(message.seq),
        "timestamp": float(message.timestamp),
        "frame_ids": [int(i) for i in message.frame_ids],
        "positions_m": positions,
        "model_version": message.model_version,
        "arrays": descriptors,
        "extra": message.extra,
    }
    return [json.dumps(header, allow_nan=False).encode(), *buffers]


def _expect(condition: bool, reason: str) -> None:
    if not condition:
        raise WireError(reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_header(raw: bytes | memoryview) -> dict[str, Any]:
    _expect(len(raw) <= MAX_HEADER_BYTES, f"header of {len(raw)} bytes exceeds the limit")
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise WireError(f"header is not UTF-8 JSON: {error}") from None
    _expect(isinstance(header, dict), "header is not a JSON object")
    version = header.get("v")
    _expect(version in SUPPORTED_VERSIONS, f"unsupported wire version {version!r}")
    _expect(isinstance(header.get("kind"), str) and header["kind"] != "", "kind must be a string")
    _expect(isinstance(header.get("run_uid", ""), str), "run_uid must be a string")
    _expect(_is_int(header.get("seq", 0)), "seq must be an integer")
    timestamp = header.get("timestamp", 0.0)
    _expect(
        isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
        and math.isfinite(timestamp),
        "timestamp must be a finite number",
    )  # fmt: skip
    frame_ids = header.get("frame_ids", [])
    _expect(
        isinstance(frame_ids, list) and all(_is_int(i) for i in frame_ids),
        "frame_ids must be a list of integers",
    )
    model_version = header.get("model_version")
    _expect(model_version is None or isinstance(model_version, str), "bad model_version")
    _expect(isinstance(header.get("extra", {}), dict), "extra must be an object")
    arrays = header.get("arrays", [])
    _expect(isinstance(arrays, list) and len(arrays) <= MAX_ARRAYS, "arrays must be a short list")
    return header


def _array_descriptor(descriptor: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    _expect(isinstance(descriptor, dict), "array descriptor is not an object")
    name, dtype, shape = descriptor.get("name"), descriptor.get("dtype"), descriptor.get("shape")
    _expect(isinstance(name, str) and name != "", "array name must be a non-empty string")
    _expect(isinstance(dtype, str) and dtype in ALLOWED_DTYPES, f"array {name!r}: bad dtype")
    _expect(
        isinstance(shape, list) and len(shape) <= MAX_NDIM
        and all(_is_int(n) and 0 <= n <= 1 << 24 for n in shape),
        f"array {name!r}: bad shape {shape!r}",
    )  # fmt: skip
    return name, np.dtype(dtype), tuple(shape)


def decode(frames: list[bytes | memoryview]) -> Message:
    """A `Message` from multipart frames; raises `WireError` naming what is wrong.

    Arrays are read-only views on the received buffers (no copy).
    """
    _expect(isinstance(frames, list | tuple) and len(frames) >= 1, "empty message")
    header = _parse_header(frames[0])
    descriptors = header.get("arrays", [])
    _expect(
        len(frames) == 1 + len(descriptors),
        f"header lists {len(descriptors)} arrays but {len(frames) - 1} buffers arrived",
    )
    arrays: dict[str, np.ndarray] = {}
    for descriptor, buffer in zip(descriptors, frames[1:], strict=True):
        name, dtype, shape = _array_descriptor(descriptor)
        _expect(name not in arrays, f"array {name!r} appears twice")
        expected = math.prod(shape) * dtype.itemsize
        _expect(expected <= MAX_ARRAY_BYTES, f"array {name!r} of {expected} bytes is too large")
        size = memoryview(buffer).nbytes
        _expect(size == expected, f"array {name!r}: {size} bytes for shape {shape} {dtype}")
        arrays[name] = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    frame_ids = header.get("frame_ids", [])
    batch_sizes = {a.shape[0] for a in arrays.values() if a.ndim >= 1}
    if frame_ids and batch_sizes:
        _expect(
            batch_sizes == {len(frame_ids)},
            f"{len(frame_ids)} frame ids for arrays with batch sizes {sorted(batch_sizes)}",
        )
    positions = header.get("positions_m")
    positions_m = None
    if positions is not None:
        try:
            positions_m = np.asarray(positions, dtype=np.float64)
        except (TypeError, ValueError):
            raise WireError("positions_m must be a list of [y, x] numbers") from None
        _expect(
            positions_m.ndim == 2 and positions_m.shape[1:] == (2,),
            "positions_m must be a list of [y, x] pairs",
        )
        _expect(
            not frame_ids or positions_m.shape[0] == len(frame_ids),
            f"{positions_m.shape[0]} positions for {len(frame_ids)} frame ids",
        )
    return Message(
        kind=header["kind"],
        arrays=arrays,
        run_uid=header.get("run_uid", ""),
        seq=header.get("seq", 0),
        timestamp=float(header.get("timestamp", 0.0)),
        frame_ids=list(frame_ids),
        positions_m=positions_m,
        model_version=header.get("model_version"),
        extra=header.get("extra", {}),
    )
