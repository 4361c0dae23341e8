"""The paper's results as commands: ``bluesky-ptychonn study NAME --json OUT [--quick]``.

Each study answers one question a beamline scientist asks before scanning, on the simulated
beamline with a model the package trains itself, and writes a JSON record and a figure:

* ``refine`` (`refine`): the network's image alone, then 5 and 10 ePIE iterations started from
  it, against ePIE from free space for 50, 100 and 200 iterations (the review's Fig. 3);
* ``overlap`` (`overlap`): accuracy of the stitched network image and of ePIE against the
  overlap ratio, from 0.88 down to below 0 (the paper's Fig. 3A);
* ``dose`` (`dose`): low-count data upscaled into a network trained at high counts, and a
  network retrained at low counts (the paper's Fig. 4 and Supplementary Fig. 1).

`common` holds what they share: the beamline and scans, the model, and the scoring (every image
is scored with `metrics.compare` on ePIE's object grid, against the ground truth). May import
``sim``, ``recon``, ``model``, ``stitch``, ``inference`` and ``metrics``; nothing of bluesky.
"""

STUDIES = ("refine", "overlap", "dose")

__all__ = ["STUDIES"]
