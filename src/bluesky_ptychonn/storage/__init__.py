"""Storage at the package's edges: CXI files (``cxi``) and, later, Tiled.

Readers convert foreign conventions (uncentred patterns, (x, y, z) translations, energies in
joules) into the package's own on the way in; writers do the reverse. May import ``geometry``,
``dataset``; never ``devices``, ``plans`` or ``callbacks``.
"""
