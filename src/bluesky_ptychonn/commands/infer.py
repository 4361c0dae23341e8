"""`bluesky-ptychonn infer SCAN.cxi --model MODEL --out MOSAIC.cxi`: the network image of a scan.

Every pattern of a recorded scan goes through the model (PyTorch, the reference engine) and the
patches are stitched at the scan's positions as the live stitcher does
(`inference.offline.network_image`). The mosaic is written like ``reconstruct --out`` writes a
reconstruction: the scan plus ``/entry_1/image_1`` (complex ``data``, pixel size, ``origin_m``,
algorithm ``ptychonn-stitch``, settings with the model version and the weight used), so
``reconstruct --initial-object MOSAIC.cxi`` can start from it. A PNG of phase and amplitude goes
next to it. A model that cannot take the scan's patterns is refused before any work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..inference.offline import check_model_fits, network_image
    from ..model.checkpoint import resolve
    from ..recon.figure import plot_reconstruction
    from ..storage.cxi import read_cxi, read_reconstruction, write_cxi, write_phase_uncertainty

    source, out = Path(args.file), Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if out.resolve() == source.resolve():
        raise ValueError("--out must differ from the input file")
    png = Path(args.png) if args.png else out.with_suffix(".png")
    sidecar = resolve(args.model).sidecar  # a missing or broken model: before reading the scan
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dataset = read_cxi(source, translation_sign=args.translation_sign)
    check_model_fits(sidecar, dataset)
    probe = None
    if args.probe_from:
        probe = read_reconstruction(args.probe_from).probe
        if probe is None:
            raise ValueError(f"{args.probe_from} holds no reconstructed probe")
    result = network_image(
        args.model,
        dataset,
        weight=args.weight,
        probe=probe,
        batch_size=args.batch_size,
        synchronise=not args.no_sync,
    )
    reconstruction = result.reconstruction(dataset)
    write_cxi(out, dataset, reconstruction, overwrite=args.overwrite)
    snapshot = result.snapshot
    if snapshot.phase_uncertainty is not None:  # a model with the uncertainty head
        write_phase_uncertainty(out, snapshot.phase_uncertainty)
    plot_reconstruction(
        reconstruction,
        png,
        title=f"{source.name}: network image ({result.model_version}, "
        f"weight {result.weight_source})",
        crop_threshold=None,
    )
    print(
        json.dumps(
            {
                "out": str(out),
                "png": str(png),
                "frames": int(snapshot.frames_used),
                "pixel_size_m": snapshot.pixel_size_m,
                "shape": list(snapshot.phase.shape),
                "weight_source": result.weight_source,
                "model_version": result.model_version,
                "phase_uncertainty": snapshot.phase_uncertainty is not None,
                "seconds": round(result.seconds, 3),
            }
        )
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="the stitched network image of a recorded CXI scan (CXI + PNG)",
        description=__doc__,
    )
    parser.add_argument("file", help="input CXI scan (patterns, translations, optional probe)")
    parser.add_argument("--model", required=True, help="model directory, weights or sidecar")
    parser.add_argument("--out", required=True, help="output CXI file (scan + /entry_1/image_1)")
    parser.add_argument(
        "--weight",
        choices=("auto", "dataset", "model", "gaussian"),
        default="auto",
        help="stitching weight: the scan's probe (dataset), the model's label weights (model), "
        "a Gaussian half a patch wide (gaussian); auto takes the first available",
    )
    parser.add_argument(
        "--probe-from",
        help="a reconstruction CXI (e.g. the last ePIE) whose probe sets the stitching weight",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="patterns per forward pass")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument(
        "--no-sync", action="store_true", help="skip the global phase synchronisation"
    )
    parser.add_argument(
        "--translation-sign",
        type=int,
        choices=(1, -1),
        default=1,
        help="-1 when the file's translations are sample-stage displacements",
    )
    parser.add_argument("--png", help="figure path (default: OUT with .png)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
