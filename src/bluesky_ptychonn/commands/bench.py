"""`bluesky-ptychonn bench NAME --json OUT [--quick]`: run a benchmark from `benchmarks/`.

Benchmarks live in the repository's top-level ``benchmarks/`` folder as ``bench_<name>.py``
files with a ``main(argv) -> int`` function; this command finds that folder next to the
installed (editable) package or in the current directory, and runs one or all of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any


def benchmarks_dir() -> Path:
    """The repository's ``benchmarks/`` folder (editable install or current directory)."""
    candidates = [Path(__file__).resolve().parents[3] / "benchmarks", Path.cwd() / "benchmarks"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "no benchmarks/ folder found: run from a checkout of bluesky-ptychonn "
        f"(looked in {', '.join(str(c) for c in candidates)})"
    )


def write_records(
    path: str | Path, records: list[dict[str, Any]], *, indent: int = 2, **dumps: Any
) -> Path:
    """Write a benchmark's records as a JSON list (the parent folder is made if missing).

    ``dumps`` goes to `json.dumps` (e.g. ``allow_nan=False``, ``default=float``).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=indent, **dumps) + "\n")
    return out


def available() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(benchmarks_dir().glob("bench_*.py"))}


def _run(path: Path, argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return int(module.main(argv) or 0)


def run(args: argparse.Namespace) -> int:
    found = available()
    names = list(found) if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; available: {sorted(found)} or 'all'")
    status = 0
    for name in names:
        out = Path(args.json)
        if args.name == "all" or out.suffix != ".json":
            out = out / f"{name}.json"
        argv = ["--json", str(out)] + (["--quick"] if args.quick else []) + args.extra.split()
        status |= _run(found[name], argv)
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run benchmarks that write JSON results")
    parser.add_argument("name", help="benchmark name (bench_<name>.py in benchmarks/) or 'all'")
    parser.add_argument("--json", required=True, help="output JSON file (or folder for 'all')")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--extra", default="", help="further options passed to the benchmark, as one string"
    )
    parser.set_defaults(func=run)
