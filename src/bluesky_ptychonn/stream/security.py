"""CURVE keys for the endpoint's sockets: key files, the key folder, client and server sides.

ZMQ's CURVE mechanism (pyzmq's bundled libsodium) encrypts a connection and authenticates
both ends by their Curve25519 public keys. The endpoint is the CURVE server (it holds its own
secret key); every client (frame source, result subscriber, control client) holds its own key
pair and the server's public key.

Key files use ZMQ's certificate format (`zmq.auth.load_certificate` reads them):
``NAME.key`` holds the public key, ``NAME.key_secret`` both keys. Secret files are written
with mode 0600 in a folder of mode 0700 and refused when group or others may read them.

A key folder (`bluesky-ptychonn keys init DIR`) holds everything one endpoint and its clients
need::

    DIR/server.key, DIR/server.key_secret      the endpoint's pair
    DIR/client.key, DIR/client.key_secret      a client's pair
    DIR/authorized/*.key                       public keys allowed on frames and results
    DIR/control/*.key                          public keys allowed to send control requests

The endpoint reads ``server.key_secret``, ``authorized/`` and ``control/``; a client reads
``client.key_secret`` and ``server.key`` (copy only those two to a client host). Clients find
their keys by an explicit argument or, failing that, the folder named by the environment
variable ``BLUESKY_PTYCHONN_KEYS`` (`client_keys`), so one setting reaches every client the
package builds (devices, callbacks, pva-ingest, the continual loop's push).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import zmq
import zmq.auth

KEYS_ENV = "BLUESKY_PTYCHONN_KEYS"
"""Environment variable naming the key folder clients use when given no keys."""

SERVER = "server"
CLIENT = "client"
AUTHORIZED = "authorized"  # public keys allowed on the frame and result sockets
CONTROL = "control"  # public keys allowed on the control socket


class KeyFileError(ValueError):
    """A key file is missing, malformed, or a secret file others may read."""


def is_loopback(host: str) -> bool:
    """True when ``host`` names only this machine (127.0.0.0/8, ::1, "localhost")."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name, a host name or "*": not provably loopback


def _certificate(public: bytes, secret: bytes | None) -> str:
    kind = "Secret" if secret else "Public"
    lines = [
        f"#   ****  Generated on {datetime.now(UTC):%Y-%m-%d %H:%M:%S} by bluesky-ptychonn  ****",
        f"#   ZeroMQ CURVE **{kind}** Certificate",
        *(
            ["#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."]
            if secret
            else []
        ),
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by its owner only (mode 0600 from creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_keypair(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Make a CURVE key pair: ``folder/name.key`` (public) and ``name.key_secret`` (0600).

    Raises:
        FileExistsError: either file exists (keys are never overwritten).
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"a key name must be a plain file name, got {name!r}")
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_path, secret_path = folder / f"{name}.key", folder / f"{name}.key_secret"
    if public_path.exists() or secret_path.exists():
        raise FileExistsError(f"{public_path} or {secret_path} exists; keys are never overwritten")
    public, secret = zmq.curve_keypair()
    _write_private(secret_path, _certificate(public, secret))
    public_path.write_text(_certificate(public, None))
    return public_path, secret_path


def authorize(public_key_file: str | os.PathLike[str], allow_list: str | os.PathLike[str]) -> Path:
    """Copy a public key file into an allow-list folder (``authorized/`` or ``control/``)."""
    public = read_public(public_key_file)
    folder = Path(allow_list)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / Path(public_key_file).name
    target.write_text(_certificate(public, None))
    return target


def init_key_folder(folder: str | os.PathLike[str]) -> dict[str, str]:
    """A new key folder: server and client pairs, the client authorised on every socket."""
    folder = Path(folder)
    server_public, server_secret = write_keypair(folder, SERVER)
    client_public, client_secret = write_keypair(folder, CLIENT)
    authorize(client_public, folder / AUTHORIZED)
    authorize(client_public, folder / CONTROL)
    return {
        "folder": str(folder),
        "server_public": str(server_public),
        "server_secret": str(server_secret),
        "client_public": str(client_public),
        "client_secret": str(client_secret),
    }


def read_public(path: str | os.PathLike[str]) -> bytes:
    """The z85 public key in a key file."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise KeyFileError(f"cannot read a CURVE key from {path}: {error}") from None
    if not public or len(public) != 40:
        raise KeyFileError(f"{path} holds no 40-character z85 public key")
    return public


def read_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a secret key file that only its owner may read."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"secret key file {path} does not exist")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeyFileError(
            f"secret key file {path} is readable by group or others: chmod 600 {path}"
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise KeyFileError(f"cannot read CURVE keys from {path}: {error}") from None
    if not public or not secret or len(public) != 40 or len(secret) != 40:
        raise KeyFileError(f"{path} holds no z85 public and secret key pair")
    return public, secret


def read_allow_list(folder: str | os.PathLike[str]) -> set[bytes]:
    """The z85 public keys of every ``*.key`` file in an allow-list folder (empty if none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    return {read_public(path) for path in sorted(folder.glob("*.key"))}


@dataclass(frozen=True)
class ClientKeys:
    """A client's CURVE keys: its own pair and the endpoint's public key (z85 bytes)."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike[str], name: str = CLIENT, server: str = SERVER
    ) -> ClientKeys:
        """``folder/name.key_secret`` and ``folder/server.key``."""
        folder = Path(folder)
        public, secret = read_secret(folder / f"{name}.key_secret")
        return cls(public, secret, read_public(folder / f"{server}.key"))

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the endpoint (before it connects)."""
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
        socket.curve_serverkey = self.server_public


@dataclass(frozen=True)
class ServerKeys:
    """The endpoint's CURVE key pair (z85 bytes)."""

    public: bytes
    secret: bytes

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], name: str = SERVER) -> ServerKeys:
        return cls(*read_secret(Path(folder) / f"{name}.key_secret"))

    def apply(self, socket: zmq.Socket, zap_domain: str) -> None:
        """Make ``socket`` a CURVE server whose clients the ZAP handler of ``zap_domain``
        checks (before it binds)."""
        socket.zap_domain = zap_domain.encode()
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True


KeySource = ClientKeys | str | os.PathLike[str] | None


def client_keys(keys: KeySource = None) -> ClientKeys | None:
    """Resolve a client's keys: given keys, a key folder, or ``$BLUESKY_PTYCHONN_KEYS``.

    None (no keys anywhere) means a plain connection, which only a loopback endpoint
    without keys accepts.
    """
    if isinstance(keys, ClientKeys):
        return keys
    if keys is None:
        keys = os.environ.get(KEYS_ENV) or None
        if keys is None:
            return None
    return ClientKeys.from_folder(keys)
