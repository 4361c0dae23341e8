"""`AgentOptions`: every setting of the adaptive agent, with units, checked once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ScanMode(StrEnum):
    """How new points relate to measured ones.

    ``overlap``: every new point overlaps a measured one by at least ``min_overlap`` (and at
    most ``max_overlap``), so the scan stays connected and ePIE can reconstruct it (continual
    learning's labels). ``no_overlap``: patches do not overlap (the network alone images the
    sample; the lowest dose per area).
    """

    OVERLAP = "overlap"
    NO_OVERLAP = "no_overlap"


@dataclass
class AgentOptions:
    """Settings of `MosaicAgent`.

    Attributes:
        region_m: (y_min, y_max, x_min, x_max) of the beam positions the agent may choose, m.
        beam_size_m: beam size on the sample (half-power diameter), m: the footprint of a point.
        budget_points: most points the agent suggests (the scan's length).
        footprint_m: width of the area one point images (where the network's patch is
            trusted), m (None: the beam size). Coverage is counted in footprints.
        min_spacing: ``no_overlap`` mode: new points keep at least this many footprint widths
            from measured ones (0.87: the hexagonal covering, footprints meet without gaps
            and overlap only at their cells' corners; 1: footprints never overlap; the default
            0.5 lets the agent close gaps, and the score's unmeasured share keeps overlap low).
        mode: ``ScanMode`` (or its value).
        min_overlap, max_overlap: overlap ratios ``1 - distance / beam_size`` to the nearest
            measured point that a new point must keep in ``overlap`` mode.
        photons_per_point: incident photons per frame (dose bookkeeping; None: not counted).
        dose_budget_photons: the most photons the scan may deposit (None: no dose limit);
            with ``photons_per_point`` it caps the number of points.
        survey_fraction: share of the budget spent first on a uniform coarse grid over the
            region, no denser than 1.5 footprints (``no_overlap`` mode; ``overlap`` mode grows
            from the first point).
        cell_fraction: map cell size as a fraction of the beam size.
        weight_explore: score of an unmeasured footprint with no structure known around it.
        weight_structure: score per unit of normalised phase structure (gradients) nearby.
        weight_uncertainty: score per unit of normalised network uncertainty nearby (used only
            when results carry an uncertainty).
        travel_cost_per_beam: score subtracted per beam size of stage travel from the previous
            point.
        structure_length_m: length over which measured structure predicts structure nearby,
            m (None: the beam size).
        stop_score: the scan stops when no admissible point scores above this.
        seed: seed of the tie-breaking jitter.
    """

    region_m: tuple[float, float, float, float]
    beam_size_m: float
    budget_points: int
    footprint_m: float | None = None
    min_spacing: float = 0.5
    mode: ScanMode | str = ScanMode.NO_OVERLAP
    min_overlap: float = 0.3
    max_overlap: float = 0.7
    photons_per_point: float | None = None
    dose_budget_photons: float | None = None
    survey_fraction: float = 0.2
    cell_fraction: float = 0.25
    weight_explore: float = 0.5
    weight_structure: float = 1.0
    weight_uncertainty: float = 0.5
    travel_cost_per_beam: float = 0.005
    structure_length_m: float | None = None
    stop_score: float = 0.005
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mode = ScanMode(self.mode)
        self.region_m = tuple(float(v) for v in self.region_m)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if len(self.region_m) != 4 or not all(math.isfinite(v) for v in self.region_m):
            raise ValueError(f"region_m must be 4 finite lengths (m), got {self.region_m!r}")
        y0, y1, x0, x1 = self.region_m
        if not (y1 > y0 and x1 > x0):
            raise ValueError(
                f"region_m must be (y_min, y_max, x_min, x_max) with max > min, got {self.region_m}"
            )
        if not (math.isfinite(self.beam_size_m) and self.beam_size_m > 0):
            raise ValueError(f"beam_size_m must be a positive length, got {self.beam_size_m!r}")
        if isinstance(self.budget_points, bool) or not isinstance(self.budget_points, int):
            raise TypeError(f"budget_points must be an integer, got {self.budget_points!r}")
        if self.budget_points < 1:
            raise ValueError(f"the budget must allow at least 1 point, got {self.budget_points}")
        if not (0 <= self.min_overlap <= self.max_overlap < 1):
            raise ValueError(
                "overlaps must satisfy 0 <= min_overlap <= max_overlap < 1, got "
                f"{self.min_overlap!r}, {self.max_overlap!r}"
            )
        for name in ("photons_per_point", "dose_budget_photons"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive photons, got {value!r}")
        if self.dose_budget_photons is not None and self.photons_per_point is None:
            raise ValueError("a dose budget needs photons_per_point")
        if self.max_points < 1:
            raise ValueError(
                f"the dose budget ({self.dose_budget_photons:g} photons) is below one point's "
                f"dose ({self.photons_per_point:g} photons)"
            )
        if self.footprint_m is not None and not (
            math.isfinite(self.footprint_m) and self.footprint_m > 0
        ):
            raise ValueError(f"footprint_m must be a positive length, got {self.footprint_m!r}")
        if not 0.5 <= self.min_spacing <= 2:
            raise ValueError(f"min_spacing must lie in [0.5, 2], got {self.min_spacing!r}")
        if not 0 <= self.survey_fraction <= 1:
            raise ValueError(f"survey_fraction must lie in [0, 1], got {self.survey_fraction!r}")
        if not 0.05 <= self.cell_fraction <= 1:
            raise ValueError(f"cell_fraction must lie in [0.05, 1], got {self.cell_fraction!r}")
        for name in (
            "weight_explore",
            "weight_structure",
            "weight_uncertainty",
            "travel_cost_per_beam",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.structure_length_m is not None and not self.structure_length_m > 0:
            raise ValueError(
                f"structure_length_m must be positive, got {self.structure_length_m!r}"
            )

    @property
    def footprint(self) -> float:
        """The footprint width in use, m."""
        return self.beam_size_m if self.footprint_m is None else float(self.footprint_m)

    @property
    def max_points(self) -> int:
        """The points allowed by both budgets."""
        if self.dose_budget_photons is None:
            return self.budget_points
        return min(self.budget_points, int(self.dose_budget_photons // self.photons_per_point))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings (for start documents and checkpoints)."""
        out = asdict(self)
        out["mode"] = ScanMode(self.mode).value
        out["region_m"] = list(self.region_m)
        return out
