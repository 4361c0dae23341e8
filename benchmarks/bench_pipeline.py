"""The live pipeline under load: simulated Eiger frames -> endpoint process -> live mosaic.

Measured in one run:

* ``raw_engine_fps``: the engine alone, in this process, on preprocessed batches of the
  endpoint's batch size (the ceiling the pipeline is compared against). With ``--lanes N``
  the endpoint runs N engines of ``cores // N`` threads side by side; the raw rate is then
  the larger of one all-threads engine and N such engines run by N threads at once (both
  are recorded: ``raw_single_engine_fps``, ``raw_lanes_fps``), so lanes are never compared
  against a lower ceiling than the plain engine's;
* for each offered rate (a fraction of the raw rate, ``--loads``: 0.25, 0.5, 0.9 and 1.0 by
  default; offered at the raw rate itself, the sustained rate is the pipeline's capacity):
  frames are sent on the wire by a
  `FrameStreamer` (with acknowledgements) at that rate, inferred by a real endpoint process
  (``bluesky-ptychonn serve``) and stitched into a `Mosaic` by a subscriber; ``sustained_fps``
  is frames stitched over the time from the first send to the last stitch, ``frames_lost`` is
  frames sent and never stitched, latencies run from frame creation to the mosaic update;
* with ``--endpoints N``: N endpoint processes (``endpoint-0`` ...) share the one frame
  stream (the source's PUSH socket spreads frames round-robin) and one subscriber merges
  their results into the mosaic; ``frames_by_endpoint`` counts the stitched frames by the
  endpoint tag each result carries, ``inferred_by_endpoint`` the endpoints' own counters
  (scale-out: on one machine the endpoints share its cores; on a GPU host each can own a
  GPU or a stream);
* ``stitch_patches_per_s``: `Mosaic.add` alone on 64x64 patches (no alignment and with
  greedy phase alignment), after one warm-up call that compiles its kernel;
* ``view``: the capacity (offered at the raw rate) with the browser view open against without,
  in alternating runs (``--view-pairs`` pairs: without, with, without, with, ...): with the
  view, a `view.LiveView` shows the mosaic, subscribes to the endpoint's results, polls its
  status and takes the frames from the source, and a headless Chromium (the system's
  ``chromium`` through Playwright; without them an HTTP client that reads the event stream and
  every changed panel) has the page open. ``capacity_ratio_view_vs_none`` is the median
  capacity with the view over the median without (goal: at least 0.95).

    bluesky-ptychonn bench pipeline --json benchmarks/results/pipeline.json [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bluesky_ptychonn.commands.bench import write_records
from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.inference.loader import load_engine
from bluesky_ptychonn.inference.process import EndpointProcess
from bluesky_ptychonn.inference.server import EndpointClient
from bluesky_ptychonn.model.architectures import build_model
from bluesky_ptychonn.model.checkpoint import save_model
from bluesky_ptychonn.model.preprocessing import Preprocessing
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
from bluesky_ptychonn.sim.scans import fermat_spiral
from bluesky_ptychonn.stitch import Mosaic, gaussian_weight
from bluesky_ptychonn.stitch.accumulate import warm_up
from bluesky_ptychonn.stream.sockets import ResultCollector
from bluesky_ptychonn.stream.streamer import FrameStreamer

BATCH = 32


def make_model(directory: Path, input_px: int) -> Path:
    """The edge model at ``input_px`` (weights untrained: speed does not depend on them)."""
    torch.manual_seed(0)
    model = build_model("edge", input_shape=input_px)
    reduce = "bin" if input_px < 128 else "crop"
    preprocessing = Preprocessing(
        input_shape=(input_px,) * 2, frame_shape=(128, 128), reduce=reduce
    )
    save_model(model, directory, preprocessing, version=f"bench-edge-{input_px}")
    return directory


def raw_engine_rate(
    model: Path,
    frames: np.ndarray,
    backend: str,
    precision: str | None,
    seconds: float,
    lanes: int = 1,
    **engine_options,
) -> float:
    """Frames/s of the endpoint's engine (same backend, precision, options; no spinning) at
    batch 32: one engine with the default threads, or ``lanes`` engines of ``cores // lanes``
    threads each, each driven by its own thread at the same time (the endpoint's lanes
    without the wire)."""
    import threading

    from bluesky_ptychonn.inference.onnx_engine import default_threads

    threads = None if lanes == 1 else max(1, default_threads() // lanes)
    engines = [
        load_engine(model, backend, precision=precision, spin=False, threads=threads,
                    **engine_options)
        for _ in range(lanes)
    ]  # fmt: skip
    x = engines[0].preprocessing.apply(frames[:BATCH])
    for engine in engines:
        engine.warmup((BATCH,))
    counts = [0] * lanes
    start = time.perf_counter()

    def drive(lane: int) -> None:
        while time.perf_counter() - start < seconds:
            engines[lane].run(x)
            counts[lane] += BATCH

    drivers = [threading.Thread(target=drive, args=(lane,)) for lane in range(lanes)]
    for driver in drivers:
        driver.start()
    for driver in drivers:
        driver.join()
    rate = sum(counts) / (time.perf_counter() - start)
    for engine in engines:
        engine.close()
    return rate


def stitch_rate(n: int, align: bool) -> float:
    """`Mosaic.add` of ``n`` 64x64 patches at random positions on a 2048x2048 canvas (64 MB,
    more than the cache holds), in batches of 256; the compiled kernel is warmed up first."""
    mosaic = Mosaic(
        PixelGrid.centred((2048, 2048), 10e-9), gaussian_weight((64, 64), 24), align_phase=align
    )
    rng = np.random.default_rng(0)
    positions = rng.uniform(-9e-6, 9e-6, (n, 2))
    phase = rng.uniform(-1, 1, (n, 64, 64)).astype(np.float32)
    warm_up()  # numba compiles (or loads its cache) here, not inside the timing
    start = time.perf_counter()
    for s in range(0, n, 256):
        mosaic.add(phase[s : s + 256], None, positions[s : s + 256])
    return n / (time.perf_counter() - start)


class _MosaicSource:
    """The benchmark's mosaic as a live view's source (``snapshot()`` under the stitch lock)."""

    def __init__(self, mosaic: list[Mosaic], lock: threading.Lock, run_uid: str):
        self.mosaic, self.lock, self.run_uid = mosaic, lock, run_uid

    @property
    def frames_stitched(self) -> int:
        return self.mosaic[0].frames_used if self.mosaic else 0

    def snapshot(self):
        if not self.mosaic:
            return None
        with self.lock:
            snapshot = self.mosaic[0].snapshot(model_version="bench")
        snapshot.run_uid = self.run_uid
        return snapshot


class ViewLooker:
    """The browser view of a benchmark run, open in a headless Chromium (or, without one, read
    by an HTTP client that follows the event stream and fetches every changed panel)."""

    def __init__(self, endpoint, mosaic, lock, positions, pixel_size_m, run_uid,
                 client="chromium"):  # fmt: skip
        from bluesky_ptychonn.view.live import LiveView

        frames_address, results_address, control_address = endpoint.addresses
        self.view = LiveView(
            _MosaicSource(mosaic, lock, run_uid),
            results_addresses=results_address,
            control_address=control_address,
        )
        extent = np.ptp(positions, axis=0)
        self.view("start", {
            "uid": run_uid, "plan_name": "bench", "num_points": len(positions),
            "object_pixel_size_m": pixel_size_m, "scan_extent_m": extent.tolist(),
            "scan_centre_m": positions.mean(axis=0).tolist(), "sample_name": "bench",
        })  # fmt: skip
        self.closing = threading.Event()
        self.ready = threading.Event()
        self.updates_seen = 0
        self.client = client
        self.error = ""
        self.thread = threading.Thread(target=self._look, name="bench-view-looker", daemon=True)
        self.thread.start()
        self.ready.wait(60)

    def _look(self) -> None:
        if self.client == "http":
            self._read_with_httpx()
            return
        try:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import playwright  # noqa: F401
            from view_browser import HeadlessBrowser, chromium_path

            if chromium_path() is None:
                raise FileNotFoundError("no chromium")
            self.client = "chromium"
            with HeadlessBrowser() as browser:
                browser.open(self.view.url)
                self.ready.set()
                while not self.closing.wait(0.5):
                    self.updates_seen = browser.state()["version"]
        except (ImportError, FileNotFoundError):
            self._read_with_httpx()
        except Exception as error:  # noqa: BLE001 - recorded in the results
            self.error = repr(error)
        finally:
            self.ready.set()

    def _read_with_httpx(self) -> None:
        import json

        import httpx

        self.client = "http"
        base = self.view.url.rstrip("/")
        shown: dict[str, int] = {}
        with httpx.Client(timeout=10) as client, client.stream("GET", base + "/events") as events:
            self.ready.set()
            for line in events.iter_lines():
                if self.closing.is_set():
                    return
                if not line.startswith("data: "):
                    continue
                state = json.loads(line[6:])
                self.updates_seen = state["version"]
                for name, panel in state["panels"].items():
                    if shown.get(name) != panel["version"]:
                        shown[name] = panel["version"]
                        client.get(f"{base}/panel/{name}.png")

    def close(self) -> dict:
        self.closing.set()
        self.thread.join(30)
        renderer = self.view.renderer
        record = {
            "view_client": self.client,
            "view_updates": renderer.frame.version,
            "view_updates_seen_by_client": self.updates_seen,
            "view_render_seconds": renderer.render_seconds,
            "view_error": self.error,
        }
        self.view.close()
        return record


def stream_through(
    endpoints: list[EndpointProcess],
    frames: np.ndarray,
    positions: np.ndarray,
    offered_fps: float,
    pixel_size_m: float,
    chunk: int = 1,
    view: bool = False,
    view_client: str = "chromium",
) -> dict:
    """Send ``frames`` at ``offered_fps``; stitch the results; count and time them.

    Also the CPU seconds each side used while it ran (the endpoint process; this process:
    the frame source, the acknowledgements and the stitcher), which say how much of the two
    cores the engine had. With ``view``, the browser view is open meanwhile (`ViewLooker`).
    """
    import psutil

    endpoint_cpus = [psutil.Process(endpoint.process.pid) for endpoint in endpoints]
    frames_addresses = [endpoint.addresses[0] for endpoint in endpoints]
    results_addresses = [endpoint.addresses[1] for endpoint in endpoints]
    inferred_before = [_inferred(endpoint) for endpoint in endpoints]
    by_endpoint: dict[str, int] = {}
    collector = ResultCollector()
    latencies: list[float] = []
    stitched = 0
    last_stitch = 0.0
    mosaic: list[Mosaic] = []
    run_uid = f"bench-{offered_fps:.0f}-{'view' if view else 'none'}-{time.monotonic():.0f}"
    lock = threading.Lock()

    def stitch(message) -> None:
        """The streamer's result hook (its listener thread): one subscription for both the
        acknowledgements and the mosaic, as a beamline's live stitcher would share it."""
        nonlocal stitched, last_stitch
        if message.kind != "results" or message.run_uid != run_uid:
            return
        fresh = collector.new_indices(message)
        if not fresh.size:
            return
        phase = message.arrays["phase"][fresh]
        if not mosaic:
            scale = float(message.extra.get("pixel_scale", 1.0))
            weight = gaussian_weight(phase.shape[1:], phase.shape[1] / 3)
            mosaic.append(Mosaic.covering(positions, pixel_size_m * scale, weight))
        with lock:
            mosaic[0].add(phase, message.arrays["amplitude"][fresh], message.positions_m[fresh])
        now = time.time()
        latencies.extend((now - message.arrays["created"][fresh]) * 1e3)
        stitched += fresh.size
        tag = str(message.extra.get("endpoint", "?"))
        by_endpoint[tag] = by_endpoint.get(tag, 0) + int(fresh.size)
        last_stitch = time.perf_counter()

    streamer = FrameStreamer(
        frames_addresses, results_addresses, run_uid=run_uid, resend_after_s=5.0,
        on_result=stitch,
    )  # fmt: skip
    looker = None
    if view:
        looker = ViewLooker(endpoints[0], mosaic, lock, positions, pixel_size_m, run_uid,
                            client=view_client)  # fmt: skip
    time.sleep(0.5)  # subscriptions settle
    period = chunk / offered_fps
    cpu_endpoint_0 = sum(sum(cpu.cpu_times()[:2]) for cpu in endpoint_cpus)
    cpu_self_0 = time.process_time()
    start = time.perf_counter()
    for index, s in enumerate(range(0, len(frames), chunk)):
        delay = start + index * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # a detector's frame clock: one wake-up per frame
        ids = np.arange(s, min(s + chunk, len(frames)))
        streamer(frames[ids], ids, np.full(len(ids), time.time()), positions[ids])
        if looker is not None:  # the view listens to the detector's frames as well
            looker.view.board.on_frames(frames[ids], ids)
    send_seconds = time.perf_counter() - start
    streamer.flush(timeout_s=120)
    deadline = time.monotonic() + 30
    while stitched < len(frames) and time.monotonic() < deadline:
        time.sleep(0.01)
    wall = time.perf_counter() - start
    cpu_endpoint = sum(sum(cpu.cpu_times()[:2]) for cpu in endpoint_cpus) - cpu_endpoint_0
    cpu_self = time.process_time() - cpu_self_0
    streamer.close()
    view_record = {}
    if looker is not None:
        view_record = looker.close()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "offered_fps": offered_fps,
        "achieved_send_fps": len(frames) / send_seconds,
        "frames_sent": len(frames),
        "frames_stitched": stitched,
        "frames_lost": len(frames) - stitched,
        "frames_resent": streamer.sender.frames_resent,
        "frames_per_message": chunk,
        "sustained_fps": stitched / max(last_stitch - start, 1e-9),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "wall_seconds": wall,
        "cpu_seconds_endpoint": cpu_endpoint,
        "cpu_seconds_source_and_stitcher": cpu_self,
        "cpu_cores_used": (cpu_endpoint + cpu_self) / wall,
        "view_open": view,
        **view_record,
        "endpoints": len(endpoints),
        "frames_by_endpoint": by_endpoint,
        "inferred_by_endpoint": {
            endpoint.name or f"endpoint-{i}": _inferred(endpoint) - before
            for i, (endpoint, before) in enumerate(zip(endpoints, inferred_before, strict=True))
        },
    }


def view_comparison(args, endpoint, backend, raw, frames, positions, pixel_size_m) -> list:
    """Capacity (offered at the raw rate) without and with the browser view, alternating."""
    runs = {False: [], True: []}
    records = []
    for pair in range(args.view_pairs):
        for view in (False, True):
            result = stream_through(
                [endpoint], frames, positions, raw * args.view_load, pixel_size_m, args.chunk,
                view=view, view_client=args.view_client,
            )  # fmt: skip
            runs[view].append(result["sustained_fps"])
            records.append({"benchmark": "pipeline-view", "pair": pair, "backend": backend,
                            "raw_engine_fps": raw, "quick": args.quick, **result})  # fmt: skip
            print(
                f"view {'open' if view else 'none'} (pair {pair}): capacity "
                f"{result['sustained_fps']:.0f} fps, lost {result['frames_lost']}"
                + (f", {result['view_updates']} view updates, client {result['view_client']}"
                   if view else "")
            )  # fmt: skip
    if not args.view_pairs:
        return records
    without, with_view = float(np.median(runs[False])), float(np.median(runs[True]))
    summary = {
        "benchmark": "pipeline-view-summary",
        "backend": backend,
        "raw_engine_fps": raw,
        "pairs": args.view_pairs,
        "capacity_fps_without_view": runs[False],
        "capacity_fps_with_view": runs[True],
        "capacity_ratio_view_vs_none": with_view / without,
        "pair_ratios": [b / a for a, b in zip(runs[False], runs[True], strict=True)],
        "view_client": args.view_client,
        "offered_fraction_of_raw": args.view_load,
        "goal_ratio_at_least": 0.95,
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(f"capacity with the view open / without: {summary['capacity_ratio_view_vs_none']:.3f} "
          f"(medians {with_view:.0f} / {without:.0f} fps; pairs {summary['pair_ratios']})")
    records.append(summary)
    return records


def _inferred(endpoint: EndpointProcess) -> int:
    """The endpoint's own count of frames inferred (its status)."""
    client = EndpointClient(endpoint.addresses[2])
    try:
        return int(client.status()["frames_inferred"])
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--input-px", type=int, default=128, help="edge model input side")
    parser.add_argument("--precision", default=None, help="engine precision (e.g. int8)")
    parser.add_argument("--workers", type=int, default=1, help="ONNX Runtime sessions")
    parser.add_argument("--micro-batch", type=int, default=None, help="ORT session pieces")
    parser.add_argument(
        "--loads",
        type=lambda text: tuple(float(f) for f in text.split(",")),
        default=(0.25, 0.5, 0.9, 1.0),
        help="offered rates as fractions of the raw engine rate (default 0.25,0.5,0.9,1.0; "
        "at 1.0 the sustained rate is the pipeline's capacity)",
    )
    parser.add_argument(
        "--lanes", type=int, default=1, help="endpoint infer lanes (engines side by side)"
    )
    parser.add_argument(
        "--endpoints",
        type=int,
        default=1,
        help="endpoint processes sharing the frame stream (scale-out; each with cores // N "
        "engine threads on CPU)",
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=1,
        help="frames per wire message (1: frame by frame, as an Eiger stream interface sends)",
    )
    parser.add_argument(
        "--view-pairs",
        type=int,
        default=2,
        help="capacity runs without / with the browser view open, alternating (0: none)",
    )
    parser.add_argument(
        "--view-client",
        choices=("chromium", "http"),
        default="chromium",
        help="who has the view open: headless Chromium on this machine, or an HTTP client "
        "reading the event stream and every changed panel (a browser on another machine)",
    )
    parser.add_argument(
        "--view-load", type=float, default=1.0,
        help="offered rate of the view comparison, as a fraction of the raw engine rate",
    )  # fmt: skip
    args = parser.parse_args(argv)
    n_frames = 1000 if args.quick else 6000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        beamline = SimBeamline(SimBeamlineConfig(field_of_view_m=(6e-6, 6e-6)))
    positions = fermat_spiral(2.5e-6, n_points=n_frames)
    frames = beamline.measure(positions).patterns
    records = []
    stitch = {align: stitch_rate(4000 if args.quick else 20000, align) for align in (False, True)}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp) / "model", args.input_px)
        engine_options = {}
        if args.workers != 1:
            engine_options["workers"] = args.workers
        if args.micro_batch:
            engine_options["micro_batch"] = args.micro_batch
        raw_seconds = 3 if args.quick else 10
        raw_single = raw_engine_rate(
            model, frames, args.backend, args.precision, raw_seconds, **engine_options
        )
        raw_lanes = None
        if args.lanes > 1:
            raw_lanes = raw_engine_rate(
                model, frames, args.backend, args.precision, raw_seconds, args.lanes,
                **engine_options,
            )  # fmt: skip
        raw = max(raw_single, raw_lanes or 0.0)
        if args.endpoints < 1:
            raise ValueError(f"--endpoints must be at least 1, got {args.endpoints}")
        threads = None if args.endpoints == 1 else max(1, (os.cpu_count() or 1) // args.endpoints)
        with contextlib.ExitStack() as stack:
            endpoints = [
                stack.enter_context(
                    EndpointProcess(
                        model,
                        backend=args.backend,
                        batch_size=BATCH,
                        precision=args.precision,
                        lanes=args.lanes,
                        threads=threads,
                        name=f"endpoint-{index}",
                        **engine_options,
                    )
                )
                for index in range(args.endpoints)
            ]
            endpoint = endpoints[0]
            backend = endpoint.ready.get("backend")
            for fraction in args.loads if not args.quick else (0.5,):
                result = stream_through(
                    endpoints, frames, positions, raw * fraction, beamline.pixel_size_m,
                    args.chunk,
                )  # fmt: skip
                record = {
                    "benchmark": "pipeline",
                    "model": "edge",
                    "input_px": args.input_px,
                    "backend": backend,
                    "precision": endpoint.ready.get("precision"),
                    "engine_options": engine_options,
                    "lanes": args.lanes,
                    "raw_single_engine_fps": raw_single,
                    "raw_lanes_fps": raw_lanes,
                    "batch": BATCH,
                    "raw_engine_fps": raw,
                    "load_fraction": fraction,
                    "ratio_sustained_vs_raw": result["sustained_fps"] / raw,
                    "stitch_patches_per_s": stitch[False],
                    "stitch_patches_per_s_aligned": stitch[True],
                    "quick": args.quick,
                    "cpu_count": os.cpu_count(),
                    "machine": platform.machine(),
                    **result,
                }
                records.append(record)
                print(
                    f"load {fraction:.2f}: offered {result['offered_fps']:7.0f} fps, sustained "
                    f"{result['sustained_fps']:7.0f} ({record['ratio_sustained_vs_raw']:.2f}x raw "
                    f"{raw:.0f}), lost {result['frames_lost']}, p50 {result['p50_ms']:.1f} ms, "
                    f"p99 {result['p99_ms']:.1f} ms; CPU s endpoint "
                    f"{result['cpu_seconds_endpoint']:.1f}, source+stitcher "
                    f"{result['cpu_seconds_source_and_stitcher']:.1f} over "
                    f"{result['wall_seconds']:.1f} s"
                )
            records += view_comparison(args, endpoint, backend, raw, frames, positions,
                                       beamline.pixel_size_m)  # fmt: skip
    print(f"stitching alone: {stitch[False]:.0f} patches/s ({stitch[True]:.0f} with alignment)")
    write_records(args.json, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
