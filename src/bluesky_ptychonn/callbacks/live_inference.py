"""`LiveInference`: in-process inference on frames that arrive inside documents.

For modest rates (step scans at up to a few hundred Hz) and for runs replayed from storage:
frames carried in ``event`` / ``event_page`` documents are inferred by an engine in this
process and re-emitted as a derived run (bluesky's `LiveDispatcher`: new start uid,
``original_run_uid``) with a ``ptychonn`` stream whose events hold::

    ptychonn_phase      (H, W) float32, rad
    ptychonn_amplitude  (H, W) float32
    ptychonn_phase_uncertainty  (H, W) float32, rad (only from a model with the uncertainty head)
    beam_y, beam_x      beam position, m
    frame_index         index of the frame in the original run

Subscribe downstream callbacks (e.g. a `LiveStitcher` without a results address) to it:
``inference.subscribe(stitcher)``. The frames' data key and the position keys come from the
start document (``frames_key``, ``position_keys``, written by this package's plans) or the
constructor. Kilohertz fly scans do not carry frames in documents: their frames go to the
inference endpoint out of band.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from bluesky.callbacks.stream import LiveDispatcher
from event_model import unpack_event_page

from ..documents import read_start

log = logging.getLogger(__name__)

STREAM_NAME = "ptychonn"


class LiveInference(LiveDispatcher):
    """Infer each frame of a run in process and emit a derived ``ptychonn`` stream.

    Args:
        engine: an inference engine (``bluesky_ptychonn.inference.load_engine(...)``).
        frames_key: data key of the frames (default: the start document's ``frames_key``).
        position_keys: (y key, x key) of the beam position in metres (default: the start
            document's ``position_keys``).
    """

    def __init__(
        self,
        engine: Any,
        *,
        frames_key: str | None = None,
        position_keys: tuple[str, str] | None = None,
    ):
        super().__init__()
        self.engine = engine
        self._frames_key_override = frames_key
        self._position_keys_override = position_keys
        self.frames_key: str | None = None
        self.position_keys: tuple[str, str] | None = None
        self.frames_inferred = 0

    def start(self, doc: dict[str, Any], _md: dict[str, Any] | None = None) -> None:
        self.frames_key = self._frames_key_override or doc.get("frames_key")
        keys = self._position_keys_override or read_start(doc).get("position_keys")
        self.position_keys = tuple(keys) if keys else None
        self.frames_inferred = 0
        md = {
            "ptychonn_model_version": self.engine.info.model_version,
            # patch pixel size over the frame's object pixel size (a crop coarsens it)
            "ptychonn_pixel_scale": self.engine.preprocessing.object_patch_geometry(1.0)[0],
            **(_md or {}),
        }
        super().start(doc, _md=md)

    def event(self, doc: dict[str, Any], **kwargs: Any) -> None:
        self._infer_events([doc])

    def event_page(self, doc: dict[str, Any]) -> None:
        self._infer_events(list(unpack_event_page(doc)))

    def _infer_events(self, events: list[dict[str, Any]]) -> None:
        if self.frames_key is None:
            raise ValueError("LiveInference: no frames_key in the start document or arguments")
        events = [e for e in events if self.frames_key in e["data"]]
        if not events:
            return
        frames = [np.asarray(e["data"][self.frames_key]) for e in events]
        if any(frame.ndim != 2 for frame in frames):
            log.warning("LiveInference: %s does not hold 2-D frames in events", self.frames_key)
            return
        output = self.engine.infer(np.stack(frames))
        for event, patch in zip(events, output, strict=True):
            data = {
                "ptychonn_phase": patch[0],
                "ptychonn_amplitude": patch[1],
                "frame_index": int(event["seq_num"]) - 1,
            }
            if patch.shape[0] > 2:
                data["ptychonn_phase_uncertainty"] = patch[2]
            if self.position_keys is not None:
                data["beam_y"] = float(event["data"][self.position_keys[0]])
                data["beam_x"] = float(event["data"][self.position_keys[1]])
            derived = {
                "descriptor": event["descriptor"],
                "data": data,
                "timestamps": {key: event["time"] for key in data},
                "time": event["time"],
                "seq_num": event["seq_num"],
                "filled": {},
            }
            self.process_event(derived, stream_name=STREAM_NAME)
            self.frames_inferred += 1
