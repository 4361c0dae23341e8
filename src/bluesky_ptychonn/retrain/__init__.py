"""Continual learning: finished scans -> ePIE labels -> gate -> training on Dask -> promotion.

The loop of Babu et al. (2023) as a graph of steps that each run and test alone:

* `labels`: a finished run (Tiled or CXI) -> ePIE -> labels at each position -> ``training/``;
* `gate`: the model in service against held-out new labels -> train / fine-tune / skip / suspend;
* `challenger`: warm start + replay of earlier labels -> must beat the incumbent on holdout;
* `promote`: export, register in Tiled ``models/`` with lineage, hot swap at the endpoint;
* `cluster`: where the heavy steps run (Dask LocalCluster, a scheduler address, Slurm / PBS);
* `loop` and `dispatcher`: the state machine and the document-stream callback.
"""
