"""Training: determinism, best-epoch selection, fine-tuning, and learning phase retrieval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bluesky_ptychonn.model import (
    ModelConfig,
    Preprocessing,
    TrainingOptions,
    build_model,
    fit,
    predict,
    simulate_training_set,
    train_model,
)
from bluesky_ptychonn.model.evaluate import evaluate


@pytest.fixture(scope="module")
def tiny_set():
    prep = Preprocessing((32, 32), (128, 128), "crop")
    return simulate_training_set(40, prep, n_samples=2, seed=4, field_of_view_m=(1e-6, 1e-6))


def options(**changes) -> TrainingOptions:
    base = {"epochs": 2, "batch_size": 8, "progress": False, "num_threads": 1, "seed": 7}
    return TrainingOptions(**(base | changes))


def test_same_seed_gives_the_same_weights(tiny_set):
    config = ModelConfig.preset("edge", input_shape=32, base_channels=4)
    a, _, _ = fit(tiny_set, config, options())
    b, _, _ = fit(tiny_set, config, options())
    c, _, _ = fit(tiny_set, config, options(seed=8))
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    assert not torch.equal(
        a.model.state_dict()["encoder.0.weight"], c.model.state_dict()["encoder.0.weight"]
    )


def test_the_weights_with_the_lowest_validation_loss_are_kept(tiny_set):
    config = ModelConfig.preset("edge", input_shape=32, base_channels=4)
    result, prep, provenance = fit(tiny_set, config, options(epochs=4, learning_rate=5e-3))
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert result.best_val_loss == min(losses)
    assert provenance["best_epoch"] == result.best_epoch
    assert provenance["n_pairs"] == 40 and provenance["data"]["sample"] == "etched"
    assert 0 < provenance["options"]["validation_fraction"] < 1


def test_finetuning_starts_from_the_given_weights(tiny_set):
    torch.manual_seed(0)
    model = build_model("edge", input_shape=32, base_channels=4)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    prep = Preprocessing.fit(tiny_set.frames, (32, 32))
    inputs = prep.apply(tiny_set.frames)
    result = train_model(model, inputs, tiny_set.labels, options(epochs=1))
    assert result.model is model
    moved = [not torch.equal(start[k], v) for k, v in model.state_dict().items()]
    assert any(moved)


def test_bad_training_input_is_refused(tiny_set):
    model = build_model("edge", input_shape=32, base_channels=4)
    with pytest.raises(ValueError, match=r"inputs must be \(N, 1, 32, 32\)"):
        train_model(model, np.zeros((4, 1, 64, 64), np.float32), tiny_set.labels[:4], options())
    with pytest.raises(ValueError, match="labels must be"):
        train_model(model, np.zeros((4, 1, 32, 32), np.float32), tiny_set.labels[:3], options())
    with pytest.raises(ValueError, match="NaN"):
        train_model(
            model, np.full((4, 1, 32, 32), np.nan, np.float32), tiny_set.labels[:4], options()
        )
    with pytest.raises(ValueError, match="validation_fraction"):
        options(validation_fraction=1.0).validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            options(device="cuda").validate()


def _learn(n_train: int, epochs: int):
    """Train an 8-channel edge model at 32 x 32 on simulated etched samples; score held-out
    letters (a sample kind it never saw) against the zero-phase guess."""
    prep = Preprocessing((32, 32), (128, 128), "crop")
    sim = {"defocus_m": 100e-6, "field_of_view_m": (2e-6, 2e-6)}
    train = simulate_training_set(n_train, prep, n_samples=8, seed=0, **sim)
    test = simulate_training_set(100, prep, sample="letters", n_samples=2, seed=50, **sim)
    config = ModelConfig.preset("edge", input_shape=32, base_channels=8, batch_norm=True)
    result, prep, _ = fit(
        train,
        config,
        options(
            epochs=epochs,
            batch_size=8,
            learning_rate=3e-3,
            half_cycle_epochs=max(1, epochs / 3),
            seed=0,
        ),
    )
    x = prep.apply(test.frames)
    scores = evaluate(lambda a: predict(result.model, a), x, test.labels, test.weights)
    flat = np.stack([np.zeros_like(test.labels[:, 0]), np.ones_like(test.labels[:, 1])], 1)
    baseline = evaluate(lambda a: flat, x, test.labels, test.weights)
    return scores, baseline, result


def test_small_model_learns_phase_of_an_unseen_sample_kind():
    """Small case, deterministic (one thread, fixed seeds): after ~20 s of CPU training on
    etched samples, the phase of held-out letters is closer to the truth than the flat guess
    and carries structure (SSIM well above the flat guess's ~0). It fails when labels and
    patterns disagree (geometry, gauge) or nothing is learned. It does not reach the issue's
    SSIM >= 0.7, which needs minutes of training: see `test_the_demo_recipe_...` (slow)
    and `benchmarks/bench_training.py`."""
    scores, baseline, result = _learn(800, 5)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert scores["phase_mae_rad"] < 0.98 * baseline["phase_mae_rad"]
    assert scores["phase_ssim_mean"] > 0.03 > 10 * baseline["phase_ssim_mean"]


def score_on_coarse_siemens_star(model_dir) -> dict[str, float]:
    """Phase SSIM statistics of a saved model on 300 held-out patterns of a 12-spoke Siemens
    star (a sample kind the etched training set never had), the demo's beamline geometry."""
    from bluesky_ptychonn.model import load_model

    model, sidecar = load_model(model_dir)
    prep = sidecar.preprocessing
    test = simulate_training_set(
        300, prep, sample="siemens-star", n_samples=3, seed=1001,
        sample_options={"n_spokes": 12},
    )  # fmt: skip
    return evaluate(lambda a: predict(model, a), prep.apply(test.frames), test.labels, test.weights)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_demo_recipe_reaches_phase_ssim_0p7_on_an_unseen_siemens_star(tmp_path):
    """The issue's figure, end to end: the demo model trained from scratch by its own recipe
    (24,000 simulated etched patterns, 15 epochs: about 6 minutes on 2 cores) infers the phase
    of a sample kind it never saw with a per-patch SSIM >= 0.7 for the typical patch
    (bench training measured mean 0.710, median 0.793 with the same recipe)."""
    from bluesky_ptychonn.demo import ensure_demo_model

    scores = score_on_coarse_siemens_star(ensure_demo_model(cache_dir=tmp_path))
    assert scores["phase_ssim_median"] >= 0.7
    assert scores["fraction_ssim_ge_0p7"] >= 0.6
