"""The stitched network image of a recorded scan: every pattern through the model, then stitched.

`network_image` is what ``bluesky-ptychonn infer`` runs: it reads the model's sidecar and
refuses a scan whose patterns the model cannot take before loading any weight, runs the model
(PyTorch eager, the reference engine) on every pattern, and stitches the patches at the scan's
positions as the live stitcher does (greedy phase alignment, then one global phase
synchronisation).

The stitching weight follows the beam (`stitch_weight`): the data set's probe, else the label
weights the model's sidecar carries (the probe intensity on the label grid its training data
had), else the default Gaussian half a patch wide. A weight of the probe's size trusts each
patch where the beam lit the sample; the default is far wider than a small beam, so the
patch's dark, unconstrained border gets as much say as its centre.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import ComplexImage, PtychoDataset, Reconstruction
from ..stitch.mosaic import Mosaic, MosaicSnapshot
from ..stitch.weights import default_weight, probe_patch_weight

__all__ = ["WEIGHT_SOURCES", "NetworkImage", "check_model_fits", "network_image", "stitch_weight"]

WEIGHT_SOURCES = ("auto", "dataset", "model", "gaussian")
"""Where the stitching weight comes from: ``auto`` takes the first of dataset, model,
gaussian that is available; the others insist on one (an error when it is missing)."""

KEEP_PATCHES_BYTES = 1 << 30  # patches kept for the global phase synchronisation


@dataclass
class NetworkImage:
    """The stitched network image of a scan.

    Attributes:
        snapshot: the mosaic (phase, amplitude, weights, pixel size, origin).
        weight: (H, W) the patch weight it was stitched with.
        weight_source: "dataset", "model", "gaussian" or "given".
        model_version: the model's version string.
        seconds: wall time of inference plus stitching, s.
    """

    snapshot: MosaicSnapshot
    weight: np.ndarray
    weight_source: str
    model_version: str
    seconds: float

    @property
    def image(self) -> ComplexImage:
        """The mosaic as a complex image on its grid (0 where nothing was measured)."""
        s = self.snapshot
        return ComplexImage(s.amplitude * np.exp(1j * s.phase), s.pixel_size_m, s.origin_m)

    def reconstruction(self, dataset: PtychoDataset) -> Reconstruction:
        """As a `Reconstruction` (algorithm "ptychonn-stitch"), to write with `write_cxi`."""
        return Reconstruction(
            object=self.image,
            probe=None,
            positions_m=np.asarray(dataset.positions_m),
            algorithm="ptychonn-stitch",
            settings={
                "model_version": self.model_version,
                "weight_source": self.weight_source,
                "frames_used": int(self.snapshot.frames_used),
                "seconds": round(self.seconds, 4),
            },
        )


def stitch_weight(
    patch_shape: tuple[int, int],
    pixel_scale: float,
    *,
    probe: np.ndarray | None = None,
    sidecar: Any = None,
    source: str = "auto",
) -> tuple[np.ndarray, str]:
    """(weight, where it came from) for patches of ``patch_shape`` (see the module docstring).

    Args:
        patch_shape: (H, W) of the network's patches.
        pixel_scale: patch pixel / readout pixel (4 for the demo model: 128 cropped to 32).
        probe: the data set's (or the last ePIE's) probe on the readout grid.
        sidecar: the model's `Sidecar`; its ``training["label_weights"]`` is used when present.
        source: one of `WEIGHT_SOURCES`.
    """
    if source not in WEIGHT_SOURCES:
        raise ValueError(f"weight source must be one of {WEIGHT_SOURCES}, got {source!r}")
    if source in ("auto", "dataset") and probe is not None:
        return probe_patch_weight(probe, patch_shape, pixel_scale), "dataset"
    if source == "dataset":
        raise ValueError("--weight dataset: the scan carries no probe")
    label_weights = None
    if sidecar is not None:
        label_weights = (sidecar.training or {}).get("label_weights")
    if source in ("auto", "model") and label_weights is not None:
        weights = np.asarray(label_weights, dtype=np.float64)
        return probe_patch_weight(weights, patch_shape, 1.0), "model"
    if source == "model":
        raise ValueError("--weight model: the model's sidecar carries no label weights")
    return default_weight(tuple(patch_shape)), "gaussian"


def check_model_fits(sidecar: Any, dataset: PtychoDataset) -> None:
    """Refuse (ValueError) a scan whose patterns the model cannot take, before any work."""
    prep = sidecar.preprocessing
    shape = tuple(dataset.pattern_shape)
    if shape != tuple(prep.frame_shape) and shape != tuple(prep.input_shape):
        raise ValueError(
            f"the scan's patterns are {shape[0]}x{shape[1]} pixels but the model takes "
            f"{prep.frame_shape[0]}x{prep.frame_shape[1]} frames ({prep.reduce} to "
            f"{prep.input_shape[0]}x{prep.input_shape[1]}); use a model trained on this "
            "detector's frames"
        )


def network_image(
    model: str | Path,
    dataset: PtychoDataset,
    *,
    weight: str | np.ndarray = "auto",
    probe: np.ndarray | None = None,
    batch_size: int = 64,
    synchronise: bool = True,
    intensity_scale: float = 1.0,
) -> NetworkImage:
    """The stitched network image of ``dataset`` (see the module docstring).

    Args:
        model: the model (directory, weights file or sidecar).
        dataset: the scan (patterns, positions, geometry; a probe when known).
        weight: a `WEIGHT_SOURCES` name, or an (H, W) weight array.
        probe: a probe to take the weight from instead of the data set's (e.g. the last
            ePIE's), on the readout grid.
        batch_size: patterns per forward pass.
        synchronise: synchronise all patch phases globally after stitching.
        intensity_scale: extra factor on the counts before the model's own preprocessing
            (low-dose data scaled up to the counts a model was trained on).

    Raises:
        ValueError: patterns the model cannot take (before loading the weights), a missing
            weight source.
    """
    from ..model.checkpoint import load_model, resolve
    from ..model.evaluate import predict

    sidecar = resolve(model).sidecar
    check_model_fits(sidecar, dataset)
    prep = sidecar.preprocessing
    if intensity_scale != 1.0:
        if not (np.isfinite(intensity_scale) and intensity_scale > 0):
            raise ValueError(f"intensity_scale must be positive, got {intensity_scale!r}")
        prep = replace(prep, intensity_scale=prep.intensity_scale * float(intensity_scale))
    pixel, patch_shape = prep.object_patch_geometry(dataset.object_pixel_size_m)
    scale = pixel / dataset.object_pixel_size_m
    if isinstance(weight, str):
        chosen = dataset.probe if probe is None else probe
        patch_weight, source = stitch_weight(
            patch_shape, scale, probe=chosen, sidecar=sidecar, source=weight
        )
    else:
        patch_weight, source = np.asarray(weight, dtype=np.float32), "given"
    started = time.perf_counter()
    net, sidecar = load_model(model)
    predictions = predict(net, prep.apply(np.asarray(dataset.patterns)), batch_size=batch_size)
    mosaic = Mosaic.covering(
        dataset.positions_m,
        pixel,
        patch_weight,
        align_phase=True,
        keep_patches_bytes=KEEP_PATCHES_BYTES if synchronise else 0,
    )
    mosaic.add(predictions[:, 0], predictions[:, 1], dataset.positions_m)
    if synchronise:
        mosaic.synchronise()
    snapshot = mosaic.snapshot(model_version=sidecar.version)
    if predictions.shape[1] > 2:  # the uncertainty head: calibrated sigma, stitched alike
        from ..stitch.uncertainty import UncertaintyMosaic

        sigmas = UncertaintyMosaic(mosaic.grid, patch_weight)
        sigmas.add(predictions[:, 2] * sidecar.uncertainty_scale, dataset.positions_m)
        snapshot.phase_uncertainty = sigmas.sigma()
    return NetworkImage(
        snapshot=snapshot,
        weight=patch_weight,
        weight_source=source,
        model_version=sidecar.version,
        seconds=time.perf_counter() - started,
    )
