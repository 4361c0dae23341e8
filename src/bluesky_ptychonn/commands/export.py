"""`bluesky-ptychonn export MODEL --onnx OUT.onnx [--int8 OUT_INT8.onnx]`: inference graphs.

Exports a trained model (weights + sidecar) to ONNX with a dynamic batch axis, checks the
graph against the PyTorch outputs, and writes ``OUT.json`` (the sidecar with the graph's
sha256) next to it. ``--int8`` also writes a statically quantised graph for ONNX Runtime on
CPU, calibrated on simulated patterns.
"""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..model.checkpoint import Sidecar, resolve, sha256_file
    from ..model.export import export_onnx

    out = Path(args.onnx)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    path = export_onnx(args.model, out, opset=args.opset, check=not args.no_check)
    summary = {"onnx": str(path), "sidecar": str(path.with_suffix(".json"))}
    if args.int8:
        from ..inference.quantize import calibration_inputs, quantize_onnx

        int8 = Path(args.int8)
        files = resolve(path)
        quantize_onnx(
            path, int8, calibration_inputs(files.sidecar),
            float_convs_before_output=args.int8_float_convs,
            float_input_convs=args.int8_float_input_convs,
        )  # fmt: skip
        side = Sidecar.from_dict(files.sidecar.to_dict())
        side.files = {
            "onnx": {
                "path": int8.name,
                "sha256": sha256_file(int8),
                "format": "onnx",
                "precision": "int8",
            }
        }
        side.created = ""
        side.write(int8.with_suffix(".json"))
        summary["int8"] = str(int8)
    print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX (and int8 ONNX) for inference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model folder, weights file or sidecar")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="ONNX file to write")
    p.add_argument("--int8", metavar="OUT.onnx", help="also write an int8 graph (ONNX Runtime CPU)")
    p.add_argument(
        "--int8-float-convs", type=int, default=0, metavar="K",
        help="convs before each output conv kept in float in the int8 graph (2: the last up "
        "block, needed for phase SSIM >= 0.99 vs fp32 on the edge model; default 0)",
    )  # fmt: skip
    p.add_argument(
        "--int8-float-input-convs", type=int, default=3, metavar="K",
        help="first convs kept in float in the int8 graph (default 3: the first block and the "
        "next conv, where most of a trained model's int8 error comes from; 0: none)",
    )  # fmt: skip
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--no-check", action="store_true", help="skip the check against PyTorch")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=run)
