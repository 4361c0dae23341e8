"""A session configuration for tests: a tiny model, everything in a temporary folder."""

from __future__ import annotations

from pathlib import Path


def session_toml(
    folder: Path, model: Path, *, detectors: tuple[str, ...] = ("eiger",), **tables: str
) -> str:
    """A session configuration (TOML text): the simulated beamline with ``detectors``, a small
    sample, ``model`` on a one-thread PyTorch endpoint, a Tiled server, spool and live picture
    of its own under ``folder``; ``tables`` adds tables (name -> body)."""
    names = ", ".join(f'"{name}"' for name in detectors)
    text = f"""
data_dir = "{folder / "session"}"

[sim]
detectors = [{names}]
field_of_view_m = [2e-6, 2e-6]

[endpoint]
model = "{model}"
backend = "pytorch"
batch_size = 8
threads = 1

[tiled]
mosaic_period_s = 0.5

[live_view]
period_s = 0.2
"""
    for name, body in tables.items():
        text += f"\n[{name}]\n{body}\n"
    return text
