"""The continual-learning loop as an Ophyd status device: a plan or a person can read it.

`ContinualLearningStatus` holds soft signals updated by the loop (through
`RetrainDispatcher.add_listener` or `ContinualLoop.add_listener`): ``state`` (idle,
reconstructing, gating, training, pushing, suspended), ``last_decision`` and ``last_reason``,
``model_version`` in service, ``queued`` runs, ``last_error``. Reading it in a plan
(``bps.rd(cl.state)``) or adding it to a run's baseline records what the loop was doing.
"""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, Signal


class ContinualLearningStatus(Device):
    """Read-only view of the continual-learning loop (see the module docstring)."""

    state = Cpt(Signal, value="idle", kind="hinted")
    last_decision = Cpt(Signal, value="", kind="normal")
    last_reason = Cpt(Signal, value="", kind="normal")
    last_scan = Cpt(Signal, value="", kind="normal")
    model_version = Cpt(Signal, value="", kind="normal")
    queued = Cpt(Signal, value=0, kind="normal")
    generation = Cpt(Signal, value=0, kind="config")
    last_error = Cpt(Signal, value="", kind="normal")

    def update(self, status: dict[str, Any]) -> None:
        """Set the signals from a loop or dispatcher status dict (missing keys are kept)."""
        for name in (
            "state",
            "last_decision",
            "last_reason",
            "last_scan",
            "model_version",
            "queued",
            "generation",
            "last_error",
        ):
            if name in status:
                value = status[name]
                default = 0 if name in ("queued", "generation") else ""
                getattr(self, name).put(default if value is None else value)


def status_device(source: Any, name: str = "continual") -> ContinualLearningStatus:
    """A status device kept up to date by ``source`` (a dispatcher or a loop)."""
    device = ContinualLearningStatus(name=name)
    source.add_listener(device.update)
    return device
