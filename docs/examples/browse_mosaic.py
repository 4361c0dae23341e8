"""Browse a run's live mosaic with a plain Tiled client, and save it as a figure.

    python docs/examples/browse_mosaic.py --uri http://127.0.0.1:8000 \
        --api-key "$(cat tiled-data/api_key)" --sample siemens-star \
        --out docs/figures/tiled_live_mosaic.png

Only `tiled.client` and matplotlib are needed: no bluesky-ptychonn on the reading side.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from matplotlib.figure import Figure
from tiled.client import from_uri
from tiled.queries import Key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get("TILED_API_KEY"))
    parser.add_argument("--sample", default="siemens-star")
    parser.add_argument("--out", default="docs/figures/tiled_live_mosaic.png")
    parser.add_argument("--follow", action="store_true", help="refresh until the scan ends")
    args = parser.parse_args()

    client = from_uri(args.uri, api_key=args.api_key)

    # 1. the latest run of this sample (runs live in "raw", keyed by start uid)
    runs = client["raw"].search(Key("start.sample") == args.sample)
    run = runs.values().last()
    uid = run.metadata["start"]["uid"]
    print(
        f"run {uid}: plan {run.metadata['start']['plan_name']}, "
        f"finished: {'stop' in run.metadata and run.metadata['stop'] is not None}"
    )

    # 2. its live mosaic (reconstructions point at their run by scan_uid)
    while True:
        mosaics = (
            client["reconstructions"]
            .search(Key("scan_uid") == uid)
            .search(Key("kind") == "live-mosaic")
        )
        if len(mosaics) or not args.follow:
            break
        time.sleep(1.0)  # the first snapshot is on its way
    key, node = mosaics.items().first()
    while args.follow and not node.metadata["final"]:  # the writer updates the node in place
        print(
            f"snapshot {node.metadata['snapshot_index']}: {node.metadata['frames_used']} "
            "frames so far"
        )
        time.sleep(1.0)
        node.refresh()
    md = node.metadata
    phase, amplitude, weights = (node[name].read() for name in ("phase", "amplitude", "weights"))

    # 3. a figure in micrometres: pixel (r, c) is centred at origin_m + (r, c) * pixel_size_m
    p, (y0, x0) = md["pixel_size_m"], md["origin_m"]
    rows, cols = phase.shape
    extent = [
        (x0 - p / 2) * 1e6,
        (x0 + (cols - 0.5) * p) * 1e6,
        (y0 + (rows - 0.5) * p) * 1e6,
        (y0 - p / 2) * 1e6,
    ]
    positions = np.stack([run["primary"]["stage_y"].read(), run["primary"]["stage_x"].read()], 1)
    covered = weights > 0.05 * weights.max()
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, image, title, cmap in (
        (axes[0], np.where(covered, phase, np.nan), "phase (rad)", "viridis"),
        (axes[1], np.where(covered, amplitude, np.nan), "amplitude", "gray"),
        (axes[2], weights, "weights (frames x beam)", "viridis"),
    ):
        shown = ax.imshow(image, extent=extent, cmap=cmap)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title)
        ax.set_xlabel("x (um)")
    axes[0].set_ylabel("y (um)")
    axes[2].plot(positions[:, 1] * 1e6, positions[:, 0] * 1e6, "w.", ms=2)
    fig.suptitle(
        f"live mosaic of run {uid[:8]} ({md['sample']}): model {md['model_version']}, "
        f"{md['frames_used']} frames, snapshot {md['snapshot_index']}"
        f"{' (final)' if md['final'] else ''}"
    )
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
