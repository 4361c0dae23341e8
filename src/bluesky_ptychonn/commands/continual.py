"""`bluesky-ptychonn continual replay|serve`: the continual-learning loop from the command line.

``continual replay SCAN.cxi [SCAN.cxi ...] --out DIR [--model MODEL_DIR]`` runs the loop over
recorded scans in order (to prepare a model from an earlier beamtime), starting from MODEL_DIR or
from scratch, and writes ``DIR/report.json``: one record per scan with ``scan``, ``decision``,
``reason``, ``mismatch``, ``trained``, ``model_version``, ``model_path`` (the model folder in
effect after that scan, loadable by ``serve``) and ``seconds``, plus the time of each step.

``continual serve --documents tcp://127.0.0.1:5578 --tiled URI`` attaches the loop to a
beamline: it receives the RunEngine's documents from a bluesky 0MQ proxy, reads each finished
run from Tiled, and pushes promoted models to the endpoint (``--endpoint``).

Settings come from ``--config FILE.toml`` (the `LoopOptions` tables ``gate``, ``train``,
``promote``, ``recon`` and a ``cluster`` table, see docs/continual-learning.md); a few common
ones have flags, which win over the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _table(args: argparse.Namespace) -> dict[str, Any]:
    table: dict[str, Any] = {}
    if args.config:
        import tomllib

        with open(args.config, "rb") as f:
            table = tomllib.load(f)
        table = dict(table.get("continual", table))
    table.pop("enabled", None)
    gate = dict(table.get("gate", {}))
    train = dict(table.get("train", {}))
    recon = dict(table.get("recon", {}))
    if args.tolerance is not None:
        gate["tolerance_ssim"] = args.tolerance
    if args.recheck_interval_s is not None:
        gate["recheck_interval_s"] = args.recheck_interval_s
    if args.epochs is not None:
        train["epochs"] = args.epochs
    if args.threads is not None:
        train["threads"] = args.threads
    if args.iterations is not None:
        recon["iterations"] = args.iterations
    for key, value in (("gate", gate), ("train", train), ("recon", recon)):
        if value:
            table[key] = value
    if args.cluster is not None:
        table["cluster"] = {"kind": args.cluster}
    return table


def _executor(cluster: dict[str, Any], retries: int):
    from ..retrain.executors import DaskExecutor, InlineExecutor

    if cluster.get("kind", "local") == "inline":
        return InlineExecutor()
    return DaskExecutor(cluster, retries=retries)


def _report_entry(record: Any) -> dict[str, Any]:
    entry = record.to_dict()
    challenger = entry.pop("challenger", None) or {}
    entry["holdout"] = challenger.get("holdout")
    entry["training_seconds"] = challenger.get("seconds")
    return entry


def run_replay(args: argparse.Namespace) -> int:
    from ..retrain.loop import ContinualLoop
    from ..retrain.options import LoopOptions

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    scans = [Path(s) for s in args.scans]
    missing = [str(s) for s in scans if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"no such scan file: {', '.join(missing)}")
    out = Path(args.out)
    state = out / "state"
    if state.exists() and not args.resume:
        raise FileExistsError(f"{state} exists (use --resume to continue it, or another --out)")
    table = _table(args)
    cluster = dict(table.pop("cluster", {"kind": "local"}))
    options = LoopOptions.from_mapping(table)
    executor = _executor(cluster, options.step_retries)
    loop = ContinualLoop(
        state,
        options,
        executor=executor,
        model_dir=args.model,
        endpoint_control=args.endpoint,
    )
    entries = []
    try:
        for scan in scans:
            record = loop.process_scan(scan, scan.stem)
            entries.append(_report_entry(record))
            print(
                f"{scan.name}: {record.decision} ({record.reason}); model "
                f"{record.model_version} [{record.seconds:.1f} s]",
                flush=True,
            )
            _write_report(out, entries, loop, executor)
    finally:
        executor.close()
    return 0


def _write_report(out: Path, entries: list[dict], loop: Any, executor: Any) -> None:
    report = {
        "records": entries,
        "loop": loop.status(),
        "executor": executor.describe(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out / "report.json")


def run_serve(args: argparse.Namespace) -> int:
    from bluesky.callbacks.zmq import RemoteDispatcher

    from ..retrain.dispatcher import dispatcher_from_config
    from ..storage.spool import document_from_json
    from ..storage.tiled_catalog import api_key_from_env, open_node

    table = _table(args)
    table["state_dir"] = args.state
    client = open_node(args.tiled, api_key=args.api_key or api_key_from_env())
    dispatcher = dispatcher_from_config(
        table, tiled_client=client, endpoint_control_address=args.endpoint, model_dir=args.model
    )
    # documents arrive as JSON (`storage.spool.document_to_json` on the publishing side): no pickle
    remote = RemoteDispatcher(args.documents, deserializer=document_from_json)
    remote.subscribe(dispatcher)
    log.info("continual learning listening to %s, state in %s", args.documents, args.state)
    try:
        remote.start()
    except KeyboardInterrupt:
        pass
    finally:
        dispatcher.close()
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="the model in service at the start (default: from scratch)")
    p.add_argument("--config", help="TOML file with the loop's settings (docs/continual-learning)")
    p.add_argument("--endpoint", help="the endpoint's control address for the hot swap")
    p.add_argument(
        "--cluster",
        choices=("inline", "local"),
        help="where the steps run (default: the config's cluster, else a local Dask cluster)",
    )
    p.add_argument("--tolerance", type=float, help="largest tolerated 1 - phase SSIM (0.10)")
    p.add_argument(
        "--recheck-interval-s", type=float, help="seconds between checks while suspended (3600)"
    )
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (50)")
    p.add_argument("--iterations", type=int, help="ePIE iterations of the labels (100)")
    p.add_argument("--threads", type=int, help="torch CPU threads of the training step")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "continual",
        help="continual learning: replay recorded scans, or serve a beamline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="continual_command", metavar="ACTION", required=True)
    replay = sub.add_parser("replay", help="run the loop over recorded scans (CXI) in order")
    replay.add_argument("scans", nargs="+", help="CXI files, in the order they were measured")
    replay.add_argument("--out", required=True, help="folder for report.json and the loop state")
    replay.add_argument("--resume", action="store_true", help="continue the state in --out")
    _common(replay)
    replay.set_defaults(func=run_replay)
    serve = sub.add_parser("serve", help="attach the loop to a beamline's documents and Tiled")
    serve.add_argument(
        "--documents",
        default="tcp://127.0.0.1:5578",
        help="the bluesky 0MQ proxy's output address (default tcp://127.0.0.1:5578); the "
        "publisher must serialise documents as JSON (storage.spool.document_to_json)",
    )
    serve.add_argument("--tiled", required=True, help="Tiled server or catalog URI")
    serve.add_argument("--api-key", help="Tiled API key (default $TILED_API_KEY)")
    serve.add_argument("--state", required=True, help="the loop's folder (state, queue, models)")
    _common(serve)
    serve.set_defaults(func=run_serve)
