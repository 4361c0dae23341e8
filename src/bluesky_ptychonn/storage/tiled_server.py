"""An embedded Tiled server: a real ``tiled serve config`` process on a data folder.

`TiledServerProcess` runs Tiled's own server (``python -m tiled serve config``) as a child
process bound to loopback by default, with everything it stores under one data folder:

=========================  =====================================================================
``DIR/api_key``            the single-user API key (mode 0600), created when no key is given
``DIR/config.yml``         the Tiled server configuration this module writes (no secret inside)
``DIR/catalog.db``         the SQLite catalog (nodes, metadata, data sources)
``DIR/data/``              writable file storage (zarr arrays: frames, mosaics, model files)
``DIR/tabular.duckdb``     the tabular store (event tables written by TiledWriter)
``DIR/server.log``         the server's stdout and stderr (mode 0600: Tiled prints the key)
=========================  =====================================================================

The configuration registers the ``BlueskyRun: application/json-seq`` exporter (so
``run.documents()`` replays a run) and, by default, an in-memory streaming cache (so Tiled
clients can subscribe to live updates). The API key reaches the server through the
``TILED_SINGLE_USER_API_KEY`` environment variable, never the command line (which other users
of the machine can read). Without ``public=True`` every request needs the key; with it,
anonymous clients may read but writing still needs the key.

The same client code talks to this server and to a facility's Tiled server: see
`bluesky_ptychonn.storage.tiled_catalog.connect`.
"""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from ..ports import free_port

__all__ = [
    "API_KEY_ENV",
    "TiledServerError",
    "TiledServerProcess",
    "default_data_dir",
    "resolve_api_key",
]

#: Environment variable holding the API key, read by the server command and by `connect`.
API_KEY_ENV = "TILED_API_KEY"
_SERVER_KEY_ENV = "TILED_SINGLE_USER_API_KEY"  # what Tiled's server reads
_STREAMING_DATA_TTL_S = 300  # live updates kept in the server's memory this long
_LOG_TAIL_CHARS = 3000
_BIND_ATTEMPTS = 3


class TiledServerError(RuntimeError):
    """The Tiled server process did not start, or stopped unexpectedly."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/bluesky-ptychonn/tiled`` (``~/.local/share/...`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bluesky-ptychonn" / "tiled"


def _check_key(key: str, where: str) -> str:
    key = key.strip()
    if not key or not key.isalnum():
        raise ValueError(
            f"the Tiled API key from {where} must be non-empty letters and digits only "
            "(Tiled's rule); generate one with: python -c 'import secrets; "
            "print(secrets.token_hex(32))'"
        )
    return key


def resolve_api_key(data_dir: str | os.PathLike[str], api_key: str | None = None) -> str:
    """The API key of a data folder's server: argument > ``$TILED_API_KEY`` > key file > new.

    A new key (64 hex digits) is written to ``DIR/api_key`` with mode 0600 (created with
    ``os.open(..., 0o600)``, so it is never readable by others, not even for an instant). An
    existing key file that group or others may read is refused, as ssh refuses such keys.

    Raises:
        ValueError: a key that is not alphanumeric.
        PermissionError: ``DIR/api_key`` is readable by group or others.
    """
    if api_key is not None:
        return _check_key(api_key, "the api_key argument")
    if os.environ.get(API_KEY_ENV):
        return _check_key(os.environ[API_KEY_ENV], f"${API_KEY_ENV}")
    path = Path(data_dir) / "api_key"
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(
                f"{path} has permissions {mode:04o}: the API key must be readable by its owner "
                f"only; run `chmod 600 {path}`"
            )
        return _check_key(path.read_text(), str(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def _yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    import json

    return json.dumps(str(value))


def write_server_config(
    data_dir: Path,
    *,
    readable: Sequence[str | os.PathLike[str]] = (),
    live: bool = True,
    tabular: str = "duckdb",
) -> Path:
    """Write ``DIR/config.yml`` for ``tiled serve config`` and create the storage folders."""
    data_dir = Path(data_dir).resolve()
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    if tabular == "duckdb":
        tabular_uri = f"duckdb:///{data_dir / 'tabular.duckdb'}"
    elif tabular == "sqlite":
        tabular_uri = f"sqlite:///{data_dir / 'tabular.sqlite'}"
    else:
        raise ValueError(f"tabular store must be 'duckdb' or 'sqlite', got {tabular!r}")
    catalog_uri = f"sqlite:///{data_dir / 'catalog.db'}"
    lines = [
        "# Written by bluesky-ptychonn (storage/tiled_server.py); rewritten at every start.",
        "catalog:",
        f"  uri: {_yaml_str(catalog_uri)}",
        "  init_if_not_exists: true",
        "  writable_storage:",
        f"    - {_yaml_str(str(data_dir / 'data'))}",
        f"    - {_yaml_str(tabular_uri)}",
    ]
    if readable:
        lines.append("  readable_storage:")
        lines += [f"    - {_yaml_str(str(Path(p).resolve()))}" for p in readable]
    lines += [
        "media_types:",
        "  BlueskyRun:",
        "    application/json-seq: bluesky_tiled_plugins.exporters:json_seq_exporter",
    ]
    if live:
        lines += [
            "streaming_cache:",
            "  uri: memory",
            f"  data_ttl: {_STREAMING_DATA_TTL_S}",
        ]
    path = data_dir / "config.yml"
    tmp = path.with_suffix(".yml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class TiledServerProcess:
    """A ``tiled serve config`` child process serving one data folder.

    Use it as a context manager, or call `start` and `stop`. It can be stopped and started
    again on the same folder and port (the resilience tests do exactly that).

    Args:
        data_dir: the data folder (created with mode 0700 when missing).
        host: interface to bind; loopback by default. Anything else exposes the server to
            the network: use a strong key and a firewall.
        port: TCP port; 0 picks a free one at the first start and keeps it for restarts.
        api_key: the key for writing (and reading, unless ``public``); default: see
            `resolve_api_key`.
        public: let clients without a key read (never write).
        readable: folders of external files (e.g. a detector's HDF5 files of fly scans)
            that the server may read; their registered data is never deleted by Tiled.
        live: enable the in-memory streaming cache (live subscriptions).
        tabular: the tabular store, "duckdb" (default) or "sqlite".
        startup_timeout_s: how long `start` waits for the server to answer ``/healthz``.

    Attributes:
        uri: ``http://host:port``, what `connect` and ``tiled.client.from_uri`` take.
        api_key: the key (keep it secret).
        log_path: the server's log file.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        public: bool = False,
        readable: Sequence[str | os.PathLike[str]] = (),
        live: bool = True,
        tabular: str = "duckdb",
        startup_timeout_s: float = 90.0,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host = host
        self.port = int(port)
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must lie in [0, 65535], got {port}")
        self.api_key = resolve_api_key(self.data_dir, api_key)
        self.public = public
        self.readable = [Path(p) for p in readable]
        self.live = live
        self.tabular = tabular
        self.startup_timeout_s = float(startup_timeout_s)
        self.log_path = self.data_dir / "server.log"
        self._process: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    # ---- addresses ------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_uri(self) -> str:
        return f"{self.uri}/api/v1"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TiledServerProcess {self.uri} data={self.data_dir} {state}>"

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> TiledServerProcess:
        """Start the server and wait until it answers; raise `TiledServerError` if it does not."""
        if self.running:
            return self
        config = write_server_config(
            self.data_dir, readable=self.readable, live=self.live, tabular=self.tabular
        )
        pick_port = self.port == 0
        for attempt in range(_BIND_ATTEMPTS):
            if pick_port:
                self.port = free_port(self.host)
            try:
                self._spawn(config)
                self._wait_ready()
                return self
            except TiledServerError:
                address_in_use = "address already in use" in self.log_tail().lower() or (
                    "error while attempting to bind" in self.log_tail().lower()
                )
                self.stop()
                if not (pick_port and address_in_use and attempt + 1 < _BIND_ATTEMPTS):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _command(self, config: Path) -> list[str]:
        command = [sys.executable, "-m", "tiled", "serve", "config", str(config)]
        command += ["--host", self.host, "--port", str(self.port)]
        if self.public:
            command.append("--public")
        return command

    def _spawn(self, config: Path) -> None:
        command = self._command(config)
        env = dict(os.environ)
        env[_SERVER_KEY_ENV] = self.api_key
        env.pop("TILED_CONFIG", None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.log_path, 0o600)
        with os.fdopen(fd, "ab") as log:
            log.write(f"\n--- bluesky-ptychonn: starting Tiled on {self.uri} ---\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it cleanly
            )
        # a child left running by a crashed parent would hold the port and the databases
        self._finalizer = weakref.finalize(self, _kill, self._process)
        atexit.register(self._finalizer)

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout_s
        url = f"{self.uri}/healthz"
        with httpx.Client(trust_env=False) as client:
            while True:
                if self._process is None or self._process.poll() is not None:
                    code = None if self._process is None else self._process.returncode
                    raise TiledServerError(
                        f"the Tiled server for {self.uri} exited with status {code} before it "
                        f"was ready (data folder {self.data_dir}); its log "
                        f"{self.log_path} ends with:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(url, timeout=1.0)
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TiledServerError(
                        f"the Tiled server did not answer {url} within "
                        f"{self.startup_timeout_s:.0f} s; its log {self.log_path} ends "
                        f"with:\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._finalizer is not None:
            atexit.unregister(self._finalizer)
            self._finalizer.detach()
            self._finalizer = None

    def restart(self) -> TiledServerProcess:
        self.stop()
        return self.start()

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of the server's log, with the API key blanked out (Tiled prints it)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text.replace(self.api_key, "<api key>")[-chars:]

    def __enter__(self) -> TiledServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- clients --------------------------------------------------------------------------
    def connect(self, *, api_key: str | None = ...):  # type: ignore[assignment]
        """A `TiledCatalog` on this server, with this server's key unless told otherwise."""
        from .tiled_catalog import connect

        return connect(self.uri, api_key=self.api_key if api_key is ... else api_key)
