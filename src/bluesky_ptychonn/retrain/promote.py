"""Step *promote*: export, register in Tiled ``models/`` with lineage, hot swap at the endpoint.

`export_step` (worker side) checks the challenger's files (sha256, finite weights) and exports
ONNX next to them (what the endpoint's ONNX Runtime and TensorRT engines load), checked against
PyTorch by `model.export.export_onnx`. `registry_write` (no torch) is the `NodeWrite` that puts
the model into the registry with its lineage; the loop hands it to its spooled Tiled writer, so
a Tiled outage loses nothing. `push` asks the endpoint for its hot swap, retrying with backoff;
when the endpoint stays unreachable the push is left pending (the loop retries it later) and
the model stays registered.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .. import __version__
from .options import PromoteOptions

log = logging.getLogger(__name__)


INT8_CALIBRATION_FRAMES = 96
"""Measured frames (drawn evenly from the label sets' trainable parts) that calibrate int8."""


def export_step(
    model_dir: str,
    *,
    onnx: bool = True,
    int8: bool = False,
    calibration_label_paths: list[str] | None = None,
) -> dict[str, Any]:
    """Verify a trained model folder and export ONNX beside it; worker side (torch).

    With ``int8`` (the endpoint runs int8) the ONNX graph is also quantised, calibrated on
    measured frames of ``calibration_label_paths`` (`inference.quantize.attach_int8`), and
    shipped in the folder: the endpoint loads it at the hot swap instead of quantising there.
    """
    from ..model.checkpoint import load_model, resolve
    from .gate import check_finite_weights

    model, sidecar = load_model(model_dir)  # sha256 checked
    check_finite_weights(model, sidecar.version)
    out: dict[str, Any] = {"version": sidecar.version, "model_dir": str(model_dir)}
    if onnx or int8:
        from ..model.export import export_onnx

        out["onnx"] = str(
            export_onnx(Path(model_dir) / "model.safetensors", Path(model_dir) / "model.onnx")
        )
    if int8:
        from ..inference.quantize import attach_int8

        frames, note = _calibration_frames(calibration_label_paths or [])
        out["int8"] = str(attach_int8(model_dir, frames, calibration_note=note))
    files = resolve(model_dir)
    out["files"] = {role: entry["sha256"] for role, entry in files.sidecar.files.items()}
    return out


def _calibration_frames(label_paths: list[str]) -> tuple[Any, str]:
    import numpy as np

    from .labels import LabelSet

    if not label_paths:
        raise ValueError("int8 export needs measured frames: no label set given")
    per_set = max(1, INT8_CALIBRATION_FRAMES // len(label_paths))
    parts = []
    for path in label_paths:
        frames, _ = LabelSet.load(path).part(holdout=False)
        pick = np.linspace(0, frames.shape[0] - 1, min(per_set, frames.shape[0])).astype(int)
        parts.append(frames[pick])
    frames = np.concatenate(parts)
    names = ", ".join(Path(p).stem for p in label_paths)
    return frames, f"{frames.shape[0]} measured frames of {names}"


def registry_write(
    model_dir: str | Path, *, metrics: dict[str, Any], lineage: dict[str, Any]
) -> Any:
    """The `NodeWrite` registering a model folder in Tiled ``models/`` with its lineage."""
    from ..storage.tiled_models import model_write

    return model_write(
        model_dir,
        metrics=metrics,
        extra={"continual": lineage, "package_version": __version__},
    )


class PushFailed(ConnectionError):
    """The endpoint did not take the model (unreachable, or it refused the files)."""


def push(
    endpoint_control: str,
    model_dir: str | Path,
    options: PromoteOptions,
    *,
    keys: Any = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Hot-swap ``model_dir`` into the endpoint; return its reply.

    ``keys``: CURVE client keys or their folder for an endpoint that uses keys (default
    ``$BLUESKY_PTYCHONN_KEYS``). ``sha256``: the model sidecar's digest the endpoint must find
    (the registry's ``sidecar_file.sha256``); by default that of the sidecar in ``model_dir``.

    Retries ``options.push_attempts`` times with doubling waits when the endpoint does not
    answer. A refusal from the endpoint (it answered ``ok: false``) is not retried.

    Raises:
        PushFailed: no answer after every attempt, or the endpoint refused the model.
    """
    from ..inference.server import EndpointClient  # the control client (loads torch lazily)

    wait = float(options.push_retry_s)
    last = ""
    for attempt in range(1, int(options.push_attempts) + 1):
        client = EndpointClient(endpoint_control, timeout_s=options.push_timeout_s, keys=keys)
        try:
            reply = client.load_model(
                str(model_dir), timeout_s=options.push_timeout_s, sha256=sha256
            )
        except (TimeoutError, OSError) as error:
            last = str(error)
            log.warning("push attempt %d/%d failed: %s", attempt, options.push_attempts, last)
        else:
            if reply.get("ok", False):
                return reply
            raise PushFailed(
                f"the endpoint at {endpoint_control} refused {model_dir}: "
                f"{reply.get('error', reply)}"
            )
        finally:
            client.close()
        if attempt < options.push_attempts:
            time.sleep(wait)
            wait *= 2
    raise PushFailed(
        f"the endpoint at {endpoint_control} did not take the model after "
        f"{options.push_attempts} attempts ({last})"
    )
