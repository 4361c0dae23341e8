"""The in-process control layer: ophyd's EPICS signals on in-process PVs behave as on EPICS."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, EpicsSignalWithRBV

from bluesky_ptychonn.devices import SampleStage, connect
from bluesky_ptychonn.devices.softcl import make_soft_device
from bluesky_ptychonn.ioc.pvs import PVSpec, add_ro, add_rw
from bluesky_ptychonn.ioc.softpv import SoftPVDatabase


class Box(Device):
    number = Cpt(EpicsSignal, "Number")
    mode = Cpt(EpicsSignalWithRBV, "Mode", string=True)
    path = Cpt(EpicsSignalWithRBV, "Path", string=True)
    readback = Cpt(EpicsSignalRO, "Readback")


SoftBox = make_soft_device(Box)


@pytest.fixture
def database():
    db = SoftPVDatabase()
    yield db
    db.close()


def test_soft_device_is_the_real_class_with_soft_signals():
    assert issubclass(SoftBox, Box)
    assert SoftBox.component_names == Box.component_names
    assert make_soft_device(Box) is SoftBox  # cached
    assert issubclass(SoftBox.number.cls, EpicsSignal)


def test_signals_read_write_and_run_put_handlers(database):
    doubled = []
    database.add(PVSpec("T1:Number", "float", 1.5), lambda v: doubled.append(v) or v * 2)
    add_rw(database, "T1:Mode", "enum", 0, enum_strs=("Internal", "External"))
    add_rw(database, "T1:Path", "string", "/data", max_length=256)
    add_ro(database, "T1:Readback", "float_array", [1.0, 2.0], max_length=10)
    box = SoftBox("T1:", name="box")
    connect(box, timeout=5)
    assert box.number.get() == 1.5
    box.number.put(2.0)
    assert doubled == [2.0] and box.number.get(use_monitor=False) == 4.0  # handler's value
    box.mode.set("External").wait(5)
    assert box.mode.get() == "External" and database.value("T1:Mode_RBV") == 1
    box.path.set("/tmp/some/longer/path/than/forty/characters/x").wait(5)
    assert box.path.get().endswith("/x")
    np.testing.assert_array_equal(box.readback.get(), [1.0, 2.0])
    with pytest.raises(PermissionError):
        database.client_put("T1:Readback", [3.0])  # a read-only PV refuses writes


def test_monitors_fire_when_the_hardware_posts(database):
    add_ro(database, "T2:Readback", "float_array", [0.0], max_length=10)
    for name in ("Number", "Mode", "Path"):
        database.add(PVSpec(f"T2:{name}", "float", 0))
        database.add(PVSpec(f"T2:{name}_RBV", "float", 0))
    box = SoftBox("T2:", name="box")
    connect(box, timeout=5)
    seen = threading.Event()
    values = []

    def callback(value, **kwargs):
        values.append(np.asarray(value).tolist())
        if values[-1] == [7.0, 8.0]:
            seen.set()

    box.readback.subscribe(callback)
    database.post("T2:Readback", [7.0, 8.0])
    assert seen.wait(5), values


def test_unserved_pv_times_out_naming_it(database):
    database.add(PVSpec("T3:Number", "float", 0))
    box = SoftBox("T3:", name="box")
    with pytest.raises(TimeoutError, match=r"T3:Mode_RBV|T3:Mode\b") as info:
        connect(box, timeout=0.5)
    assert "T3:Number" not in str(info.value)  # only the missing ones are named


def test_pv_served_later_connects(database):
    box = make_soft_device(Box)("T4:", name="box")
    assert not box.number.connected
    database.add(PVSpec("T4:Number", "float", 3.0))
    box.number.wait_for_connection(timeout=5)
    assert box.number.get() == 3.0


def test_one_pv_name_cannot_be_served_twice(database):
    database.add(PVSpec("T5:Number", "float", 0))
    other = SoftPVDatabase()
    with pytest.raises(ValueError, match="T5:Number is already served"):
        other.add(PVSpec("T5:Number", "float", 0))


def test_missing_stage_names_its_motor_pvs():
    stage = make_soft_device(SampleStage)("NOWHERE:", name="stage")
    with pytest.raises(TimeoutError, match=r"stage: no answer within 0.5 s from PV NOWHERE:Y\."):
        connect(stage, timeout=0.5)
