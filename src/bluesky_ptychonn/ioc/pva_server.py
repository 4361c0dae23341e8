"""`SimPvaDetector`: the simulated twin of an areaDetector PVA plugin (``NDPluginPva``).

A p4p `Server` with one `SharedPV` of type NTNDArray, like ``13SIM1:Pva1:Image``: each
published frame carries an incrementing ``uniqueId`` (from 1, as areaDetector's
``ArrayCounter``), ``timeStamp``/``dataTimeStamp``, ``ColorMode`` and the beam position as
NDAttributes (``SampleY``/``SampleX`` in metres by default). Before the first frame the PV holds
an empty array, as the plugin does. Frames come from the caller or from the simulated beamline
(`acquire` measures `sim.SimBeamline` patterns at the given positions).

Loopback only by default: the server listens and sends beacons on 127.0.0.1, on free ports
(TCP for the server, UDP for searches), and ignores the EPICS_PVAS_* environment, so a
simulated detector never answers a beamline's searches. `client_conf` gives the matching
client settings (``EPICS_PVA_ADDR_LIST=127.0.0.1:<broadcast port>``,
``EPICS_PVA_AUTO_ADDR_LIST=NO``). May import p4p (the ``pva`` extra), numpy and ``sim``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..ports import LOOPBACK, free_port

DEFAULT_PV = "PTY:Pva1:Image"


class SimPvaDetector:
    """Serve frames as an NTNDArray PV over pvAccess.

    Args:
        pv: the PV name.
        beamline: a `sim.SimBeamline` for `acquire` (frames at beam positions).
        position_attributes: (y, x) NDAttribute names of the beam position.
        position_units_m: metres per attribute unit (the attributes carry position / units).
        host: interface to listen on (loopback unless told otherwise).
        server_port, broadcast_port: TCP server port and UDP search port (default: free ones).

    Use as a context manager, or call `start` and `stop`.
    """

    def __init__(
        self,
        pv: str = DEFAULT_PV,
        *,
        beamline: Any = None,
        position_attributes: Sequence[str] = ("SampleY", "SampleX"),
        position_units_m: float = 1.0,
        host: str = LOOPBACK,
        server_port: int | None = None,
        broadcast_port: int | None = None,
    ):
        from p4p.nt import NTNDArray

        self.pv = pv
        self.beamline = beamline
        self.position_attributes = tuple(position_attributes)
        self.position_units_m = float(position_units_m)
        self.host = host
        self.server_port = int(server_port or free_port(host))
        self.broadcast_port = int(broadcast_port or free_port(host, udp=True))
        self.unique_id = 0  # of the last frame published
        self.published = 0
        self._nt = NTNDArray()
        self._lock = threading.Lock()
        self._server = None
        self._shared = None

    # ---- configuration -----------------------------------------------------------------------
    def server_conf(self) -> dict[str, str]:
        """The p4p ``Server`` settings: listen and send beacons on ``host`` only."""
        loopback = self.host in (LOOPBACK, "localhost")
        return {
            "EPICS_PVAS_INTF_ADDR_LIST": self.host,
            "EPICS_PVAS_BEACON_ADDR_LIST": self.host if loopback else "",
            "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO" if loopback else "YES",
            "EPICS_PVAS_SERVER_PORT": str(self.server_port),
            "EPICS_PVAS_BROADCAST_PORT": str(self.broadcast_port),
        }

    def client_conf(self) -> dict[str, str]:
        """Client settings (``Context('pva', conf=...)``) that find this server and no other."""
        host = LOOPBACK if self.host in ("0.0.0.0", "localhost") else self.host
        return {
            "EPICS_PVA_ADDR_LIST": f"{host}:{self.broadcast_port}",
            "EPICS_PVA_AUTO_ADDR_LIST": "NO",
            "EPICS_PVA_BROADCAST_PORT": str(self.broadcast_port),
        }

    # ---- life cycle --------------------------------------------------------------------------
    def start(self) -> SimPvaDetector:
        from p4p.server import Server
        from p4p.server.thread import SharedPV

        if self._server is not None:
            return self
        empty = self._nt.wrap(np.zeros((0, 0), dtype=np.uint16))  # nothing served yet
        self._shared = SharedPV(initial=empty)
        self._server = Server(
            providers=[{self.pv: self._shared}], conf=self.server_conf(), useenv=False
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def __enter__(self) -> SimPvaDetector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- frames ------------------------------------------------------------------------------
    def ntndarray(
        self,
        frame: np.ndarray,
        unique_id: int,
        *,
        position_m: Sequence[float] | None = None,
        timestamp: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Any:
        """The NTNDArray ``Value`` the plugin would serve for one (h, w) frame."""
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise ValueError(f"a frame is (h, w), got shape {frame.shape}")
        attrib = {"ColorMode": 0, **(attributes or {})}
        if position_m is not None:
            y, x = (float(p) / self.position_units_m for p in position_m)
            attrib[self.position_attributes[0]] = y
            attrib[self.position_attributes[1]] = x
        value = self._nt.wrap(frame, attrib=attrib)
        stamp = time.time() if timestamp is None else float(timestamp)
        seconds = int(stamp)
        nanoseconds = int(round((stamp - seconds) * 1e9))
        value["uniqueId"] = int(unique_id)
        # a monitor update carries only the fields marked changed: mark the ones a plugin sets
        # on every array, or a codec left over from an earlier array would stick
        value["codec.name"] = ""
        value["alarm.severity"] = 0
        for name in ("timeStamp", "dataTimeStamp"):
            value[f"{name}.secondsPastEpoch"] = seconds
            value[f"{name}.nanoseconds"] = min(nanoseconds, 999_999_999)
        return value

    def post(self, value: Any) -> None:
        """Serve a prepared ``Value`` as it is (for tests of malformed arrays)."""
        if self._shared is None:
            raise RuntimeError("the simulated PVA detector is not started")
        self._shared.post(value)
        self.published += 1

    def publish(
        self,
        frame: np.ndarray,
        *,
        position_m: Sequence[float] | None = None,
        unique_id: int | None = None,
        timestamp: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> int:
        """Serve one frame; returns its uniqueId (the next one unless given).

        Giving a ``unique_id`` beyond the next one simulates frames the plugin dropped.
        """
        with self._lock:
            self.unique_id = self.unique_id + 1 if unique_id is None else int(unique_id)
            uid = self.unique_id
            self.post(
                self.ntndarray(
                    frame, uid, position_m=position_m, timestamp=timestamp, attributes=attributes
                )
            )
        return uid

    def publish_burst(
        self,
        frames: Iterable[np.ndarray],
        positions_m: np.ndarray | None = None,
        *,
        rate_hz: float | None = None,
    ) -> list[int]:
        """Serve frames one after the other, flat out or paced at ``rate_hz``; their ids."""
        ids = []
        start = time.perf_counter()
        for index, frame in enumerate(frames):
            if rate_hz:
                delay = start + index / rate_hz - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            position = None if positions_m is None else positions_m[index]
            ids.append(self.publish(frame, position_m=position))
        return ids

    def acquire(
        self,
        positions_m: np.ndarray,
        *,
        rate_hz: float | None = None,
        batch_size: int = 64,
        seed: int | None = None,
    ) -> list[int]:
        """Measure the simulated beamline at (N, 2) (y, x) positions in metres and serve each
        frame with its position; returns the uniqueIds."""
        if self.beamline is None:
            raise ValueError("acquire needs a SimBeamline (beamline=...)")
        positions_m = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
        ids: list[int] = []
        for start, frames in self.beamline.stream(positions_m, batch_size, seed=seed):
            ids += self.publish_burst(
                frames, positions_m[start : start + len(frames)], rate_hz=rate_hz
            )
        return ids
