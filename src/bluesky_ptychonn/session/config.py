"""The configuration of a beamline session: one TOML file, simulated by default.

The file named by ``BLUESKY_PTYCHONN_BEAMLINE`` (or passed to `load_session_config`) holds the
devices' settings at the top level, exactly as `devices.config` reads them (``mode``,
``[stage]``, ``[eiger]``, ``[medipix3]``, ``[sim]``, ...), and one table per part of the live
pipeline that the session builds. Every table and key is optional; an unknown one is refused,
naming the table and the keys it knows. Units are in the names (``_s``, ``_m``).

    data_dir = "~/.local/share/bluesky-ptychonn"   # the session's folders (Tiled, spool, PNG)

    [endpoint]                 # the inference endpoint
    model = "demo"             # "demo" (cached demo network, trained on first use) or a path
    # frames = "tcp://edge:5560"; results = "tcp://edge:5561"; control = "tcp://edge:5562"
    #                          # all three: a remote endpoint, nothing started here
    detector = "eiger"         # whose frames stream to it (simulated beamline)

    [tiled]                    # embedded server (SQLite catalog, API key) unless uri is set
    # uri = "https://tiled.facility.org/api/v1/metadata/pty"; the key from $TILED_API_KEY
    mosaic_period_s = 5.0

    [stitcher]
    settle_timeout_s = 60.0

    [live_view]
    period_s = 1.0             # png_path defaults to <data_dir>/live-mosaic.png

    [view]                     # the live view in a browser (off by default)
    enabled = false            # true: session.view.url (loopback, a free port by default)

    [callbacks]
    process = false            # true: stitcher, view and writers in a child process over 0MQ

    [continual]                # the continual-learning loop (bluesky_ptychonn.retrain)
    enabled = false            # the rest of the table goes to retrain.dispatcher

    [agent]                    # the adaptive agent (bluesky_ptychonn.adaptive.MosaicAgent)
    enabled = false            # true: region_m and budget_points, AgentOptions' other keys

See docs/session.md for every key.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..devices.config import ENV_VAR, SECTIONS, check_settings

__all__ = [
    "ENV_VAR",
    "CallbacksSettings",
    "EndpointSettings",
    "LiveViewSettings",
    "SessionConfig",
    "StitcherSettings",
    "TiledSettings",
    "ViewSettings",
    "default_session_dir",
    "load_session_config",
]


def default_session_dir() -> Path:
    """``$XDG_DATA_HOME/bluesky-ptychonn`` (``~/.local/share/bluesky-ptychonn`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bluesky-ptychonn"


@dataclass
class EndpointSettings:
    """``[endpoint]``: the inference endpoint.

    Attributes:
        enabled: build the endpoint device (and the stitcher, live view and mosaic writer).
        model: what a local endpoint serves: "demo" (the cached demo network, trained on first
            use, about 6 minutes on two cores) or a model directory / sidecar / ONNX file.
        frames, results, control: a remote endpoint's addresses (all three, or none: a local
            ``bluesky-ptychonn serve`` child process on free loopback ports).
        detector: the detector whose frames stream to the endpoint (simulated beamline; a real
            detector streams by itself, e.g. `bluesky-ptychonn pva-ingest`).
        backend, precision, batch_size, threads, lanes: the local endpoint's engine
            (`inference.process.EndpointProcess`).
        startup_timeout_s: longest wait for the local endpoint to be ready, s.
        connect_timeout_s: longest wait for the endpoint's answer when a scan stages it, s.
        flush_timeout_s: longest wait at the end of a scan for unanswered frames, s.
        keys: CURVE key folder (`bluesky-ptychonn keys init DIR`): a local endpoint serves
            with it, and every client of the session (device, stitcher, callbacks process,
            continual-learning push) uses its ``client.key_secret`` and ``server.key``
            (through ``$BLUESKY_PTYCHONN_KEYS``). Required for an endpoint beyond loopback.
    """

    enabled: bool = True
    model: str = "demo"
    frames: str | None = None
    results: str | None = None
    control: str | None = None
    detector: str = "eiger"
    backend: str = "auto"
    precision: str | None = None
    batch_size: int = 32
    threads: int | None = None
    lanes: int = 1
    startup_timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    flush_timeout_s: float = 60.0
    keys: str | None = None

    @property
    def remote(self) -> bool:
        return self.control is not None


@dataclass
class TiledSettings:
    """``[tiled]``: where runs and mosaics are written.

    Attributes:
        enabled: write runs (`SpooledTiledWriter`) and live mosaics (`LiveMosaicWriter`).
        uri: a Tiled server (or container) to write to; None: an embedded server (a child
            process, SQLite catalog, API key in ``<data_dir>/tiled/api_key``) started here.
        api_key_env: the environment variable holding the key of ``uri``'s server.
        data_dir: the embedded server's folder (default ``<data_dir>/tiled``).
        spool_dir: the writer's on-disk spool (default ``<data_dir>/spool``).
        readable: folders of external files (fly scans' HDF5) the embedded server may read.
        batch_size: events per table append.
        mosaic_period_s: seconds between live-mosaic snapshots during a scan (0: final only).
        startup_timeout_s: longest wait for the embedded server, s.
    """

    enabled: bool = True
    uri: str | None = None
    api_key_env: str = "TILED_API_KEY"
    data_dir: str | None = None
    spool_dir: str | None = None
    readable: list[str] = field(default_factory=list)
    batch_size: int = 50
    mosaic_period_s: float = 5.0
    startup_timeout_s: float = 90.0


@dataclass
class StitcherSettings:
    """``[stitcher]``: `LiveStitcher` options (see its docstring)."""

    settle_timeout_s: float = 60.0
    synchronise: bool = True
    resync_every: int | None = None
    subpixel: bool = False
    align_phase: bool = True


@dataclass
class LiveViewSettings:
    """``[live_view]``: `LiveMosaicView` options.

    Attributes:
        enabled: draw the live mosaic.
        period_s: seconds between updates.
        png_path: where the picture goes (default ``<data_dir>/live-mosaic.png``).
        publish_address: a ZMQ address to publish snapshots on (None: no publishing).
    """

    enabled: bool = True
    period_s: float = 1.0
    png_path: str | None = None
    publish_address: str | None = None


@dataclass
class ViewSettings:
    """``[view]``: the live view in a browser (`view.LiveView`).

    Attributes:
        enabled: serve the page (``session.view.url``).
        host: the address to listen on; anything but loopback needs a token.
        port: the TCP port (0: a free one, named by ``session.view.url``).
        token_env: the environment variable holding the read-only token (required off
            loopback; at least 16 characters). Unset or empty: no token.
        max_rate_hz: the most updates a second of the page (images and numbers); the newest
            wins, what arrives in between is not shown.
        status_period_s: seconds between polls of the endpoint's status.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    token_env: str = "BLUESKY_PTYCHONN_VIEW_TOKEN"
    max_rate_hz: float = 5.0
    status_period_s: float = 1.0

    @property
    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None


@dataclass
class CallbacksSettings:
    """``[callbacks]``: where the stitcher, live view and Tiled writers run.

    Attributes:
        process: in a child process (``bluesky-ptychonn callbacks``) fed by bluesky's 0MQ
            ``Publisher`` through a ``bluesky-0MQ-proxy`` child, instead of in the RunEngine's
            process. It reads the same configuration file.
        proxy_in, proxy_out: the proxy's addresses (``host:port``); default: free loopback
            ports and a proxy started here. Given both: an existing proxy, none started.
        startup_timeout_s: longest wait for the callbacks process, s.
    """

    process: bool = False
    proxy_in: str | None = None
    proxy_out: str | None = None
    startup_timeout_s: float = 60.0


SESSION_TABLES = {
    "endpoint": EndpointSettings,
    "tiled": TiledSettings,
    "stitcher": StitcherSettings,
    "live_view": LiveViewSettings,
    "view": ViewSettings,
    "callbacks": CallbacksSettings,
}
FREE_TABLES = ("continual", "agent")  # handed on as they are (checked by their owners)
SESSION_KEYS = {"data_dir", *SESSION_TABLES, *FREE_TABLES}


AGENT_SESSION_KEYS = ("enabled", "checkpoint_path")  # the [agent] keys that are not AgentOptions'


def agent_options(table: dict[str, Any], beam_size_m: float) -> Any:
    """`adaptive.AgentOptions` from an ``[agent]`` table (``beam_size_m`` unless the table
    gives one)."""
    from ..adaptive.options import AgentOptions

    options = {k: v for k, v in table.items() if k not in AGENT_SESSION_KEYS}
    if "region_m" in options:
        options["region_m"] = tuple(options["region_m"])
    options.setdefault("beam_size_m", beam_size_m)
    return AgentOptions(**options)


def check_agent_table(table: dict[str, Any], where: str) -> None:
    """Refuse an enabled ``[agent]`` table with unknown, missing or bad keys (named)."""
    from ..adaptive.options import AgentOptions

    known = ({f.name for f in fields(AgentOptions)} - {"extra"}) | set(AGENT_SESSION_KEYS)
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{where} [agent]: unknown keys {unknown}; known: {sorted(known)}")
    missing = [k for k in ("region_m", "budget_points") if k not in table]
    if missing:
        raise ValueError(f"{where} [agent]: enabled = true needs {missing}")
    try:
        agent_options(table, beam_size_m=float(table.get("beam_size_m", 1e-7)))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} [agent]: {error}") from None


@dataclass
class SessionConfig:
    """A whole session's configuration (see the module docstring).

    Attributes:
        beamline: the devices' settings, as `devices.config.build_devices` takes them.
        data_dir: the session's folder.
        endpoint, tiled, stitcher, live_view, view, callbacks: the tables, as dataclasses.
        continual: the ``[continual]`` table as written (``enabled`` and the dispatcher's keys).
        agent: the ``[agent]`` table as written.
        source: the file it was read from (None: defaults or a dict).
    """

    beamline: dict[str, Any] = field(default_factory=lambda: {"mode": "sim"})
    data_dir: Path = field(default_factory=default_session_dir)
    endpoint: EndpointSettings = field(default_factory=EndpointSettings)
    tiled: TiledSettings = field(default_factory=TiledSettings)
    stitcher: StitcherSettings = field(default_factory=StitcherSettings)
    live_view: LiveViewSettings = field(default_factory=LiveViewSettings)
    view: ViewSettings = field(default_factory=ViewSettings)
    callbacks: CallbacksSettings = field(default_factory=CallbacksSettings)
    continual: dict[str, Any] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @classmethod
    def from_dict(cls, settings: dict[str, Any], *, where: str = "session") -> SessionConfig:
        """Check ``settings`` (a parsed TOML file) and build the configuration.

        Raises:
            ValueError: an unknown table or key, a value of the wrong type, a partial remote
                endpoint, or an enabled adaptive agent; the message names the table and key.
        """
        settings = dict(settings)
        unknown = set(settings) - SESSION_KEYS - SECTIONS
        if unknown:
            raise ValueError(
                f"{where}: unknown settings {sorted(unknown)}; known: "
                f"{sorted(SESSION_KEYS | SECTIONS)}"
            )
        beamline = {key: settings.pop(key) for key in list(settings) if key in SECTIONS}
        beamline.setdefault("mode", "sim")
        check_settings(beamline, where)
        tables: dict[str, Any] = {}
        for name, kind in SESSION_TABLES.items():
            tables[name] = _table(kind, settings.get(name, {}), f"{where} [{name}]")
        for name in FREE_TABLES:
            table = settings.get(name, {})
            if not isinstance(table, dict):
                raise ValueError(f"{where}: [{name}] must be a table, got {table!r}")
            if not isinstance(table.get("enabled", False), bool):
                raise ValueError(f"{where} [{name}]: enabled must be true or false")
            tables[name] = dict(table)
        if tables["agent"].get("enabled", False):
            check_agent_table(tables["agent"], where)
        endpoint = tables["endpoint"]
        given = [key for key in ("frames", "results", "control") if getattr(endpoint, key)]
        if given and len(given) != 3:
            raise ValueError(
                f"{where} [endpoint]: a remote endpoint needs frames, results and control "
                f"addresses; only {given} given"
            )
        view = tables["view"]
        if not 0 <= view.port < 65536:
            raise ValueError(f"{where} [view]: port must be 0-65535, got {view.port}")
        if not view.max_rate_hz > 0:
            raise ValueError(f"{where} [view]: max_rate_hz must be positive")
        proxy = [tables["callbacks"].proxy_in, tables["callbacks"].proxy_out]
        if any(proxy) and not all(proxy):
            raise ValueError(f"{where} [callbacks]: give both proxy_in and proxy_out, or neither")
        data_dir = Path(os.path.expanduser(str(settings.get("data_dir", default_session_dir()))))
        return cls(beamline=beamline, data_dir=data_dir, **tables)

    @property
    def continual_enabled(self) -> bool:
        return bool(self.continual.get("enabled", False))


def load_session_config(path: str | os.PathLike[str] | None = None) -> SessionConfig:
    """The configuration in ``path``, else in the file named by ``BLUESKY_PTYCHONN_BEAMLINE``,
    else the defaults (simulated beamline, local endpoint, embedded Tiled)."""
    path = path if path is not None else os.environ.get(ENV_VAR)
    if not path:
        return SessionConfig.from_dict({})
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"session configuration {path} not found (from ${ENV_VAR}?)")
    with path.open("rb") as handle:
        try:
            settings = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML: {error}") from None
    config = SessionConfig.from_dict(settings, where=str(path))
    config.source = path
    return config


def _table(kind: type, table: Any, where: str) -> Any:
    """A settings dataclass from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {table!r}")
    hints = typing.get_type_hints(kind)
    known = {f.name for f in fields(kind)}
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    values = {}
    for key, value in table.items():
        values[key] = _coerce(value, hints[key], f"{where} {key}")
    return kind(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool) and isinstance(value, origin):
            return value
        if origin is list and isinstance(value, list):
            return list(value)
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))
    raise ValueError(f"{where}: expected {names}, got {value!r}")
