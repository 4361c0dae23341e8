"""An ophyd control layer over in-process PVs: how the simulated twins differ from the real devices.

ophyd's ``EpicsSignal`` talks to EPICS through a *control layer* (pyepics or caproto) that
creates PV objects by name. `SOFT_CONTROL_LAYER` creates PV objects that find their name in
`ioc.softpv.REGISTRY` instead of on the network. `make_soft_device(cls)` returns a subclass of
a real device class whose EPICS signals use this layer: the same components, the same
``read``/``describe``/``read_configuration`` keys and the same ophyd code path (connection,
monitors, put completion, limits, enum strings) as the real device; only the wire differs.
A PV that no simulated hutch serves never connects, and times out naming the PV, as on EPICS.

Callbacks run in ophyd's dispatcher threads, as Channel Access callbacks do.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from ophyd import Device, get_cl
from ophyd._dispatch import wrap_callback
from ophyd.signal import EpicsSignalBase

from ..ioc.softpv import REGISTRY, SoftPV


def _dispatcher():
    return get_cl().get_dispatcher()


class SoftPVClient:
    """A pyepics-style PV object on an in-process `SoftPV` (what ophyd's signals hold)."""

    def __init__(
        self,
        pvname: str,
        *,
        form: str = "time",
        auto_monitor: bool | None = None,
        connection_callback=None,
        access_callback=None,
        callback=None,
        **kwargs: Any,
    ):
        self.pvname = pvname
        self.form = form
        self.auto_monitor = auto_monitor
        self._reference_count = 0
        dispatcher = _dispatcher()
        self.connection_callbacks = (
            [wrap_callback(dispatcher, "metadata", connection_callback)]
            if connection_callback
            else []
        )
        self.access_callbacks = (
            [wrap_callback(dispatcher, "metadata", access_callback)] if access_callback else []
        )
        self.callbacks: dict[int, Any] = {}
        self._indices = itertools.count(1)
        self._pv: SoftPV | None = None
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._registry_callback = self._on_registry
        self._value_listener = self._on_value
        if callback is not None:
            self.add_callback(callback)
        existing = REGISTRY.watch(pvname, self._registry_callback)
        if existing is not None:
            self._on_registry(existing)

    # ---- connection -------------------------------------------------------------------------
    def _on_registry(self, pv: SoftPV | None) -> None:
        with self._lock:
            if pv is not None and self._pv is pv:
                return
            old = self._pv
            if old is not None:
                old.remove_listener(self._value_listener)
            self._pv = pv
        if pv is None:
            self._connected.clear()
            for callback in self.connection_callbacks:
                callback(pvname=self.pvname, conn=False, pv=self)
            return
        pv.add_listener(self._value_listener)
        self._connected.set()
        for callback in self.connection_callbacks:
            callback(pvname=self.pvname, conn=True, pv=self)
        for callback in self.access_callbacks:
            callback(True, pv.spec.writable, pv=self)
        if self.callbacks:
            self._on_value(pv)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_for_connection(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    # ---- reading ----------------------------------------------------------------------------
    def _snapshot(self, as_string: bool = False) -> dict[str, Any] | None:
        pv = self._pv
        if pv is None:
            return None
        info = pv.snapshot()
        info["pvname"] = self.pvname
        if as_string:
            value = info["value"]
            if pv.spec.kind == "enum":
                info["value"] = pv.spec.enum_strs[int(value)]
            elif pv.spec.kind != "string":
                info["value"] = str(value)
        if pv.spec.kind == "string":
            info["char_value"] = info["value"]
        return info

    def get_with_metadata(
        self,
        *,
        as_string: bool = False,
        count=None,
        form: str = "time",
        timeout=None,
        use_monitor: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        if not self._connected.wait(timeout or 0):
            return None
        return self._snapshot(as_string)

    def get(self, *, as_string: bool = False, timeout=None, **kwargs: Any) -> Any:
        info = self.get_with_metadata(as_string=as_string, timeout=timeout)
        return None if info is None else info["value"]

    def get_ctrlvars(self, timeout=None, **kwargs: Any) -> dict[str, Any] | None:
        info = self.get_with_metadata(timeout=timeout)
        if info is not None:
            info.pop("value", None)
        return info

    get_timevars = get_ctrlvars

    def get_all_metadata_blocking(self, timeout) -> dict[str, Any]:
        info = self.get_ctrlvars(timeout=timeout)
        if info is None:
            raise TimeoutError(f"{self.pvname} did not connect within {timeout} s")
        return info

    def get_all_metadata_callback(self, callback, *, timeout) -> None:
        def fetch(pvname: str) -> None:
            callback(pvname, self.get_all_metadata_blocking(timeout))

        _dispatcher().schedule_utility_task(fetch, pvname=self.pvname)

    # ---- writing ----------------------------------------------------------------------------
    def put(
        self,
        value: Any,
        wait: bool = False,
        timeout: float = 30.0,
        use_complete: bool = False,
        callback=None,
        callback_data=None,
        **kwargs: Any,
    ) -> None:
        pv = self._pv
        if pv is None:
            raise TimeoutError(f"{self.pvname} is not connected")
        pv.client_put(value)  # record processing runs here, as a CA put callback waits for it
        if callback is not None:
            wrap_callback(_dispatcher(), "get_put", callback)(
                pvname=self.pvname, data=callback_data
            )

    # ---- monitors ---------------------------------------------------------------------------
    def add_callback(self, callback=None, index=None, run_now: bool = False, **kwargs: Any) -> int:
        wrapped = wrap_callback(_dispatcher(), "monitor", callback)
        index = next(self._indices) if index is None else index
        with self._lock:
            self.callbacks[index] = wrapped
        if run_now and self.connected:
            info = self._snapshot()
            if info is not None:
                wrapped(**info)
        return index

    def remove_callback(self, index: int) -> None:
        with self._lock:
            self.callbacks.pop(index, None)

    def _on_value(self, pv: SoftPV) -> None:
        with self._lock:
            callbacks = list(self.callbacks.values())
        if not callbacks:
            return
        info = self._snapshot()
        if info is None:
            return
        for callback in callbacks:
            callback(**info)

    def clear_callbacks(self) -> None:
        with self._lock:
            self.callbacks.clear()
        self.connection_callbacks.clear()
        self.access_callbacks.clear()

    def clear_auto_monitor(self) -> None:
        self.auto_monitor = False

    def release(self) -> None:
        self.clear_callbacks()
        REGISTRY.unwatch(self.pvname, self._registry_callback)
        pv = self._pv
        if pv is not None:
            pv.remove_listener(self._value_listener)


class _SoftControlLayer:
    """The control-layer interface ophyd's signals use (``get_pv``, ``release_pvs``, ...)."""

    name = "bluesky-ptychonn soft PVs"
    thread_class = threading.Thread

    @staticmethod
    def get_pv(pvname: str, form: str = "time", connect: bool = False, timeout: float = 5.0,
               **kwargs: Any) -> SoftPVClient:  # fmt: skip
        pv = SoftPVClient(pvname, form=form, **kwargs)
        if connect:
            pv.wait_for_connection(timeout)
        return pv

    @staticmethod
    def release_pvs(*pvs: SoftPVClient) -> None:
        for pv in pvs:
            pv.release()

    @staticmethod
    def get_dispatcher():
        return _dispatcher()

    @staticmethod
    def setup(logger) -> None:
        pass


SOFT_CONTROL_LAYER = _SoftControlLayer()

_SOFT_CLASSES: dict[type, type] = {}


def _soft_signal_class(cls: type) -> type:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cl", SOFT_CONTROL_LAYER)
        cls.__init__(self, *args, **kwargs)

    return type(f"Soft{cls.__name__}", (cls,), {"__init__": __init__, "__module__": __name__})


def make_soft_device(cls: type) -> type:
    """A subclass of ``cls`` (a Device or an EPICS signal class) whose EPICS signals read and
    write in-process PVs (see the module docstring). Classes are cached."""
    if cls in _SOFT_CLASSES:
        return _SOFT_CLASSES[cls]
    if issubclass(cls, EpicsSignalBase):
        soft = _soft_signal_class(cls)
    elif issubclass(cls, Device):
        components = {}
        for name in cls.component_names:
            component = getattr(cls, name)
            replacement = make_soft_device(component.cls)
            if replacement is not component.cls:
                component = _copy_component(component)
                component.cls = replacement
                components[name] = component
        soft = (
            type(f"Soft{cls.__name__}", (cls,), {**components, "__module__": __name__})
            if components
            else cls
        )
    else:
        soft = cls
    _SOFT_CLASSES[cls] = soft
    return soft


def _copy_component(component):
    import copy

    return copy.copy(component)
