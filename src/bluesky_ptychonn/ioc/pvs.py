"""PV definitions and the one interface the simulated hardware talks through.

The simulated hardware (`hardware.py`) declares its PVs as `PVSpec`s and talks to a
`PVDatabase`: ``add`` a PV (with an optional put handler, the "record processing" that runs
when a client writes it), ``post`` a new value (the IOC updating a record), ``value`` (read
what is stored). Two databases implement it: `softpv.SoftPVDatabase`, in process, read by the
devices' in-process control layer, and `server.CaprotoPVDatabase`, served over Channel Access.
The hardware cannot tell them apart, so the in-process twins and the IOC behave the same.

Value conventions shared by both databases: enums are stored and handed to put handlers as
integer indices (clients may write the index or the string); strings are `str`; arrays are
1-D numpy arrays (areaDetector's ``ArrayData`` is a flattened frame, row-major).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

KINDS = ("float", "int", "enum", "string", "float_array", "int16_array")

PutHandler = Callable[[Any], Any]
"""Called with the normalised value a client wrote; returns the value to store (None: store
the written value) or raises ValueError to refuse the put."""


@dataclass(frozen=True)
class PVSpec:
    """One process variable.

    Attributes:
        name: full PV name, e.g. ``"PTY:EIG:cam1:AcquireTime"``.
        kind: one of `KINDS`.
        value: initial value (enum: index or string).
        enum_strs: the states of an enum PV.
        units: engineering units reported with the value (EPICS ``EGU``).
        precision: display precision.
        limits: (low, high) control limits; None for none.
        max_length: element count of arrays and strings (EPICS ``NELM``); strings of at
            most 40 characters are string records (DBR_STRING), longer ones char waveforms.
        writable: False for read-only (``_RBV``) PVs.
    """

    name: str
    kind: str
    value: Any
    enum_strs: tuple[str, ...] = ()
    units: str = ""
    precision: int = 0
    limits: tuple[float, float] | None = None
    max_length: int = 1
    writable: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"PV {self.name}: unknown kind {self.kind!r}; known: {KINDS}")
        if self.kind == "enum" and not self.enum_strs:
            raise ValueError(f"enum PV {self.name} needs enum_strs")

    def normalise(self, value: Any) -> Any:
        """The stored form of a value written to this PV (see the module docstring)."""
        return normalise(self, value)


def normalise(spec: PVSpec, value: Any) -> Any:
    kind = spec.kind
    if kind == "enum":
        if isinstance(value, (bytes, np.bytes_)):
            value = value.decode()
        if isinstance(value, str):
            if value in spec.enum_strs:
                return spec.enum_strs.index(value)
            try:
                value = int(value)
            except ValueError:
                raise ValueError(
                    f"{spec.name}: {value!r} is not one of {list(spec.enum_strs)}"
                ) from None
        index = int(np.asarray(value).ravel()[0]) if np.ndim(value) else int(value)
        if not 0 <= index < len(spec.enum_strs):
            raise ValueError(f"{spec.name}: enum index {index} outside 0..{len(spec.enum_strs)}")
        return index
    if kind == "string":
        if isinstance(value, (bytes, np.bytes_)):
            return value.decode("latin-1").rstrip("\x00")
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            return bytes(value.astype(np.uint8)).decode("latin-1").split("\x00")[0]
        return str(value)
    if kind == "float":
        return float(np.asarray(value).ravel()[0]) if np.ndim(value) else float(value)
    if kind == "int":
        return int(np.asarray(value).ravel()[0]) if np.ndim(value) else int(value)
    dtype = np.float64 if kind == "float_array" else np.int16
    array = np.atleast_1d(np.asarray(value))
    if kind == "int16_array" and array.dtype != np.int16:
        array = (array.astype(np.int64) & 0xFFFF).astype(np.uint16).view(np.int16)
    return np.ascontiguousarray(array[: spec.max_length], dtype=dtype)


class PVDatabase(Protocol):
    """What the simulated hardware needs from a PV server."""

    def add(self, spec: PVSpec, on_put: PutHandler | None = None) -> None: ...

    def alias(self, alias: str, name: str) -> None: ...

    def post(self, name: str, value: Any, *, limits: tuple[float, float] | None = None) -> None:
        """Store and publish a new value (and, optionally, new control limits)."""

    def value(self, name: str) -> Any: ...


def add_ro(db: PVDatabase, name: str, kind: str, value: Any, **spec: Any) -> None:
    """A read-only PV (the ``_RBV`` records of areaDetector)."""
    db.add(PVSpec(name, kind, value, writable=False, **spec))


def add_rw(
    db: PVDatabase,
    name: str,
    kind: str,
    value: Any,
    on_put: PutHandler | None = None,
    **spec: Any,
) -> None:
    """A setting with its readback: ``name`` (writable) and ``name_RBV``.

    The handler runs first; the value it returns (or the written value) is stored in both,
    as an areaDetector driver reports the value it actually applied.
    """
    add_ro(db, f"{name}_RBV", kind, value, **spec)

    def handle(new: Any) -> Any:
        applied = on_put(new) if on_put is not None else None
        applied = new if applied is None else applied
        db.post(f"{name}_RBV", applied)
        return applied

    db.add(PVSpec(name, kind, value, **spec), handle)
