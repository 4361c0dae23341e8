"""The demo network: a small PtychoNN (edge layout) trained on simulated etched gold, cached.

`ensure_demo_model` returns the cached model's directory, training it first (about 6 minutes on
two CPU cores) when the cache has none for the recipe. The demo, and a beamline session
configured with ``model = "demo"`` (the default of the simulated beamline), serve it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__

log = logging.getLogger(__name__)


@dataclass
class DemoModelRecipe:
    """How the cached demo model is trained (its hash names the cache entry).

    Attributes:
        model: preset name ("edge").
        input_px: network input side in pixels.
        base_channels: width of the first block (16 is the published edge model).
        reduce: how the 128-pixel frame becomes the input ("crop": same field of view,
            coarser object pixels; "bin": same pixels, smaller field of view).
        batch_norm: BatchNorm after hidden convolutions (trains faster from scratch).
        learning_rate: peak of the cyclic learning rate.
        half_cycle_epochs: epochs from the lowest to the peak learning rate; None: half the
            epochs (one triangle ending at the lowest rate, which beat three shorter cycles
            on held-out sample kinds, docs/benchmarks.md).
        n_patterns: simulated training frames (random etched gold samples).
        n_samples: distinct random samples the frames are spread over.
        epochs: training epochs.
        photons: incident photons per simulated frame.
        seed: seed of samples, noise, split and weights.
    """

    model: str = "edge"
    input_px: int = 32
    base_channels: int = 8
    reduce: str = "crop"
    batch_norm: bool = True
    depth: int = 3
    n_patterns: int = 24000
    n_samples: int = 32
    epochs: int = 15
    batch_size: int = 16
    learning_rate: float = 3e-3
    half_cycle_epochs: float | None = None
    photons: float = 1e6
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**asdict(self), "package": __version__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """``$BLUESKY_PTYCHONN_CACHE`` or ``~/.cache/bluesky-ptychonn``."""
    return Path(
        os.environ.get("BLUESKY_PTYCHONN_CACHE", Path.home() / ".cache" / "bluesky-ptychonn")
    )


def ensure_demo_model(recipe: DemoModelRecipe | None = None, cache_dir: Path | None = None) -> Path:
    """The cached demo model's directory, training it first when it is not there yet."""
    from .architectures import ModelConfig
    from .checkpoint import load_model, save_model
    from .data import simulate_training_set
    from .preprocessing import Preprocessing
    from .train import TrainingOptions, fit

    recipe = recipe or DemoModelRecipe()
    directory = (cache_dir or default_cache_dir()) / "models" / f"demo-{recipe.key()}"
    if (directory / "model.json").is_file():
        try:
            load_model(directory)
            return directory
        except (ValueError, FileNotFoundError) as error:
            log.warning("cached demo model unusable (%s): training it again", error)
    log.info("training the demo model (%s); it is cached in %s", recipe, directory)
    config = ModelConfig.preset(
        recipe.model,
        input_shape=recipe.input_px,
        base_channels=recipe.base_channels,
        batch_norm=recipe.batch_norm,
        depth=recipe.depth,
    )
    shape = (recipe.input_px, recipe.input_px)
    draft = Preprocessing(input_shape=shape, frame_shape=(128, 128), reduce=recipe.reduce)
    data = simulate_training_set(
        recipe.n_patterns,
        draft,
        sample="etched",
        n_samples=recipe.n_samples,
        photons=recipe.photons,
        seed=recipe.seed,
    )
    preprocessing = Preprocessing.fit(data.frames, shape, (128, 128), reduce=recipe.reduce)
    options = TrainingOptions(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        half_cycle_epochs=recipe.half_cycle_epochs or max(1.0, recipe.epochs / 2),
        seed=recipe.seed,
        progress=True,
    )
    result, preprocessing, provenance = fit(data, config, options, preprocessing=preprocessing)
    provenance["recipe"] = asdict(recipe)
    save_model(
        result.model, directory, preprocessing, version=f"demo-{recipe.key()}", training=provenance
    )
    return directory
