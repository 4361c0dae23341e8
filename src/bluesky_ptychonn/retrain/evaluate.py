"""How good is the live image a model gives of a recorded scan (against truth and against ePIE).

`network_mosaic` runs a model on every pattern of a scan and stitches the patches at the scan's
positions exactly as the live stitcher does (the probe's intensity on the label grid as the
patch weight, greedy phase alignment, then one global phase synchronisation). `score_image`
compares an image on the mosaic's canvas with a reference there (`metrics.compare`: phase RMS
after removing the global phase, shift and ramp; SSIM; FRC half-bit resolution) over the
well-covered region. `on_canvas` resamples a reference (the ground truth, an ePIE object) to
the mosaic's pixel size and canvas. Worker side (torch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

COVERED_FRACTION = 0.3
"""Region scored: canvas weight above this fraction of the 90th percentile of the weights."""


def network_mosaic(model_dir: str, dataset: Any, *, batch_size: int = 64) -> Any:
    """The stitched network image (`MosaicSnapshot`) of a scan (`PtychoDataset`):
    `inference.offline.network_image` with the probe's intensity on the label grid as the
    patch weight (what the labels were cut with)."""
    from ..inference.offline import network_image
    from ..model.checkpoint import resolve
    from ..model.data import label_weights

    prep = resolve(model_dir).sidecar.preprocessing
    frames = np.asarray(dataset.patterns)
    if tuple(frames.shape[-2:]) != tuple(prep.frame_shape):
        raise ValueError(
            f"the scan's patterns are {frames.shape[-2]}x{frames.shape[-1]}, the model takes "
            f"{tuple(prep.frame_shape)}"
        )
    weight = label_weights(dataset.probe, prep)
    return network_image(model_dir, dataset, weight=weight, batch_size=batch_size).snapshot


def on_canvas(image: Any, snapshot: Any) -> np.ndarray:
    """A `ComplexImage` on the snapshot's canvas (resampled to its pixel size when needed)."""
    from ..dataset import ComplexImage
    from ..recon.quality import resampled_on_grid

    canvas = ComplexImage(snapshot.phase, snapshot.pixel_size_m, snapshot.origin_m)
    return resampled_on_grid(image, canvas).astype(np.complex64)


def covered_region(snapshot: Any) -> np.ndarray:
    weights = snapshot.weights
    return weights > COVERED_FRACTION * np.percentile(weights[weights > 0], 90)


def score_image(estimate: np.ndarray, reference: np.ndarray, region: np.ndarray) -> dict:
    """`metrics.compare` of two images on one canvas over ``region`` (JSON-ready floats)."""
    from ..metrics import compare

    scores = compare(estimate, reference, region)
    return {
        "phase_rms_rad": float(scores["phase_rms_rad"]),
        "phase_ssim": float(scores["phase_ssim"]),
        "frc_half_bit_resolution_px": float(scores["frc_half_bit_resolution_px"]),
    }
