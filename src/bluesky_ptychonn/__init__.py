"""bluesky-ptychonn: real-time AI ptychographic imaging for the Bluesky ecosystem.

Layers (lower never import higher): ``geometry``, ``dataset``, ``metrics`` (contracts and pure
helpers) < ``sim``, ``recon``, ``model``, ``stitch`` (no bluesky) < ``storage``, ``inference``,
``stream``, ``ioc`` < ``devices``, ``plans``, ``callbacks``, ``retrain`` < ``session`` <
``commands``, ``cli``, ``demo`` (checked by ``tests/lint/check_layers.py``).
"""

__version__ = "0.1.0"
