"""Connecting devices with errors that name the PVs that did not answer."""

from __future__ import annotations

import os
import time

from ophyd import Device
from ophyd.signal import EpicsSignalBase


def _pv_names(signal: EpicsSignalBase) -> list[str]:
    names = [signal.pvname]
    setpoint = getattr(signal, "setpoint_pvname", None)
    if setpoint and setpoint != signal.pvname:
        names.append(setpoint)
    return names


def unconnected_pvs(device: Device | EpicsSignalBase, *, include_lazy: bool = False) -> list[str]:
    """PV names of the device's EPICS signals that are not connected now."""
    if isinstance(device, EpicsSignalBase):
        signals = [device]
    else:
        signals = [
            walked.item
            for walked in device.walk_signals(include_lazy=include_lazy)
            if isinstance(walked.item, EpicsSignalBase)
        ]
    missing = []
    for signal in signals:
        if not signal.connected:
            missing.extend(pv for pv in _pv_names(signal) if not _pv_connected(signal, pv))
    return missing


def _pv_connected(signal: EpicsSignalBase, pvname: str) -> bool:
    states = getattr(signal, "_connection_states", {})
    return bool(states.get(pvname, False))


def connect(*devices: Device, timeout: float = 5.0, include_lazy: bool = False) -> None:
    """Wait until every EPICS signal of ``devices`` is connected.

    Raises:
        TimeoutError: naming each PV that did not connect within ``timeout`` seconds (and the
            Channel Access search settings, the usual cause).
    """
    deadline = time.monotonic() + timeout
    for device in devices:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            if isinstance(device, EpicsSignalBase):
                device.wait_for_connection(timeout=remaining)
            else:
                device.wait_for_connection(all_signals=include_lazy, timeout=remaining)
        except TimeoutError as error:
            missing = unconnected_pvs(device, include_lazy=include_lazy)
            if not missing:
                raise
            shown = ", ".join(missing[:8]) + (
                f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            )
            search = os.environ.get("EPICS_CA_ADDR_LIST", "(not set: automatic)")
            raise TimeoutError(
                f"{device.name}: no answer within {timeout:g} s from PV {shown} "
                f"(is the IOC running and reachable? EPICS_CA_ADDR_LIST={search})"
            ) from error
