"""In-process PVs: the `PVDatabase` that the in-process simulated twins talk to.

A `SoftPVDatabase` holds PVs in memory and registers their names in one process-wide
`REGISTRY`, where the devices' in-process control layer (`devices.softcl`) finds them by
name, as a Channel Access client finds PVs on the network. A name not registered is simply
never found: the signal stays disconnected and times out naming the PV, exactly as a missing
EPICS PV does. Two databases may not serve the same name in one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .pvs import PutHandler, PVSpec

Listener = Callable[["SoftPV"], None]


class SoftPV:
    """One in-memory PV: value, timestamp, control limits, put handler and listeners."""

    def __init__(
        self,
        spec: PVSpec,
        on_put: PutHandler | None = None,
        put_lock: threading.RLock | None = None,
    ):
        self.spec = spec
        self.on_put = on_put
        self._put_lock = put_lock if put_lock is not None else threading.RLock()
        self.value = spec.normalise(spec.value)
        self.timestamp = time.time()
        self.limits = spec.limits
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def post(self, value: Any, *, limits: tuple[float, float] | None = None) -> None:
        """Store a new value (from the hardware) and notify listeners."""
        value = self.spec.normalise(value)
        with self._lock:
            self.value = value
            self.timestamp = time.time()
            if limits is not None:
                self.limits = (float(limits[0]), float(limits[1]))
            listeners = list(self._listeners)
        for listener in listeners:
            listener(self)

    def client_put(self, value: Any) -> None:
        """A client writes: run the put handler (record processing), then store."""
        if not self.spec.writable:
            raise PermissionError(f"{self.name} is read-only")
        value = self.spec.normalise(value)
        with self._put_lock:  # one put at a time, as an IOC processes records
            if self.on_put is not None:
                applied = self.on_put(value)
                if applied is not None:
                    value = applied
            self.post(value)

    def snapshot(self) -> dict[str, Any]:
        """Value and metadata in the form a pyepics-style PV reports them."""
        spec = self.spec
        value = self.value
        if isinstance(value, np.ndarray):
            value = value.copy()
        low, high = self.limits if self.limits is not None else (0.0, 0.0)
        return {
            "value": value,
            "timestamp": self.timestamp,
            "status": 0,
            "severity": 0,
            "precision": spec.precision,
            "units": spec.units,
            "enum_strs": spec.enum_strs if spec.kind == "enum" else None,
            "lower_ctrl_limit": low,
            "upper_ctrl_limit": high,
            "lower_disp_limit": low,
            "upper_disp_limit": high,
            "read_access": True,
            "write_access": spec.writable,
        }


class _Registry:
    """Process-wide map of PV names to in-memory PVs, with connection notifications."""

    def __init__(self) -> None:
        self._pvs: dict[str, SoftPV] = {}
        self._waiting: dict[str, list[Callable[[SoftPV | None], None]]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, pv: SoftPV) -> None:
        with self._lock:
            if name in self._pvs:
                raise ValueError(
                    f"PV {name} is already served in this process: give this simulated hutch "
                    "another prefix (or close the other one)"
                )
            self._pvs[name] = pv
            waiting = list(self._waiting.get(name, ()))
        for callback in waiting:
            callback(pv)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._pvs.pop(name, None)
            waiting = list(self._waiting.get(name, ()))
        for callback in waiting:
            callback(None)

    def watch(self, name: str, callback: Callable[[SoftPV | None], None]) -> SoftPV | None:
        """Call ``callback(pv)`` whenever ``name`` appears (``None`` when it goes away);
        returns the PV if it exists now."""
        with self._lock:
            self._waiting.setdefault(name, []).append(callback)
            return self._pvs.get(name)

    def unwatch(self, name: str, callback: Callable[[SoftPV | None], None]) -> None:
        with self._lock:
            callbacks = self._waiting.get(name, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._waiting.pop(name, None)

    def get(self, name: str) -> SoftPV | None:
        with self._lock:
            return self._pvs.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._pvs)


REGISTRY = _Registry()


class SoftPVDatabase:
    """A `PVDatabase` in memory, visible to the in-process control layer through `REGISTRY`."""

    def __init__(self) -> None:
        self._pvs: dict[str, SoftPV] = {}
        self._closed = False
        self._put_lock = threading.RLock()

    def add(self, spec: PVSpec, on_put: PutHandler | None = None) -> None:
        pv = SoftPV(spec, on_put, self._put_lock)
        REGISTRY.register(spec.name, pv)
        self._pvs[spec.name] = pv

    def alias(self, alias: str, name: str) -> None:
        REGISTRY.register(alias, self._pvs[name])
        self._pvs[alias] = self._pvs[name]

    def post(self, name: str, value: Any, *, limits: tuple[float, float] | None = None) -> None:
        self._pvs[name].post(value, limits=limits)

    def value(self, name: str) -> Any:
        return self._pvs[name].value

    def client_put(self, name: str, value: Any) -> None:
        """Write as a client would (runs the put handler); for tests and scripts."""
        self._pvs[name].client_put(value)

    def names(self) -> list[str]:
        return sorted(self._pvs)

    def specs(self) -> list[PVSpec]:
        seen: dict[str, PVSpec] = {}
        for name, pv in self._pvs.items():
            if name == pv.name:
                seen[name] = pv.spec
        return [seen[name] for name in sorted(seen)]

    def close(self) -> None:
        """Stop serving: every PV of this database disconnects."""
        if self._closed:
            return
        self._closed = True
        for name in list(self._pvs):
            REGISTRY.unregister(name)
