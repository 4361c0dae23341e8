"""What the endpoint publishes besides phase and amplitude: uncertainty and physics residual.

`result_fields` turns an engine's output (and the frames it came from) into the results
message's arrays and annotations:

* ``phase_uncertainty`` (N, H, W) float32, rad, one standard deviation of the phase, when the
  model has the uncertainty head (the engine's calibrated channel 2): the one optional array
  of the wire's results message;
* ``extra["physics_residual"]``: one float per frame, the Poisson residual of the predicted
  patch against its measured pattern (`physics.PhysicsCheck`), when the probe is known.

Models without either give exactly the message they always gave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..intervals import FIELD as UNCERTAINTY_ARRAY

if TYPE_CHECKING:  # the device reads summaries on the RunEngine side: no scipy there
    from .physics import PhysicsCheck

RESIDUAL_EXTRA = "physics_residual"


def result_fields(
    output: np.ndarray, frames: np.ndarray, physics: PhysicsCheck | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, extra) of a results message for one batch.

    Args:
        output: (N, 2, H, W) or (N, 3, H, W) engine output.
        frames: (N, h, w) the measured frames the output came from.
        physics: the physics check of the model in service, or None.
    """
    arrays = {
        "phase": np.ascontiguousarray(output[:, 0]),
        "amplitude": np.ascontiguousarray(output[:, 1]),
    }
    if output.shape[1] > 2:
        arrays[UNCERTAINTY_ARRAY] = np.ascontiguousarray(output[:, 2])
    extra: dict[str, Any] = {}
    if physics is not None:
        extra[RESIDUAL_EXTRA] = [round(float(r), 4) for r in physics.residuals(frames, output)]
    return arrays, extra


def frame_summaries(arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> dict[str, list]:
    """Per-frame mean phase uncertainty (rad) and physics residual of a results message
    (empty lists for what it does not carry)."""
    sigma = arrays.get(UNCERTAINTY_ARRAY)
    means = [] if sigma is None else [float(m) for m in np.mean(sigma, axis=(1, 2))]
    residuals = extra.get(RESIDUAL_EXTRA) or []
    return {"uncertainty_mean_rad": means, "physics_residual": [float(r) for r in residuals]}
