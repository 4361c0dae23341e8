"""`Session`: the composition root of a beamline session.

One object builds the live pipeline of `ARCHITECTURE.md` from one `SessionConfig`:

```
 devices (devices.config: simulated hutch, or EPICS prefixes)  ─ stage, detector(s)
 inference endpoint: a local `bluesky-ptychonn serve` child process | a remote one's addresses
     └─ `InferenceEndpoint` device (frames of the configured detector go to it while staged)
 Tiled: an embedded server child process (SQLite catalog, API key) | a URI and a key
 RunEngine ─┬─ LiveStitcher (the endpoint's results)  ─ consumers: LiveMosaicView (PNG / ZMQ),
            │                                                    LiveMosaicWriter (final)
            ├─ LiveMosaicView, LiveMosaicWriter (periodic snapshots of the stitcher)
            ├─ SpooledTiledWriter (the raw run; result writes of the mosaic writer)
            └─ the continual-learning dispatcher ([continual] enabled = true)
```

The session owns every process and server it starts: `close` (also run at interpreter exit,
and by ``with Session(...)``) stops them in order, after the last run's final mosaic has been
handed on, and may be called any number of times. The IPython profile, the queue server's
startup, the demo, the ``callbacks`` command and the tests all build their graph here.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from pathlib import Path
from typing import Any

from .callbacks import CallbackGraph, build_callbacks
from .config import SessionConfig, load_session_config

__all__ = ["Session"]

log = logging.getLogger(__name__)


class Session:
    """A beamline session built from a configuration (see the module docstring).

    Args:
        config: the configuration (default: `load_session_config()`, i.e. the file named by
            ``$BLUESKY_PTYCHONN_BEAMLINE`` or the simulated defaults).
        RE: a RunEngine to subscribe the callbacks to (default: a new one).
        start_services: start the local endpoint and the embedded Tiled server and subscribe
            the callbacks. False builds only the devices (with the endpoint device, which
            needs nothing running until a scan stages it) and the RunEngine: what a listing
            of plans and devices (``qserver-list-plans-devices``) needs.

    Attributes:
        config: the `SessionConfig`.
        RE: the RunEngine.
        devices: every device by name (``stage``, detectors, ``endpoint``; ``hutch`` in
            simulation).
        stage, detector, endpoint: the stage, the detector whose frames are inferred, the
            `InferenceEndpoint` device (None when ``[endpoint] enabled = false``).
        stitcher, live_view, view, tiled_writer, mosaic_writer, dispatcher: the callbacks (None
            when not configured, not started, or in another process); ``view.url`` is the
            browser view's page.
        remote_callbacks: the `RemoteCallbacks` (proxy, callbacks process, publisher) with
            ``[callbacks] process = true``, else None.
        tiled_client: a read/write ``tiled.client`` node (the catalog's root), or None.
        catalog: a `TiledCatalog` on it (raw runs, reconstructions, ...), or None.
        tiled_uri: the Tiled server's URI, or None.
        endpoint_process, tiled_server: the child processes this session started, or None.
    """

    def __init__(
        self,
        config: SessionConfig | None = None,
        *,
        RE: Any = None,  # noqa: N803 (bluesky's name for it)
        start_services: bool = True,
    ):
        self.config = config if config is not None else load_session_config()
        self.RE = RE
        self.devices: dict[str, Any] = {}
        self.stage = self.detector = self.endpoint = None
        self.graph = CallbackGraph()
        self.remote_callbacks: Any = None  # [callbacks] process = true
        self.dispatcher = None
        self.agent: Any = None  # [agent] enabled = true: an adaptive.MosaicAgent
        self.tiled_client = self.catalog = None
        self.tiled_uri: str | None = None
        self.endpoint_process = self.tiled_server = None
        self.model_dir: Path | None = None
        self._tokens: list[int] = []
        self._closed = False
        self._close_lock = threading.Lock()
        try:
            self._build(start_services)
        except BaseException:
            self.close()
            raise
        # registered after the services (atexit runs last-in first-out), so that at exit the
        # session hands its last runs on before the servers' own exit hooks stop them
        atexit.register(self._close_at_exit)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Session:
        """A session from a TOML file (default ``$BLUESKY_PTYCHONN_BEAMLINE``, else defaults)."""
        return cls(load_session_config(path), **kwargs)

    # ---- building ---------------------------------------------------------------------------
    def _build(self, start_services: bool) -> None:
        from bluesky import RunEngine

        from ..devices.config import build_devices

        config = self.config
        self.devices = build_devices(config.beamline)
        self.stage = self.devices["stage"]
        if self.RE is None:
            self.RE = RunEngine({})
        settings = config.endpoint
        if settings.enabled:
            if settings.detector not in self.devices:
                raise ValueError(
                    f"[endpoint] detector = {settings.detector!r}, but the session has "
                    f"{sorted(k for k in self.devices if k not in ('hutch', 'stage'))}"
                )
            self.detector = self.devices[settings.detector]
        if start_services:
            self._start_services()
        if settings.enabled:
            self.endpoint = self._endpoint_device()
            self.devices["endpoint"] = self.endpoint
            if self.detector is not None:
                self.endpoint.follow(self.detector)  # a reading holds its point's frame
        if config.agent.get("enabled", False):
            self.agent = self._agent()
        if start_services:
            self._subscribe_callbacks()

    def _start_services(self) -> None:
        """Start the local endpoint and the embedded Tiled server side by side."""
        from ..inference.process import EndpointProcess
        from ..storage.tiled_server import TiledServerProcess

        config = self.config
        endpoint, tiled = config.endpoint, config.tiled
        keys = self._use_keys()
        if endpoint.enabled and not endpoint.remote:
            self.model_dir = self._model()
            self.endpoint_process = EndpointProcess(
                self.model_dir,
                keys=keys,
                backend=endpoint.backend,
                batch_size=endpoint.batch_size,
                threads=endpoint.threads,
                precision=endpoint.precision,
                lanes=endpoint.lanes,
                startup_timeout_s=endpoint.startup_timeout_s,
            )
        if tiled.enabled and tiled.uri is None:
            self.tiled_server = TiledServerProcess(
                Path(tiled.data_dir).expanduser() if tiled.data_dir else config.data_dir / "tiled",
                readable=[Path(p).expanduser() for p in tiled.readable],
                startup_timeout_s=tiled.startup_timeout_s,
            )
        errors: list[BaseException] = []

        def start(service: Any) -> None:
            try:
                service.start()
            except BaseException as error:  # noqa: BLE001 - re-raised below
                errors.append(error)

        threads = [
            threading.Thread(target=start, args=(service,), name=f"start-{type(service).__name__}")
            for service in (self.endpoint_process, self.tiled_server)
            if service is not None
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def _model(self) -> Path:
        model = self.config.endpoint.model
        if model == "demo":
            from ..model.demo_model import DemoModelRecipe, default_cache_dir, ensure_demo_model

            cached = default_cache_dir() / "models" / f"demo-{DemoModelRecipe().key()}"
            if not (cached / "model.json").is_file():
                log.warning(
                    "training the demo network first (about 6 minutes on two CPU cores; cached "
                    "in %s); set [endpoint] model to serve another one",
                    cached,
                )
            return ensure_demo_model()
        path = Path(model).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"[endpoint] model = {model!r}: {path} does not exist")
        return path

    def _addresses(self) -> tuple[str, str, str]:
        settings = self.config.endpoint
        if settings.remote:
            return settings.frames, settings.results, settings.control  # type: ignore[return-value]
        if self.endpoint_process is None:  # not started here: where it would listen
            from ..inference.process import EndpointProcess

            self.endpoint_process = EndpointProcess(Path(settings.model))
        return self.endpoint_process.addresses

    def _use_keys(self) -> Path | None:
        """The ``[endpoint] keys`` folder, made the default of every client in this process
        and its children (``$BLUESKY_PTYCHONN_KEYS``), or None."""
        keys = self.config.endpoint.keys
        if keys is None:
            return None
        from ..stream.security import KEYS_ENV

        folder = Path(keys).expanduser()
        if os.environ.get(KEYS_ENV) != str(folder):
            log.info("endpoint clients use the CURVE keys in %s", folder)
            os.environ[KEYS_ENV] = str(folder)
        return folder

    def _endpoint_device(self) -> Any:
        from ..devices.endpoint import InferenceEndpoint

        self._use_keys()
        settings = self.config.endpoint
        frames, results, control = self._addresses()
        hutch = self.devices.get("hutch")
        source = None
        if hutch is not None:  # the simulated detector hands its frames over in process
            source = hutch.detectors[settings.detector]
        return InferenceEndpoint(
            frames,
            results,
            control,
            source=source,
            name="endpoint",
            connect_timeout_s=settings.connect_timeout_s,
            flush_timeout_s=settings.flush_timeout_s,
        )

    def _subscribe_callbacks(self) -> None:
        config = self.config
        tiled_uri = api_key = None
        if config.tiled.enabled:
            if self.tiled_server is not None:
                tiled_uri, api_key = self.tiled_server.uri, self.tiled_server.api_key
            else:
                tiled_uri, api_key = config.tiled.uri, os.environ.get(config.tiled.api_key_env)
        results = None if self.endpoint is None else self.endpoint.results_address.get()
        if config.callbacks.process:
            from ..storage.tiled_catalog import connect
            from .remote import RemoteCallbacks

            self.remote_callbacks = RemoteCallbacks(
                config,
                results_address=results,
                tiled_uri=tiled_uri,
                api_key=api_key,
                control_address=None if self.endpoint is None else self.endpoint.control_address,
            ).start()
            self._subscribe(self.remote_callbacks.publisher)
            self.catalog = None if tiled_uri is None else connect(tiled_uri, api_key=api_key)
        else:
            hutch = self.devices.get("hutch")
            self.graph = build_callbacks(
                config,
                results_address=results,
                tiled_uri=tiled_uri,
                api_key=api_key,
                control_address=None if self.endpoint is None else self.endpoint.control_address,
                frame_source=None
                if hutch is None or self.endpoint is None
                else hutch.detectors[config.endpoint.detector],
            )
            for callback in self.graph.callbacks:
                self._subscribe(callback)
            self.catalog = self.graph.catalog
            if self.graph.stitcher is not None and self.detector is not None:
                beamline = getattr(self.detector, "beamline", None)  # simulated detectors
                probe = getattr(beamline, "probe_on_readout_grid", None)
                if probe is not None:
                    self.graph.stitcher.use_probe(probe)  # the live weight follows the beam
        self.tiled_uri = tiled_uri
        self.tiled_client = None if self.catalog is None else self.catalog.root
        if config.continual_enabled:
            from ..retrain.dispatcher import dispatcher_from_config

            table = dict(config.continual)
            if config.endpoint.precision == "int8":  # ship int8 graphs calibrated on scans
                table["promote"] = {"int8": True, **dict(table.get("promote", {}))}
            self.dispatcher = dispatcher_from_config(
                table,
                tiled_client=self.tiled_client,
                endpoint_control_address=(
                    None if self.endpoint is None else self.endpoint.control_address
                ),
                model_dir=None if self.model_dir is None else str(self.model_dir),
                stitcher=self.graph.stitcher,  # None with the callbacks in another process
            )
            self._subscribe(self.dispatcher)
            from ..retrain.status import status_device

            # the loop's state as a device: bps.rd(continual.state), or a run's baseline
            self.devices["continual"] = status_device(self.dispatcher)
            if self.view is not None:
                self.view.watch_continual(self.dispatcher)

    def _agent(self) -> Any:
        """The adaptive agent of the ``[agent]`` table (beam size from the stage)."""
        from ..adaptive import MosaicAgent
        from .config import agent_options

        table = self.config.agent
        options = agent_options(table, beam_size_m=float(self.stage.beam_size.get()))
        checkpoint = table.get("checkpoint_path")
        return MosaicAgent(options, checkpoint_path=checkpoint)

    def _subscribe(self, callback: Any) -> None:
        self._tokens.append(self.RE.subscribe(callback))

    # ---- use --------------------------------------------------------------------------------
    def namespace(self) -> dict[str, Any]:
        """Names for a user namespace (IPython, the queue server's startup): the session, its
        RunEngine, every device, the stitcher and the Tiled clients."""
        names = {"session": self, "RE": self.RE, **self.devices}
        for name in ("stitcher", "catalog", "tiled_client", "agent"):
            if getattr(self, name) is not None:
                names[name] = getattr(self, name)
        return names

    def wait(self, timeout_s: float = 120.0) -> bool:
        """Wait until the finished runs are fully handed on: final mosaics made and written,
        documents delivered to Tiled. False if ``timeout_s`` passed first. With the callbacks
        in another process (``[callbacks] process = true``) this returns at once: look for the
        results in Tiled."""
        return self.graph.wait(timeout_s)

    def refine_last_scan(self, iterations: int = 10, *, options: Any = None) -> Any:
        """N ePIE iterations of the newest finished run, started from its live mosaic.

        Reads the run back from Tiled (patterns, positions, geometry), takes the stitcher's
        final mosaic of that run as the starting object (`recon.refine.refine_from_mosaic`,
        which resamples it to the data's object pixels and refuses it when it does not cover
        the scan), and returns the `Reconstruction`. The reconstruction's probe then weights the
        live stitching of the next runs. Runs in the caller's thread (seconds to minutes):
        call it between scans, not from a callback.

        Args:
            iterations: ePIE iterations from the mosaic.
            options: `recon.EPIEOptions` (default: its defaults).

        Raises:
            RuntimeError: no stitcher, no Tiled, or no finished run yet.
        """
        import numpy as np

        from ..dataset import ComplexImage
        from ..recon.refine import refine_from_mosaic
        from ..storage.tiled_runs import dataset_from_run

        if self.graph.stitcher is None or self.catalog is None:
            raise RuntimeError("refining the last scan needs the stitcher and Tiled in-process")
        snapshot = self.graph.stitcher.last_snapshot
        if snapshot is None or not snapshot.run_uid:
            raise RuntimeError("no finished run with a final mosaic yet")
        self.graph.wait()
        dataset = dataset_from_run(self.catalog.raw[snapshot.run_uid])
        if dataset.probe is None and self.detector is not None:
            beamline = getattr(self.detector, "beamline", None)
            dataset.probe = getattr(beamline, "probe_on_readout_grid", None)
        mosaic = ComplexImage(
            snapshot.amplitude * np.exp(1j * snapshot.phase),
            snapshot.pixel_size_m,
            snapshot.origin_m,
        )
        result = refine_from_mosaic(
            dataset, mosaic, iterations, options=options, weights=snapshot.weights
        )
        if result.probe is not None:
            self.graph.stitcher.use_probe(result.probe)
        return result

    @property
    def stitcher(self) -> Any:
        return self.graph.stitcher

    @property
    def live_view(self) -> Any:
        return self.graph.live_view

    @property
    def view(self) -> Any:
        """The browser view (``[view] enabled = true``; ``session.view.url``), or None."""
        return self.graph.view

    @property
    def tiled_writer(self) -> Any:
        return self.graph.tiled_writer

    @property
    def mosaic_writer(self) -> Any:
        return self.graph.mosaic_writer

    def describe(self) -> str:
        """One paragraph: what the session holds and how to start."""
        mode = self.config.beamline.get("mode", "sim")
        devices = ", ".join(sorted(k for k in self.devices if k != "hutch"))
        lines = [f"bluesky-ptychonn session ({mode}): devices {devices}."]
        if self.endpoint is not None:
            if self.config.endpoint.remote:
                where = "remote"
            elif self.model_dir is None:
                where = "local, not started by this session"
            else:
                where = f"local, model {self.model_dir}"
            lines.append(f"  endpoint: {self.endpoint.control_address} ({where})")
        if self.tiled_uri is not None:
            lines.append(f"  Tiled: {self.tiled_uri} (session.catalog, session.tiled_client)")
        if self.live_view is not None and self.live_view.png_path is not None:
            lines.append(f"  live mosaic: {self.live_view.png_path}")
        if self.view is not None:
            lines.append(f"  live view in a browser: {self.view.url}")
        if self.dispatcher is not None:
            lines.append("  continual learning: on")
        if self.agent is not None:
            o = self.agent.options
            lines.append(f"  adaptive agent: {o.mode.value}, {o.max_points} points over "
                         f"{list(o.region_m)} m (agent; plans.adaptive_problem)")  # fmt: skip
        return "\n".join(lines)

    # ---- closing ----------------------------------------------------------------------------
    def close(self, timeout_s: float = 60.0) -> None:
        """Hand the last runs on (up to ``timeout_s``), unsubscribe the callbacks and stop
        every process and server this session started; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.wait(timeout_s)
        except Exception:  # noqa: BLE001 - closing goes on whatever happened
            log.exception("waiting for the last runs at session close failed")
        for token in self._tokens:
            self.RE.unsubscribe(token)
        self._tokens.clear()
        if self.dispatcher is not None:
            try:
                self.dispatcher.close()
            except Exception:  # noqa: BLE001 - the next parts still get closed
                log.exception("closing the session's continual-learning dispatcher failed")
        for name, error in self.graph.close(timeout_s):
            log.error("closing the session's %s failed: %s", name, error)
        if self.remote_callbacks is not None:
            try:
                self.remote_callbacks.close(timeout_s)
            except Exception:  # noqa: BLE001 - the next parts still get closed
                log.exception("closing the session's callbacks process failed")
        steps = [
            ("endpoint_process", lambda p: p.stop()),
            ("tiled_server", lambda t: t.stop()),
        ]
        for name, step in steps:
            part = getattr(self, name)
            if part is None:
                continue
            try:
                step(part)
            except Exception:  # noqa: BLE001 - the next parts still get closed
                log.exception("closing the session's %s failed", name)
        hutch = self.devices.get("hutch")
        if hutch is not None:
            hutch.close()
        atexit.unregister(self._close_at_exit)

    def _close_at_exit(self) -> None:
        self.close(timeout_s=10.0)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Session {self.config.beamline.get('mode', 'sim')} {state}>"
