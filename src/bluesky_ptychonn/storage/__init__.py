"""Storage at the package's edges: CXI files (``cxi``) and Tiled.

Tiled: ``tiled_server`` (the embedded server process), ``tiled_catalog`` (``connect``, the
catalog's layout, idempotent ``NodeWrite``), ``tiled_runs`` (runs found and read back as data
sets; CXI-or-Tiled input), ``tiled_results`` (mosaics, iterative reconstructions, training
pairs), ``tiled_models`` (the model registry) and ``spool`` (the on-disk spool behind
``callbacks.tiled_writer.SpooledTiledWriter``).

Readers convert foreign conventions (uncentred patterns, (x, y, z) translations, energies in
joules) into the package's own on the way in; writers do the reverse. May import ``geometry``,
``dataset``; never ``devices``, ``plans`` or ``callbacks``.
"""
