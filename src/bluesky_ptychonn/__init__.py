"""bluesky-ptychonn: real-time AI ptychographic imaging for the Bluesky ecosystem.

Layers (lower never import higher): ``geometry``, ``dataset``, ``metrics`` (contracts and pure
helpers) < ``sim``, ``recon``, ``model``, ``stitch`` (no bluesky) < ``storage``, ``inference``,
``stream`` < ``devices``, ``plans``, ``callbacks``, ``retrain`` < ``cli``.
"""

__version__ = "0.1.0"
