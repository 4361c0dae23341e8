"""The endpoint's guard: CURVE on its sockets, allow-lists, refused traffic counted, model digests.

`EndpointGuard` decides how the endpoint's sockets are secured from its host and key folder
(`stream.security` describes the folder):

* no key folder, loopback host: plain sockets (the embedded default on one machine);
* no key folder, any other host: refused (`InsecureBind`): anyone on that network could
  push a model or shut the endpoint down;
* a key folder: CURVE on the frame, result and control sockets. A ZAP authenticator admits
  on the frame and result sockets only the public keys in ``authorized/`` and on the control
  socket only those in ``control/``. A client without an admitted key never completes its
  handshake, so its requests are never read, let alone answered. Failed handshakes (a wrong
  key, no CURVE at all, garbage bytes) are counted per socket from the sockets' monitors.

`verify_model_digest` is the second lock on ``load_model``: the endpoint loads a model only
when the sha256 of its sidecar (which pins the sha256 of every model file, checked again at
load) equals the digest the request carries, taken from the registry (Tiled ``models/``
records ``sidecar_file.sha256``) or from the sidecar the operator pointed at.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..stream.security import (
    AUTHORIZED,
    CONTROL,
    ServerKeys,
    is_loopback,
    read_allow_list,
)

log = logging.getLogger(__name__)

HANDSHAKE_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
}


class InsecureBind(ValueError):
    """The endpoint was asked to bind beyond loopback without CURVE keys."""


class ModelDigestError(ValueError):
    """A model's sidecar does not have the sha256 the load request expects."""


def sidecar_digest(model_path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a model's sidecar file (the model given by folder, sidecar or file)."""
    from ..model.checkpoint import resolve, sha256_file  # torch: only where a model is loaded

    return sha256_file(resolve(model_path).sidecar_path)


def registry_digest(metadata: Mapping[str, Any]) -> str:
    """The sidecar sha256 a Tiled ``models/`` entry recorded at registration."""
    try:
        return str(metadata["sidecar_file"]["sha256"])
    except (KeyError, TypeError):
        raise ModelDigestError("the registry entry records no sidecar_file.sha256") from None


def verify_model_digest(model_path: str | os.PathLike[str], expected: str | None) -> str:
    """Check the sidecar's sha256 against ``expected``; return the digest.

    Raises:
        ModelDigestError: ``expected`` is not a 64-digit hex string or differs.
    """
    actual = sidecar_digest(model_path)
    if expected is None:
        return actual
    if not isinstance(expected, str) or len(expected) != 64:
        raise ModelDigestError("sha256 must be 64 hex digits (the model sidecar's digest)")
    if actual != expected.lower():
        raise ModelDigestError(
            f"the sidecar of {model_path} has sha256 {actual[:16]}..., the request expects "
            f"{expected[:16]}...: refusing to load it"
        )
    return actual


class _AllowList:
    """ZAP credentials provider: admits the keys of one allow-list and counts the rest."""

    def __init__(self, keys: set[bytes], counts: Counter[str], domain: str):
        self.keys = keys
        self.counts = counts
        self.domain = domain

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self.counts[f"{self.domain}_unknown_key"] += 1
        log.warning("refused a client with an unknown key on the %s socket", self.domain)
        return False


class EndpointGuard:
    """How an endpoint's sockets are secured (see the module docstring).

    Args:
        context: the endpoint's ZMQ context (its ZAP authenticator lives there).
        host: the interface the endpoint binds.
        keys: the key folder, or None.

    Raises:
        InsecureBind: ``host`` is not loopback and no key folder is given.
        stream.security.KeyFileError: a key file is missing, malformed or too readable.
    """

    def __init__(self, context: zmq.Context, host: str, keys: str | os.PathLike[str] | None):
        self.context = context
        self.host = host
        self.keys_folder = None if keys is None else Path(keys)
        self.refused: Counter[str] = Counter()  # why traffic was refused, counted
        self._authenticator = None
        self._monitors: dict[str, zmq.Socket] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if self.keys_folder is None:
            if not is_loopback(host):
                raise InsecureBind(
                    f"refusing to bind {host} without CURVE keys: anyone on that network could "
                    "load a model or shut the endpoint down; make keys with `bluesky-ptychonn "
                    "keys init DIR` and pass --keys DIR (or bind 127.0.0.1)"
                )
            self.server_keys = None
            return
        self.server_keys = ServerKeys.from_folder(self.keys_folder)
        data_keys = read_allow_list(self.keys_folder / AUTHORIZED)
        control_keys = read_allow_list(self.keys_folder / CONTROL)
        if not control_keys:
            log.warning("no key in %s: no client may send control requests",
                        self.keys_folder / CONTROL)  # fmt: skip
        from zmq.auth.thread import ThreadAuthenticator

        self._authenticator = ThreadAuthenticator(context, log=log)
        self._authenticator.start()
        self._authenticator.configure_curve_callback(
            "data", _AllowList(data_keys, self.refused, "data")
        )
        self._authenticator.configure_curve_callback(
            CONTROL, _AllowList(control_keys, self.refused, CONTROL)
        )
        self.authorized_clients = len(data_keys)
        self.control_clients = len(control_keys)

    @property
    def curve(self) -> bool:
        return self.server_keys is not None

    def setup_for(self, role: str):
        """The socket setup for the ``frames``, ``results`` or ``control`` socket (or None)."""
        if self.server_keys is None:
            return None
        domain = CONTROL if role == "control" else "data"
        keys = self.server_keys

        def setup(socket: zmq.Socket) -> None:
            keys.apply(socket, domain)

        return setup

    def watch(self, sockets: Mapping[str, zmq.Socket]) -> None:
        """Count failed handshakes on these sockets (name -> bound socket) in a thread."""
        for name, socket in sockets.items():
            self._monitors[name] = socket.get_monitor_socket(
                sum(HANDSHAKE_FAILURES)  # distinct bits
                | zmq.EVENT_ACCEPTED
                | zmq.EVENT_HANDSHAKE_SUCCEEDED
                | zmq.EVENT_DISCONNECTED
            )
        self._thread = threading.Thread(target=self._watch_loop, name="guard", daemon=True)
        self._thread.start()

    def _watch_loop(self) -> None:
        poller = zmq.Poller()
        names = {}
        for name, monitor in self._monitors.items():
            poller.register(monitor, zmq.POLLIN)
            names[monitor] = name
        pending: set[tuple[str, int]] = set()  # accepted, no handshake yet: (socket, fd)
        while not self._stop.is_set():
            for monitor, _ in poller.poll(100):
                try:
                    event = recv_monitor_message(monitor)
                except zmq.ZMQError:
                    continue
                name, code = names[monitor], event["event"]
                connection = (name, int(event["value"]))
                if code == zmq.EVENT_ACCEPTED:
                    pending.add(connection)
                elif code == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    pending.discard(connection)
                elif code == zmq.EVENT_DISCONNECTED and connection in pending:
                    pending.discard(connection)  # e.g. bytes that are not ZMTP at all
                    self.refused[f"{name}_handshake_failed_not_zmtp"] += 1
                elif code in HANDSHAKE_FAILURES:
                    pending.discard(connection)
                    self.refused[f"{name}_handshake_failed_{HANDSHAKE_FAILURES[code]}"] += 1

    def count(self, reason: str) -> None:
        """Count refused traffic that reached the endpoint's own code (e.g. a malformed request)."""
        self.refused[reason] += 1

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"curve": self.curve, "refused": dict(self.refused)}
        if self.curve:
            out["authorized_clients"] = self.authorized_clients
            out["control_clients"] = self.control_clients
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for monitor in self._monitors.values():
            monitor.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
