"""Supervised training of a PtychoNN-family network: MAE loss, Adam, cyclic learning rate.

The recipe of the PtychoNN papers: L1 (mean absolute error) loss on phase plus L1 on amplitude,
equally weighted; Adam; a cyclic learning rate between ``learning_rate / 10`` and
``learning_rate`` in "triangular2" mode (the amplitude halves each cycle) stepped every batch,
half a cycle lasting ``half_cycle_epochs`` epochs; ``validation_fraction`` of the pairs held out
(10 %); the weights with the lowest validation loss are kept. A progress bar shows the losses.

Determinism: with the same seed, data, device and number of CPU threads, training gives the same
weights bit for bit on CPU (the split, the shuffling and the initialisation all derive from the
seed). On CUDA, cuDNN is put in deterministic mode, but the bilinear upsampling's backward pass
uses atomic adds, so results agree to rounding only.

`fit` is the one front door (data set in, trained model + provenance out); `train_model` is the
loop on tensors.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn  # noqa: F401  (type hints)

from .architectures import ModelConfig, PtychoNNNet, build_model, count_parameters
from .data import TrainingSet, illuminated_mask
from .preprocessing import Preprocessing
from .uncertainty import laplace_nll

log = logging.getLogger(__name__)


@dataclass
class TrainingOptions:
    """Settings of one training run; JSON-serialisable (recorded in the sidecar).

    Attributes:
        epochs: passes over the training pairs.
        batch_size: pairs per optimiser step.
        learning_rate: peak learning rate of the cycle (Adam).
        half_cycle_epochs: epochs from the lowest to the highest learning rate.
        validation_fraction: fraction of pairs held out to pick the best epoch (0 < f < 1).
        seed: seed of the split, the shuffling and (in `fit`) the initial weights.
        device: "cpu", "cuda" or "cuda:N".
        num_threads: CPU threads torch may use (None: torch's default).
        progress: show a progress bar.
        loss_region: ``"illuminated"`` averages the MAE over the illuminated part of each
            patch only (`data.illuminated_mask` of the probe intensity), where the pattern
            holds information about the object; ``"all"`` over the whole patch (the papers'
            choice, which also asks the network to guess the dark surroundings).
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    half_cycle_epochs: float = 6.0
    validation_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = None
    progress: bool = True
    loss_region: str = "illuminated"

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must lie in (0, 1), got {self.validation_fraction}"
            )
        if not (self.learning_rate > 0 and self.half_cycle_epochs > 0):
            raise ValueError("learning_rate and half_cycle_epochs must be positive")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but torch sees no CUDA device")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.loss_region not in ("illuminated", "all"):
            raise ValueError(
                f"loss_region must be 'illuminated' or 'all', got {self.loss_region!r}"
            )


@dataclass
class TrainingResult:
    """What a training run returns.

    Attributes:
        model: the network with the best (lowest validation loss) weights, in eval mode, on CPU.
        history: one dict per epoch: epoch, train_loss, val_loss, val_phase_mae_rad,
            val_amplitude_mae, learning_rate, seconds.
        best_epoch: 1-based epoch of the kept weights.
        best_val_loss: its validation loss (phase MAE in rad + amplitude MAE).
        seconds: wall time of the run.
    """

    model: PtychoNNNet
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "seconds": round(self.seconds, 2),
            "history": self.history,
        }


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 2:
        raise ValueError(f"training needs at least 2 pairs (one to validate), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, int(round(n * fraction))), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def held_out(data: TrainingSet, options: TrainingOptions) -> TrainingSet:
    """The pairs `fit` holds out for validation with these options (never trained on)."""
    return data.subset(_split(len(data), options.validation_fraction, options.seed)[1])


def _loss_terms(
    pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(phase MAE in rad, amplitude MAE), over the bool (H, W) ``region`` when given."""
    diff = (pred[:, :2] - target).abs()
    if region is not None:
        diff = diff[:, :, region]
    return diff[:, 0].mean(), diff[:, 1].mean()


def _uncertainty_term(
    pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None
) -> torch.Tensor:
    """Laplace NLL of the phase error under the predicted uncertainty (0 without the head).

    The error is detached: the phase itself is trained by the MAE exactly as without the
    head, and the scale head learns how large that error is (`uncertainty.laplace_nll`).
    """
    if pred.shape[1] < 3:
        return pred.new_zeros(())
    error = (pred[:, 0] - target[:, 0]).detach()
    sigma = pred[:, 2]
    if region is not None:
        error, sigma = error[:, region], sigma[:, region]
    return laplace_nll(error, sigma).mean()


def train_model(
    model: PtychoNNNet,
    inputs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    options: TrainingOptions | None = None,
    *,
    region: np.ndarray | None = None,
) -> TrainingResult:
    """Train ``model`` in place on preprocessed inputs and labels; return the best weights.

    Args:
        model: the network (its current weights are the start: fine-tuning is training a
            loaded model).
        inputs: (N, 1, H, W) float32 preprocessed patterns (`Preprocessing.apply`).
        labels: (N, 2, H, W) float32 phase (rad) and amplitude.
        options: the run's settings. A model with the uncertainty head (`ModelConfig.
            uncertainty`) adds the Laplace NLL of its (detached) phase error to the loss; the
            kept epoch is still chosen by phase + amplitude MAE.
        region: bool (H, W), where the loss is evaluated (None: everywhere).
    """
    options = options or TrainingOptions()
    options.validate()
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    h, w = model.config.input_shape
    if x.ndim != 4 or x.shape[1:] != (1, h, w):
        raise ValueError(f"inputs must be (N, 1, {h}, {w}) for this model, got {tuple(x.shape)}")
    if y.shape != (x.shape[0], 2, h, w):
        raise ValueError(f"labels must be ({x.shape[0]}, 2, {h}, {w}), got {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("inputs or labels contain NaN or infinite values")
    mask = None
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != (h, w) or not region.any():
            raise ValueError(f"region must be a non-empty bool ({h}, {w}) array")
        mask = torch.as_tensor(region)

    device = torch.device(options.device)
    threads_before = torch.get_num_threads()
    if options.num_threads:
        torch.set_num_threads(int(options.num_threads))
    cudnn_flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        return _loop(model, x, y, options, device, mask)
    finally:
        torch.set_num_threads(threads_before)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_flags


def _loop(
    model: PtychoNNNet,
    x: torch.Tensor,
    y: torch.Tensor,
    options: TrainingOptions,
    device: torch.device,
    region: torch.Tensor | None,
) -> TrainingResult:
    from tqdm.auto import tqdm

    region = None if region is None else region.to(device)

    train_idx, val_idx = _split(x.shape[0], options.validation_fraction, options.seed)
    x_train, y_train = x[train_idx], y[train_idx]
    x_val, y_val = x[val_idx].to(device), y[val_idx].to(device)
    model.to(device).train()
    batch = min(options.batch_size, len(train_idx))
    steps_per_epoch = math.ceil(len(train_idx) / batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    scheduler = torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr=options.learning_rate / 10,
        max_lr=options.learning_rate,
        step_size_up=max(1, int(round(options.half_cycle_epochs * steps_per_epoch))),
        mode="triangular2",
        cycle_momentum=False,
    )
    generator = torch.Generator().manual_seed(options.seed)
    result = TrainingResult(model=model)
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    bar = tqdm(
        total=options.epochs * steps_per_epoch,
        disable=not options.progress,
        desc="train",
        unit="batch",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(1, options.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            order = torch.randperm(len(train_idx), generator=generator)
            running, seen = 0.0, 0
            for s in range(steps_per_epoch):
                idx = order[s * batch : (s + 1) * batch]
                xb, yb = x_train[idx].to(device), y_train[idx].to(device)
                out = model(xb)
                phase_loss, amplitude_loss = _loss_terms(out, yb, region)
                loss = phase_loss + amplitude_loss + _uncertainty_term(out, yb, region)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += float(loss.detach()) * len(idx)
                seen += len(idx)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{running / seen:.4f}", refresh=False)
            val_phase, val_amplitude = _validate(model, x_val, y_val, batch, region)
            val_loss = val_phase + val_amplitude
            record = {
                "epoch": epoch,
                "train_loss": running / seen,
                "val_loss": val_loss,
                "val_phase_mae_rad": val_phase,
                "val_amplitude_mae": val_amplitude,
                "learning_rate": float(scheduler.get_last_lr()[0]),
                "seconds": time.perf_counter() - t0,
            }
            result.history.append(record)
            bar.set_postfix(epoch=epoch, loss=f"{record['train_loss']:.4f}", val=f"{val_loss:.4f}")
            if val_loss < result.best_val_loss:
                result.best_val_loss, result.best_epoch = val_loss, epoch
                best_state = copy.deepcopy(model.state_dict())
            log.debug("epoch %d: %s", epoch, record)
    finally:
        bar.close()
    model.load_state_dict(best_state)
    result.model = model.to("cpu").eval()
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def _validate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, region: torch.Tensor | None
) -> tuple[float, float]:
    model.eval()
    phase_sum = amplitude_sum = 0.0
    for s in range(0, x.shape[0], batch):
        p, a = _loss_terms(model(x[s : s + batch]), y[s : s + batch], region)
        n = min(batch, x.shape[0] - s)
        phase_sum += float(p) * n
        amplitude_sum += float(a) * n
    return phase_sum / x.shape[0], amplitude_sum / x.shape[0]


def fit(
    data: TrainingSet,
    model: PtychoNNNet | ModelConfig | str,
    options: TrainingOptions | None = None,
    *,
    preprocessing: Preprocessing | None = None,
    parent: dict[str, Any] | None = None,
) -> tuple[TrainingResult, Preprocessing, dict[str, Any]]:
    """Train on a `TrainingSet`: preprocess, build (or fine-tune) the model, train.

    Args:
        data: frames and labels.
        model: a network to fine-tune, or a `ModelConfig` / preset name to build one (its
            initial weights come from ``options.seed``).
        options: training settings.
        preprocessing: how frames become input; required when fine-tuning (use the parent
            model's); for a new model default `Preprocessing.fit` on the data (log, crop).
        parent: the parent model's sidecar facts (version, sha256) when fine-tuning.

    Returns:
        (result, preprocessing, provenance): provenance is the ``training`` section of the
        sidecar (data, options, losses, parameter count, parent).
    """
    options = options or TrainingOptions()
    options.validate()
    if isinstance(model, (str, ModelConfig)):
        torch.manual_seed(options.seed)
        model = build_model(model)
    if preprocessing is None:
        frame_shape = tuple(data.frames.shape[-2:])
        preprocessing = Preprocessing.fit(data.frames, model.config.input_shape, frame_shape)
    if preprocessing.input_shape != model.config.input_shape:
        raise ValueError(
            f"the preprocessing makes {preprocessing.input_shape} input but the model takes "
            f"{model.config.input_shape}"
        )
    if data.labels.shape[-2:] != model.config.input_shape:
        raise ValueError(
            f"labels are {data.labels.shape[-2:]} but the model outputs {model.config.input_shape}"
        )
    inputs = preprocessing.apply(data.frames)
    region = illuminated_mask(data.weights) if options.loss_region == "illuminated" else None
    result = train_model(model, inputs, data.labels, options, region=region)
    provenance = {
        "data": data.metadata,
        "n_pairs": len(data),
        "label_pixel_size_m": data.label_pixel_size_m,
        # the probe intensity on the label grid: the stitching weight of this model's patches
        "label_weights": np.round(np.asarray(data.weights, dtype=np.float64), 4).tolist(),
        "options": asdict(options),
        "parameters": count_parameters(result.model),
        "parent": parent,
        **result.summary(),
    }
    return result, preprocessing, provenance
