"""Typed payloads of the wire's messages: what each kind carries, checked where it arrives.

`wire.Message` is the envelope (a JSON header and raw arrays; `wire.decode` checks the format).
A payload is what a message of one kind means, with one name per field:

=============  ==============================================================================
kind           payload
=============  ==============================================================================
``frames``     `FramesPayload`: detector frames (N, H, W) for the endpoint, their ids,
               optional (N, 2) (y, x) beam positions in metres.
``results``    `ResultsPayload`: phase (N, H, W) rad and amplitude patches of those frames,
               creation times, positions, model version, patch pixel scale, and an optional
               per-pixel phase uncertainty (rad) of models that estimate one.
``rejected``   `RejectedPayload`: frames the endpoint refused (``dropped``: its buffer was
               full) and why.
``mosaic``     `MosaicPayload`: a live-mosaic snapshot for dashboards.
=============  ==============================================================================

``Payload.from_message`` checks a received message (arrays present, shapes agreeing with the
ids, dtypes of the right kind, fields of the right type) and raises `PayloadError` (a
`WireError`, so a ``ValueError``) naming the kind and the field; ``to_message`` makes the
envelope. `parse` picks the payload by kind. The endpoint and its senders build their messages
here, and the stitcher and the live view read them here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .wire import Message, WireError

__all__ = [
    "UNCERTAINTY_KEY",
    "FramesPayload",
    "MosaicPayload",
    "PayloadError",
    "RejectedPayload",
    "ResultsPayload",
    "parse",
]

from ..intervals import FIELD as UNCERTAINTY_KEY  # the optional array of uncertainty models

RESIDUAL_KEY = "physics_residual"  # the optional per-frame residual of the physics check


class PayloadError(WireError):
    """A message whose content does not match its kind; the reason names the field."""


def _fail(kind: str, reason: str) -> PayloadError:
    return PayloadError(f"{kind} message: {reason}")


def _batch(kind: str, arrays: dict[str, np.ndarray], name: str, n: int, *, ndim: int,
           kinds: str, required: bool = True) -> np.ndarray | None:  # fmt: skip
    """Array ``name`` with ``ndim`` dimensions, ``n`` entries on axis 0, dtype kind in
    ``kinds`` (numpy kind letters)."""
    array = arrays.get(name)
    if array is None:
        if required:
            raise _fail(kind, f"array {name!r} is missing (it has {sorted(arrays)})")
        return None
    if array.ndim != ndim or array.shape[0] != n:
        raise _fail(kind, f"array {name!r} has shape {array.shape}, expected {ndim}-D with "
                    f"{n} entries on axis 0 (one per frame id)")  # fmt: skip
    if array.dtype.kind not in kinds:
        raise _fail(kind, f"array {name!r} has dtype {array.dtype}")
    return array


def _positions(kind: str, message: Message, n: int) -> np.ndarray | None:
    positions = message.positions_m
    if positions is not None and positions.shape != (n, 2):
        raise _fail(kind, f"positions_m has shape {positions.shape}, expected ({n}, 2)")
    return positions


def _ids(kind: str, message: Message) -> list[int]:
    if not message.frame_ids:
        raise _fail(kind, "no frame ids")
    return list(message.frame_ids)


@dataclass(frozen=True)
class FramesPayload:
    """``frames``: a batch of detector frames for the endpoint.

    Attributes:
        run_uid: the stream the frames belong to (the endpoint device's ``stream_id``).
        frames: (N, H, W) counts (integer or float).
        frame_ids: the detector's frame numbers, one per frame.
        positions_m: (N, 2) (y, x) beam positions in metres, or None.
        timestamp: unix seconds when the frames were made (latency is counted from here).
        seq: the sender's sequence number.
    """

    KIND: ClassVar[str] = "frames"
    run_uid: str
    frames: np.ndarray
    frame_ids: list[int]
    positions_m: np.ndarray | None = None
    timestamp: float = 0.0
    seq: int = 0

    @classmethod
    def from_message(cls, message: Message) -> FramesPayload:
        kind = cls.KIND
        if message.kind != kind:
            raise _fail(kind, f"kind is {message.kind!r}")
        ids = _ids(kind, message)
        frames = _batch(kind, message.arrays, "frames", len(ids), ndim=3, kinds="biufc")
        # (which dtypes a model takes is the endpoint's preprocessing's to say)
        return cls(message.run_uid, frames, ids, _positions(kind, message, len(ids)),
                   message.timestamp, message.seq)  # fmt: skip

    def to_message(self) -> Message:
        return Message(
            kind=self.KIND,
            arrays={"frames": np.ascontiguousarray(self.frames)},
            run_uid=self.run_uid,
            seq=self.seq,
            timestamp=self.timestamp,
            frame_ids=[int(i) for i in self.frame_ids],
            positions_m=None if self.positions_m is None
            else np.asarray(self.positions_m, np.float64),
        )  # fmt: skip


@dataclass(frozen=True)
class ResultsPayload:
    """``results``: the endpoint's patches of a batch of frames.

    Attributes:
        run_uid: the stream of the frames.
        frame_ids: the frames answered, one per patch.
        phase: (N, H, W) float radians.
        amplitude: (N, H, W) float, or None.
        positions_m: (N, 2) (y, x) beam positions in metres, or None.
        model_version: the model that made the patches ("" when unknown).
        pixel_scale: a patch pixel over the frame's object pixel (a crop coarsens it).
        created: (N,) unix seconds when each frame was made, or None.
        phase_uncertainty: (N, H, W) float radians, from models that estimate it, or None.
        physics_residual: (N,) the label-free physics check's residual of each frame (about 0
            when the patch explains its pattern, about 1 when not), or None.
        endpoint: the endpoint's name.
        timestamp: unix seconds when the results were made.
    """

    KIND: ClassVar[str] = "results"
    run_uid: str
    frame_ids: list[int]
    phase: np.ndarray
    amplitude: np.ndarray | None = None
    positions_m: np.ndarray | None = None
    model_version: str = ""
    pixel_scale: float = 1.0
    created: np.ndarray | None = None
    phase_uncertainty: np.ndarray | None = None
    physics_residual: list[float] | None = None
    endpoint: str = ""
    timestamp: float = 0.0

    @classmethod
    def from_message(cls, message: Message) -> ResultsPayload:
        kind = cls.KIND
        if message.kind != kind:
            raise _fail(kind, f"kind is {message.kind!r}")
        ids = _ids(kind, message)
        n, arrays = len(ids), message.arrays
        phase = _batch(kind, arrays, "phase", n, ndim=3, kinds="f")
        others = {
            name: _batch(kind, arrays, name, n, ndim=3, kinds="f", required=False)
            for name in ("amplitude", UNCERTAINTY_KEY)
        }
        for name, array in others.items():
            if array is not None and array.shape != phase.shape:
                raise _fail(kind, f"array {name!r} has shape {array.shape}, phase "
                            f"{phase.shape}")  # fmt: skip
        created = _batch(kind, arrays, "created", n, ndim=1, kinds="f", required=False)
        scale = message.extra.get("pixel_scale", 1.0)
        if not (isinstance(scale, int | float) and not isinstance(scale, bool)
                and math.isfinite(scale) and scale > 0):  # fmt: skip
            raise _fail(kind, f"pixel_scale must be a positive number, got {scale!r}")
        endpoint = message.extra.get("endpoint", "")
        residual = message.extra.get(RESIDUAL_KEY)
        if residual is not None and (
            not isinstance(residual, list)
            or len(residual) != n
            or not all(isinstance(r, int | float) and not isinstance(r, bool) for r in residual)
        ):
            raise _fail(kind, f"{RESIDUAL_KEY} must be {n} numbers, got {residual!r:.80}")
        return cls(
            run_uid=message.run_uid,
            frame_ids=ids,
            phase=phase,
            amplitude=others["amplitude"],
            positions_m=_positions(kind, message, n),
            model_version=message.model_version or "",
            pixel_scale=float(scale),
            created=created,
            phase_uncertainty=others[UNCERTAINTY_KEY],
            physics_residual=None if residual is None else [float(r) for r in residual],
            endpoint=str(endpoint),
            timestamp=message.timestamp,
        )

    def to_message(self) -> Message:
        arrays = {"phase": np.ascontiguousarray(self.phase)}
        if self.amplitude is not None:
            arrays["amplitude"] = np.ascontiguousarray(self.amplitude)
        if self.created is not None:
            arrays["created"] = np.asarray(self.created, dtype=np.float64)
        if self.phase_uncertainty is not None:
            arrays[UNCERTAINTY_KEY] = np.ascontiguousarray(self.phase_uncertainty)
        return Message(
            kind=self.KIND,
            arrays=arrays,
            run_uid=self.run_uid,
            timestamp=self.timestamp,
            frame_ids=[int(i) for i in self.frame_ids],
            positions_m=self.positions_m,
            model_version=self.model_version or None,
            extra={
                "endpoint": self.endpoint,
                "pixel_scale": float(self.pixel_scale),
                **(
                    {}
                    if self.physics_residual is None
                    else {RESIDUAL_KEY: [float(r) for r in self.physics_residual]}
                ),
            },
        )


@dataclass(frozen=True)
class RejectedPayload:
    """``rejected``: frames the endpoint did not infer.

    Attributes:
        run_uid: the stream of the frames.
        frame_ids: the frames refused.
        reason: why (one line).
        dropped: True when the endpoint's buffer was full (the frames were fine).
        endpoint: the endpoint's name.
        timestamp: the frames' creation time, unix seconds.
    """

    KIND: ClassVar[str] = "rejected"
    run_uid: str
    frame_ids: list[int]
    reason: str
    dropped: bool = False
    endpoint: str = ""
    timestamp: float = 0.0

    @classmethod
    def from_message(cls, message: Message) -> RejectedPayload:
        kind = cls.KIND
        if message.kind != kind:
            raise _fail(kind, f"kind is {message.kind!r}")
        reason, dropped = message.extra.get("reason"), message.extra.get("dropped", False)
        if not isinstance(reason, str) or not isinstance(dropped, bool):
            raise _fail(kind, "extra needs a 'reason' string and a 'dropped' flag")
        return cls(message.run_uid, _ids(kind, message), reason, dropped,
                   str(message.extra.get("endpoint", "")), message.timestamp)  # fmt: skip

    def to_message(self) -> Message:
        return Message(
            kind=self.KIND,
            run_uid=self.run_uid,
            timestamp=self.timestamp,
            frame_ids=[int(i) for i in self.frame_ids],
            extra={"reason": self.reason, "dropped": self.dropped, "endpoint": self.endpoint},
        )


@dataclass(frozen=True)
class MosaicPayload:
    """``mosaic``: a snapshot of a live mosaic (`callbacks.live_view.LiveMosaicView`).

    Attributes:
        run_uid: the run.
        phase, amplitude, weights: (R, C) float arrays (phase in rad).
        pixel_size_m: the canvas pixel, m.
        origin_m: (y, x) of pixel [0, 0]'s centre, m.
        frames_used: patches in it.
        model_version: the model of the patches ("" when unknown).
        timestamp: unix seconds of the snapshot.
    """

    KIND: ClassVar[str] = "mosaic"
    run_uid: str
    phase: np.ndarray
    amplitude: np.ndarray
    weights: np.ndarray
    pixel_size_m: float
    origin_m: tuple[float, float]
    frames_used: int
    model_version: str = ""
    timestamp: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, message: Message) -> MosaicPayload:
        kind = cls.KIND
        if message.kind != kind:
            raise _fail(kind, f"kind is {message.kind!r}")
        arrays = {}
        for name in ("phase", "amplitude", "weights"):
            array = message.arrays.get(name)
            if array is None or array.ndim != 2 or array.dtype.kind != "f":
                raise _fail(kind, f"array {name!r} must be a 2-D float array")
            arrays[name] = array
        if len({a.shape for a in arrays.values()}) != 1:
            raise _fail(kind, "phase, amplitude and weights differ in shape")
        extra = message.extra
        try:
            pixel = float(extra["pixel_size_m"])
            origin = tuple(float(v) for v in extra["origin_m"])
            frames_used = int(extra["frames_used"])
        except (KeyError, TypeError, ValueError):
            raise _fail(kind, "extra needs pixel_size_m, origin_m [y, x] and frames_used") \
                from None  # fmt: skip
        if len(origin) != 2 or not pixel > 0:
            raise _fail(kind, "origin_m must be [y, x] and pixel_size_m positive")
        return cls(message.run_uid, arrays["phase"], arrays["amplitude"], arrays["weights"],
                   pixel, origin, frames_used, message.model_version or "",
                   message.timestamp)  # fmt: skip

    def to_message(self) -> Message:
        return Message(
            kind=self.KIND,
            arrays={"phase": self.phase, "amplitude": self.amplitude, "weights": self.weights},
            run_uid=self.run_uid,
            timestamp=self.timestamp,
            model_version=self.model_version or None,
            extra={"pixel_size_m": float(self.pixel_size_m),
                   "origin_m": [float(v) for v in self.origin_m],
                   "frames_used": int(self.frames_used), **self.extra},
        )  # fmt: skip


Payload = FramesPayload | ResultsPayload | RejectedPayload | MosaicPayload
PAYLOADS: dict[str, type] = {
    p.KIND: p for p in (FramesPayload, ResultsPayload, RejectedPayload, MosaicPayload)
}


def parse(message: Message) -> Payload:
    """The typed payload of a message, by its kind; `PayloadError` for an unknown kind or a
    malformed content."""
    kind = PAYLOADS.get(message.kind)
    if kind is None:
        raise PayloadError(f"unknown message kind {message.kind!r}; known: {sorted(PAYLOADS)}")
    return kind.from_message(message)
