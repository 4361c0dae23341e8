"""The simulated hutch served over Channel Access by caproto (`bluesky-ptychonn ioc`).

`CaprotoPVDatabase` implements `pvs.PVDatabase` with caproto channels: a client's write runs
the hardware's put handler in one worker thread (so record processing happens in order, and
the put completes after it), and the hardware's threads post values into the server's event
loop. `serve` builds a `hardware.SimHutch` on it and runs the server until interrupted.

Loopback by default: the server listens on 127.0.0.1 unless told otherwise (``--interfaces``
or ``EPICS_CAS_INTF_ADDR_LIST``), so a simulated IOC never answers searches for a beamline's
real PVs on the network. Clients on the same machine need ``EPICS_CA_ADDR_LIST=127.0.0.1``
and ``EPICS_CA_AUTO_ADDR_LIST=NO``; ``EPICS_CA_SERVER_PORT`` selects the port on both sides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from caproto import (
    AccessRights,
    ChannelChar,
    ChannelData,
    ChannelDouble,
    ChannelEnum,
    ChannelInteger,
    ChannelShort,
    ChannelString,
)
from caproto.asyncio.server import run as run_server

from .pvs import PutHandler, PVSpec

log = logging.getLogger(__name__)

READY_LINE = "bluesky-ptychonn ioc: ready"


def loopback_ca_environment() -> dict[str, str]:
    """Channel Access settings that keep a simulated IOC and its clients on 127.0.0.1.

    Fresh free ports (TCP and UDP) for the server and the repeater, no broadcast search, no
    beacons beyond loopback: a test or benchmark IOC never answers a beamline's searches.
    Apply them to ``os.environ`` before the client process creates its CA context.
    """
    from ..ports import free_port

    return {
        "EPICS_CA_SERVER_PORT": str(free_port(udp=True)),
        "EPICS_CA_REPEATER_PORT": str(free_port(udp=True)),
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    }


class _HandledPut:
    """Mixin for caproto channels: a client write goes through the database's put handler."""

    _database: CaprotoPVDatabase
    _pv_name: str
    _read_only: bool = False

    def check_access(self, hostname: str, username: str) -> AccessRights:
        if self._read_only:
            return AccessRights.READ
        return super().check_access(hostname, username)

    async def verify_value(self, value: Any) -> Any:
        value = await super().verify_value(value)
        return await self._database._handle_put(self._pv_name, value)


_CHANNEL_CLASSES: dict[type, type] = {}


def _channel_class(base: type) -> type:
    if base not in _CHANNEL_CLASSES:
        _CHANNEL_CLASSES[base] = type(f"Handled{base.__name__}", (_HandledPut, base), {})
    return _CHANNEL_CLASSES[base]


def _to_wire(spec: PVSpec, value: Any) -> Any:
    """Stored form (see `pvs`) -> what the caproto channel holds."""
    if spec.kind == "enum":
        return spec.enum_strs[int(value)]
    if spec.kind == "float_array":
        return np.asarray(value, dtype=np.float64)
    if spec.kind == "int16_array":
        return np.asarray(value, dtype=np.int16)
    return value


class CaprotoPVDatabase:
    """A `pvs.PVDatabase` whose PVs are caproto channels (``self.pvdb``)."""

    def __init__(self) -> None:
        self.pvdb: dict[str, ChannelData] = {}
        self._specs: dict[str, PVSpec] = {}
        self._handlers: dict[str, PutHandler | None] = {}
        self._values: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ioc-put")
        self._lock = threading.Lock()

    # ---- PVDatabase -----------------------------------------------------------------------------
    def add(self, spec: PVSpec, on_put: PutHandler | None = None) -> None:
        if spec.name in self.pvdb:
            raise ValueError(f"PV {spec.name} defined twice")
        value = spec.normalise(spec.value)
        common: dict[str, Any] = {}
        low, high = spec.limits if spec.limits is not None else (0.0, 0.0)
        if spec.kind in ("float", "float_array"):
            base = ChannelDouble
            common.update(
                units=spec.units, precision=spec.precision,
                lower_ctrl_limit=low, upper_ctrl_limit=high,
            )  # fmt: skip
        elif spec.kind == "int":
            base = ChannelInteger
            common.update(units=spec.units, lower_ctrl_limit=int(low), upper_ctrl_limit=int(high))
        elif spec.kind == "enum":
            base = ChannelEnum
            common.update(enum_strings=list(spec.enum_strs))
        elif spec.kind == "string" and spec.max_length <= 40:  # an EPICS string record
            base = ChannelString
        elif spec.kind == "string":  # a char waveform (areaDetector's paths, messages)
            base = ChannelChar
            common.update(max_length=spec.max_length)
        else:  # int16_array
            base = ChannelShort
        if spec.kind.endswith("_array"):
            common.update(max_length=spec.max_length)
        channel = _channel_class(base)(value=_to_wire(spec, value), **common)
        channel._database = self
        channel._pv_name = spec.name
        channel._read_only = not spec.writable
        self.pvdb[spec.name] = channel
        self._specs[spec.name] = spec
        self._handlers[spec.name] = on_put
        self._values[spec.name] = value

    def alias(self, alias: str, name: str) -> None:
        self.pvdb[alias] = self.pvdb[name]

    def post(self, name: str, value: Any, *, limits: tuple[float, float] | None = None) -> None:
        spec = self._specs[name]
        value = spec.normalise(value)
        with self._lock:
            self._values[name] = value
        metadata = {}
        if limits is not None:
            metadata = {"lower_ctrl_limit": float(limits[0]), "upper_ctrl_limit": float(limits[1])}
        channel = self.pvdb[name]
        if self._loop is None:  # not serving yet: the value is picked up at start
            channel._data["value"] = _to_wire(spec, value)
            channel._data.update(metadata)
            return
        coroutine = channel.write(_to_wire(spec, value), verify_value=False, **metadata)
        if threading.get_ident() == self._loop_thread:
            self._loop.create_task(coroutine)
        else:
            asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def value(self, name: str) -> Any:
        with self._lock:
            return self._values[self.pvdb[name]._pv_name]

    # ---- client writes ------------------------------------------------------------------------
    async def _handle_put(self, name: str, wire_value: Any) -> Any:
        spec = self._specs[name]
        value = spec.normalise(wire_value)
        handler = self._handlers[name]
        if handler is not None:
            applied = await asyncio.get_running_loop().run_in_executor(
                self._executor, handler, value
            )
            if applied is not None:
                value = spec.normalise(applied)
        with self._lock:
            self._values[name] = value
        return _to_wire(spec, value)

    async def _started(self, async_lib) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()


def serve(hutch_factory, *, interfaces: list[str] | None = None, announce=None) -> None:
    """Build the hutch on a `CaprotoPVDatabase` and serve it until interrupted.

    Args:
        hutch_factory: ``f(database) -> SimHutch``.
        interfaces: addresses to listen on (default: ``EPICS_CAS_INTF_ADDR_LIST`` or 127.0.0.1).
        announce: ``f(hutch)`` called once the server listens (default: print the hutch's
            description and `READY_LINE` to stdout).
    """
    database = CaprotoPVDatabase()
    hutch = hutch_factory(database)
    if interfaces is None:
        interfaces = os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "127.0.0.1").split()

    async def started(async_lib) -> None:
        await database._started(async_lib)
        if announce is not None:
            announce(hutch)
        else:
            print(json.dumps(hutch.describe(), indent=2))
            print(READY_LINE, flush=True)

    try:
        run_server(database.pvdb, interfaces=interfaces, startup_hook=started)
    except KeyboardInterrupt:
        pass
    finally:
        hutch.close()
        database._executor.shutdown(wait=False, cancel_futures=True)
        sys.stdout.flush()
