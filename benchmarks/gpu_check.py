"""Every CUDA path of the package, once, on one NVIDIA GPU, into one JSON (`gpu_check.sh`).

Steps (each timed, each recorded as ok / failed with the reason, none stopping the others;
a step that would start past the time budget is recorded as skipped):

* ``environment``: GPU name, driver, CUDA, torch / ONNX Runtime / TensorRT versions;
* ``pytorch_fp16``: the PyTorch engine in fp16 with CUDA graphs, channels-last;
* ``onnxruntime_cuda``: ONNX Runtime's CUDA provider (fp32);
* ``tensorrt_fp16``: TensorRT fp16, built into an empty plan cache, then loaded from it
  (the build and the cached load are timed apart; the second load must hit the cache);
* ``auto``: which engine ``backend="auto"`` picks, and any fallback with its reason;
* ``epie_cuda``: ePIE on a simulated scan on CUDA, against the same on the CPU;
* ``phase_sync_cuda``: synchronisation of exit-wave phases on CUDA;
* ``pipeline``: ``bench pipeline --quick`` with the endpoint on the GPU (auto backend).

Every engine is compared with the PyTorch fp32 CPU reference on the same frames (largest
phase difference, radians) and timed at batch 8 and 32 (microseconds per frame); the paper's
anchor is 90 us per frame at batch 8 on an RTX A6000.

    python benchmarks/gpu_check.py --json gpu-check.json [--budget-s 540]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (8, 32)
TIMED_CALLS = 50
GPU = "cuda"  # "cpu" with --dry-run-on-cpu: every step on the CPU, to test this script


class NoGPU(RuntimeError):
    """No CUDA device is visible: nothing here can run."""


def require_gpu() -> str:
    """The GPU's name; raises `NoGPU` with the reason when torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise NoGPU(
            f"torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}); "
            "this check needs an NVIDIA GPU and a CUDA build of torch"
        )
    return torch.cuda.get_device_name(0)


def make_model(folder: Path) -> Path:
    """The benchmarks' edge model (128 x 128 input, random weights), saved with ONNX."""
    import torch

    from bluesky_ptychonn.model.architectures import build_model
    from bluesky_ptychonn.model.checkpoint import save_model
    from bluesky_ptychonn.model.export import export_onnx
    from bluesky_ptychonn.model.preprocessing import Preprocessing

    torch.manual_seed(0)
    model = build_model("edge", input_shape=128)
    save_model(model, folder, Preprocessing((128, 128), (128, 128), "crop"), version="gpu-check")
    export_onnx(folder, folder / "model.onnx")
    return folder


def test_frames(n: int = 32) -> np.ndarray:
    from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
    from bluesky_ptychonn.sim.scans import fermat_spiral

    beamline = SimBeamline(SimBeamlineConfig(field_of_view_m=(3e-6, 3e-6)))
    return beamline.measure(fermat_spiral(1e-6, n_points=n)).patterns


def time_engine(engine, frames: np.ndarray) -> dict[str, Any]:
    """Microseconds per frame at each batch (median of timed calls after warm-up)."""
    out = {}
    for batch in BATCHES:
        x = engine.preprocessing.apply(frames[:batch])
        for _ in range(5):
            engine.run(x)
        times = []
        for _ in range(TIMED_CALLS):
            start = time.perf_counter()
            engine.run(x)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        out[f"batch{batch}"] = {
            "us_per_frame": median / batch * 1e6,
            "frames_per_s": batch / median,
            "p99_ms": float(np.percentile(times, 99) * 1e3),
        }
    return out


def engine_step(model: Path, frames: np.ndarray, reference: np.ndarray, backend: str,
                **options: Any) -> dict[str, Any]:  # fmt: skip
    from bluesky_ptychonn.inference import load_engine

    start = time.perf_counter()
    engine = load_engine(model, backend, **options)
    load_s = time.perf_counter() - start
    try:
        out = engine.infer(frames)
        record = {
            "backend": engine.info.backend,
            "precision": engine.info.precision,
            "device": engine.info.device,
            "details": {k: str(v) for k, v in engine.info.details.items()},
            "load_s": load_s,
            "max_phase_error_rad": float(np.abs(out[:, 0] - reference[:, 0]).max()),
            "timing": time_engine(engine, frames),
        }
    finally:
        engine.close()
    return record


def tensorrt_step(model: Path, frames: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        built = engine_step(model, frames, reference, "tensorrt", precision="fp16", cache=cache)
        plans = sorted(p.name for p in Path(cache).iterdir())
        cached = engine_step(model, frames, reference, "tensorrt", precision="fp16", cache=cache)
    return {
        **cached,
        "build_and_load_s": built["load_s"],
        "cached_load_s": cached["load_s"],
        "plans": plans,
        "cache_hit": cached["load_s"] < built["load_s"] and len(plans) == 1,
    }


def epie_step() -> dict[str, Any]:
    from bluesky_ptychonn.recon.api import reconstruct
    from bluesky_ptychonn.recon.options import EPIEOptions
    from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
    from bluesky_ptychonn.sim.scans import scan_positions

    beamline = SimBeamline(SimBeamlineConfig(field_of_view_m=(2e-6, 2e-6)))
    positions = scan_positions("spiral", (1.2e-6, 1.2e-6), beamline.beam_size_on_sample_m,
                               overlap=0.7)  # fmt: skip
    data = beamline.measure(positions)
    out: dict[str, Any] = {"patterns": int(len(positions))}
    for device in (GPU, "cpu"):
        start = time.perf_counter()
        result = reconstruct(data, EPIEOptions(iterations=20, device=device, seed=0))
        out[f"{device}_s"] = time.perf_counter() - start
        errors = np.asarray(result.error_history, dtype=float)
        out[f"{device}_final_error"] = float(errors[-1]) if errors.size else None
    out["speedup_vs_cpu"] = out["cpu_s"] / out[f"{GPU}_s"]
    return out


def phase_sync_step() -> dict[str, Any]:
    """Alternating projections with phase synchronisation every iteration (the Gramian and
    its power iteration inside the task) on `bench recon`'s synchronisation case, on CUDA and
    on the CPU: the same iterations, the object error after them on each device."""
    sys.path.insert(0, str(Path(__file__).parent))
    from sync_case import make_case, object_error  # benchmarks/sync_case.py

    from bluesky_ptychonn.dataset import ComplexImage
    from bluesky_ptychonn.recon import (
        APOptions,
        ObjectOptions,
        ProbeOptions,
        SyncOptions,
        make_task,
    )
    from bluesky_ptychonn.recon.quality import illuminated_mask, reference_on_grid

    dataset = make_case(16)
    out: dict[str, Any] = {"frames": int(len(dataset.positions_m)), "iterations": 100}
    for device in (GPU, "cpu"):
        options = APOptions(
            iterations=100, device=device, object=ObjectOptions(margin_px=0),
            probe=ProbeOptions(update=False, rescale_to_data=False), sync=SyncOptions(every=1),
        )  # fmt: skip
        task = make_task(dataset, options)
        start = time.perf_counter()
        task.run(100)
        out[f"{device}_s"] = time.perf_counter() - start
        like = ComplexImage(task.object_array(), task.scan.grid.pixel_size_m,
                            task.scan.grid.origin_m)  # fmt: skip
        truth = reference_on_grid(dataset.ground_truth, like)
        mask = illuminated_mask(dataset.probe, dataset.positions_m, like, 0.1)
        out[f"{device}_object_error"] = object_error(task.object_array(), truth, mask)
    out["speedup_vs_cpu"] = out["cpu_s"] / out[f"{GPU}_s"]
    return out


def pipeline_step(budget_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pipeline.json"
        command = [sys.executable, "-m", "bluesky_ptychonn.cli", "bench", "pipeline", "--quick",
                   "--json", str(out)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=budget_s)
        if done.returncode != 0:
            raise RuntimeError(f"bench pipeline exited {done.returncode}: {done.stderr[-2000:]}")
        return {"records": json.loads(out.read_text()), "log": done.stdout[-2000:]}


def environment(gpu: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "gpu": gpu,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as error:
        env["nvidia_smi"] = f"unavailable: {error}"
    for module in ("onnxruntime", "tensorrt"):
        try:
            env[module] = __import__(module).__version__
        except Exception as error:  # noqa: BLE001 - recorded, not fatal
            env[module] = f"unavailable: {type(error).__name__}: {error}"
    try:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:  # noqa: BLE001
        pass
    return env


def run_steps(
    steps: list[tuple[str, Callable[[], Any]]],
    budget_s: float,
    save: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run the steps in order; ``save`` the results so far after each (a kill loses only the
    step it interrupts)."""
    started = time.monotonic()
    results: dict[str, Any] = {}
    for name, step in steps:
        elapsed = time.monotonic() - started
        if elapsed > budget_s:
            results[name] = {"status": "skipped", "reason": f"time budget spent ({elapsed:.0f} s)"}
            continue
        t0 = time.perf_counter()
        try:
            value = step()
            results[name] = {"status": "ok", "seconds": time.perf_counter() - t0, **value}
        except Exception as error:  # noqa: BLE001 - each step's failure is a finding
            results[name] = {
                "status": "failed",
                "seconds": time.perf_counter() - t0,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-3000:],
            }
        print(f"{name}: {results[name]['status']} ({results[name].get('seconds', 0):.1f} s)",
              flush=True)  # fmt: skip
        save(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="no step starts after this many seconds (default 540)")  # fmt: skip
    parser.add_argument("--dry-run-on-cpu", action="store_true",
                        help="run every step on the CPU instead (tests this script, measures "
                        "nothing of the GPU)")  # fmt: skip
    args = parser.parse_args(argv)
    global GPU
    try:
        if args.dry_run_on_cpu:
            GPU, gpu = "cpu", "none (dry run on the CPU)"
        else:
            gpu = require_gpu()
    except NoGPU as error:
        Path(args.json).write_text(json.dumps({"status": "no-gpu", "error": str(error)}) + "\n")
        print(f"gpu_check: {error}", file=sys.stderr)
        return 3
    import torch

    from bluesky_ptychonn.inference import load_engine

    torch.backends.cudnn.benchmark = True
    t0 = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - t0

    report: dict[str, Any] = {
        "status": "running",
        "environment": environment(gpu),
        "anchors": {
            "paper_rtx_a6000_us_per_frame_batch8": 90,
            "paper_live_rate_hz": 2000,
            "edgeptychonn_consumers_khz": [8, 12],
        },
    }

    def save(steps: dict[str, Any]) -> None:
        report["steps"] = steps
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("BLUESKY_PTYCHONN_CACHE", str(Path(tmp) / "cache"))
        model = make_model(Path(tmp) / "model")
        frames = test_frames()
        cpu = load_engine(model, "pytorch", device="cpu", precision="fp32")
        reference = cpu.infer(frames)
        cpu.close()
        steps = [
            ("pytorch_fp16", lambda: engine_step(model, frames, reference, "pytorch",
                                                 precision="fp16" if GPU == "cuda" else "fp32",
                                                 device=GPU,
                                                 channels_last=True,
                                                 cuda_graphs=GPU == "cuda")),
            ("onnxruntime_cuda", lambda: engine_step(model, frames, reference, "onnxruntime",
                                                     device=GPU)),
            ("tensorrt_fp16", lambda: tensorrt_step(model, frames, reference)),
            ("auto", lambda: engine_step(model, frames, reference, "auto")),
            ("epie_cuda", epie_step),
            ("phase_sync_cuda", phase_sync_step),
            ("pipeline", lambda: pipeline_step(max(60.0, args.budget_s - elapsed()))),
        ]  # fmt: skip
        report["steps"] = run_steps(steps, args.budget_s, save)
    report["status"] = "ran"
    failed = [name for name, step in report["steps"].items() if step["status"] != "ok"]
    report["failed_steps"] = failed
    Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"gpu_check: wrote {args.json}; failed or skipped: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
