"""What the loop writes to Tiled: labels in ``training/``, one record per scan in ``continual/``.

Both are `NodeWrite`s that the loop hands to its spooled writer (`SpooledTiledWriter.submit`),
so a Tiled outage delays them and loses nothing. Model versions go to ``models/`` through
`promote.registry_write`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..storage.tiled_catalog import NodeWrite, safe_key, utc_now

RECORD_SPEC = "ContinualLearningRecord"
STATE_KEY = "loop-state"


def labels_write(labels_path: str, lineage: dict[str, Any]) -> NodeWrite:
    """The `NodeWrite` of one scan's labels (`labels.LabelSet` file) with their lineage."""
    from ..storage.tiled_results import TrainingPairs, training_pairs_write
    from .labels import LabelSet

    label_set = LabelSet.load(labels_path)
    n = label_set.n_pairs
    pairs = TrainingPairs(
        patterns=label_set.frames,
        phase=label_set.labels[:, 0],
        amplitude=label_set.labels[:, 1],
        positions_m=label_set.positions_m,
        frame_indices=np.arange(n),
        scan_uid=str(lineage.get("scan_uid", "")),
        reconstruction=f"{lineage.get('scan_uid', '')}-epie",
        reconstruction_kind=str(lineage.get("reconstruction", {}).get("algorithm", "epie")),
        pixel_size_m=label_set.label_pixel_size_m,
        provenance={"continual": lineage, "n_holdout": int(label_set.holdout.sum())},
    )
    write = training_pairs_write(pairs)
    write.arrays["holdout"] = label_set.holdout.astype(np.uint8)
    write.arrays["weights"] = label_set.weights.astype(np.float32)
    return write


def record_write(record: dict[str, Any], status: dict[str, Any]) -> NodeWrite:
    """The `NodeWrite` of one scan's record (metadata only), with the loop's state after it."""
    key = safe_key(f"{record['scan_uid']}-{record.get('finished') or utc_now()}")
    return NodeWrite(
        parent="continual",
        key=key,
        metadata={"record": record, "loop": status, "written": utc_now()},
        specs=[RECORD_SPEC],
    )
