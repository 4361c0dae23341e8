"""Document-stream callbacks: functions of ``(name, doc)`` that a RunEngine subscribes.

Each callback works from documents alone (never from the RunEngine or a device), so it runs
unchanged in-process or behind a ``RemoteDispatcher``. ``tiled_writer`` holds
`SpooledTiledWriter` (runs to Tiled through an on-disk spool that survives outages) and
``tiled_mosaic`` holds `LiveMosaicWriter` (periodic snapshots of the live mosaic into Tiled).
May import ``storage``, ``stitch``, ``inference``, ``stream`` and the lower layers; never
``plans``, ``retrain`` or ``cli``.
"""
