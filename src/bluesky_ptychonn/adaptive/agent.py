"""`MosaicAgent`: chooses the next beam positions from the live phase (bluesky-adaptive 1.0's
`Optimizer` protocol and its optional ones, structurally; see the package docstring).

A suggestion is ``{"_id": "p00012", "beam_y_m": ..., "beam_x_m": ..., "reason": ..., "score":
...}``; an outcome is ``{"_id": ..., "structure_rad_per_m": ...}`` with optionally
``"uncertainty_rad"`` (the network's mean phase uncertainty over the patch, when it reports
one) and ``"frame_id"``. Outcomes for points the agent never suggested carry their own
``beam_y_m`` / ``beam_x_m``. A non-finite outcome is refused (ValueError) before anything of
it is kept: nothing downstream is computed from garbage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import PixelGrid
from . import scoring
from .maps import RegionMap, block_means, wrapped_gradient_magnitude
from .options import AgentOptions, ScanMode
from .strategies import uniform_grid

POSITION_KEYS = ("beam_y_m", "beam_x_m")
STRUCTURE_KEY = "structure_rad_per_m"
UNCERTAINTY_KEY = "uncertainty_rad"
SCORE_TERMS = (
    "unmeasured_fraction",
    "explore_term",
    "structure_term",
    "uncertainty_term",
    "travel_cost",
)  # every suggestion carries them (0 for survey and hand-made)
MOSAIC_WEIGHT_FLOOR = 0.05  # mosaic pixels under this share of the peak weight: unknown
SURVEY_SPACING = 1.5  # survey points at least this many footprint widths apart


class MosaicAgent:
    """The adaptive agent (module docstring). ``checkpoint_path``: where `checkpoint` writes
    its state as JSON (`MosaicAgent.restore` reads it back)."""

    def __init__(self, options: AgentOptions, *, checkpoint_path: str | Path | None = None):
        self.options = options
        o = options
        self.map = RegionMap(o.region_m, o.cell_fraction * o.beam_size_m, o.footprint)
        length = o.structure_length_m or o.footprint
        self.sigma_cells = length / self.map.grid.cell_m
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.pending: dict[str, dict[str, Any]] = {}
        self.measured: dict[str, dict[str, Any]] = {}  # id -> suggestion + outcome + reason
        self.failed: list[str] = []
        self.last_position_m: tuple[float, float] | None = None
        self.exhausted_reason: str | None = None
        self._next = 0
        self._survey = self._survey_points()
        rng = np.random.default_rng(o.seed)
        self._jitter = rng.uniform(0, 1e-6, self.map.grid.shape)  # deterministic tie-break

    # ---- the Optimizer protocol ------------------------------------------------------------
    def suggest(self, num_points: int | None = None) -> list[dict[str, Any]]:
        """Up to ``num_points`` (default 1) new positions, each with its reason; fewer (or
        none) when the budget is spent or nothing admissible scores above ``stop_score``."""
        n = 1 if num_points is None else int(num_points)
        if n < 1:
            raise ValueError(f"num_points must be at least 1, got {num_points!r}")
        n = min(n, self.points_left)
        out: list[dict[str, Any]] = []
        while len(out) < n and self._survey:
            y, x = self._survey.pop(0)
            if self.map.nearest_m[self.map.grid.to_cell(y, x)] < self._min_distance_m:
                continue  # already measured there (a restored or externally fed scan)
            out.append(self._register(y, x, "survey: uniform coarse grid", 0.0, {}))
        if len(out) < n:
            out.extend(self._greedy(n - len(out)))
        return out

    def ingest(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Take measured outcomes (see the module docstring); all are checked before any is
        kept."""
        checked = [self._check_outcome(p) for p in points]
        for key, position, outcome in checked:
            record = self.pending.pop(key, None) or {
                "_id": key,
                "reason": "external",
                "score": None,
            }
            record.update({"beam_y_m": position[0], "beam_x_m": position[1], "outcome": outcome})
            self.measured[key] = record
            self.map.mark(*position)
            self.map.add_value("structure", *position, outcome[STRUCTURE_KEY])
            if UNCERTAINTY_KEY in outcome:
                self.map.add_value("uncertainty", *position, outcome[UNCERTAINTY_KEY])

    def should_stop(self) -> tuple[bool, str | None]:
        """(True, why) when the point or dose budget is spent or nothing is worth measuring."""
        o = self.options
        if len(self.measured) >= o.max_points:
            if o.dose_budget_photons is not None and o.max_points < o.budget_points:
                return True, (
                    f"dose budget reached: {len(self.measured)} points x "
                    f"{o.photons_per_point:g} photons of {o.dose_budget_photons:g}"
                )
            return True, f"point budget reached: {len(self.measured)} of {o.budget_points}"
        if self.exhausted_reason is not None and not self.pending:
            return True, self.exhausted_reason
        return False, None

    def register_failures(self, suggestions: Sequence[Mapping[str, Any]]) -> None:
        """Suggestions whose acquisition failed: released (their area counts as unmeasured
        again) and listed in ``failed``."""
        for suggestion in suggestions:
            key = str(suggestion["_id"])
            if self.pending.pop(key, None) is not None:
                self.failed.append(key)
        self._rebuild_coverage()

    def register_suggestions(self, suggestions: Sequence[Mapping[str, Any]]) -> list[dict]:
        """Positions chosen by hand (``beam_y_m``, ``beam_x_m``) become pending suggestions with
        ids (bluesky-adaptive's `CanRegisterSuggestions`)."""
        out = []
        for s in suggestions:
            y, x = self._position(s)
            out.append(self._register(y, x, "registered by hand", 0.0, {}))
        return out

    def get_best_points(self) -> list[tuple[Any, dict, dict]]:
        """The measured point with the most phase structure: ``[(id, position, outcome)]``."""
        if not self.measured:
            return []
        key, rec = max(self.measured.items(), key=lambda kv: kv[1]["outcome"][STRUCTURE_KEY])
        return [(key, {k: rec[k] for k in POSITION_KEYS}, dict(rec["outcome"]))]

    def checkpoint(self) -> None:
        """Write the state (options, measured and pending points with reasons) as JSON."""
        if self.checkpoint_path is None:
            raise ValueError("no checkpoint_path was given to this agent")
        state = {
            "options": self.options.as_dict(),
            "measured": list(self.measured.values()),
            "pending": list(self.pending.values()),
            "failed": self.failed,
            "next": self._next,
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.checkpoint_path)

    @classmethod
    def restore(cls, path: str | Path) -> MosaicAgent:
        """An agent from a `checkpoint` file: measured points re-ingested, pending ones kept."""
        state = json.loads(Path(path).read_text())
        options = state["options"]
        options["region_m"] = tuple(options["region_m"])
        agent = cls(AgentOptions(**options), checkpoint_path=path)
        for rec in state["measured"]:
            agent.pending[rec["_id"]] = {k: v for k, v in rec.items() if k != "outcome"}
            agent.ingest([{"_id": rec["_id"], **rec["outcome"]}])
        for rec in state["pending"]:
            agent.pending[rec["_id"]] = rec
            agent.map.mark(rec["beam_y_m"], rec["beam_x_m"])
        agent.failed = list(state["failed"])
        agent._next = int(state["next"])
        return agent

    # ---- the live mosaic ---------------------------------------------------------------------
    def observe_mosaic(self, snapshot: Any) -> None:
        """Replace the structure map (and the uncertainty map, when the snapshot carries a
        ``phase_uncertainty`` array) with the mosaic's, at full resolution.

        ``snapshot``: a `MosaicSnapshot`-like object (``phase``, ``weights``, ``pixel_size_m``,
        ``origin_m``) or mapping with those keys. Non-finite phase where the mosaic has weight
        is refused (ValueError).
        """
        get = (
            snapshot.get
            if isinstance(snapshot, Mapping)
            else lambda k, d=None: getattr(snapshot, k, d)
        )  # noqa: E731
        phase = np.asarray(get("phase"), dtype=np.float64)
        weights = np.asarray(get("weights"), dtype=np.float64)
        pixel = float(get("pixel_size_m"))
        grid = PixelGrid(pixel, tuple(get("origin_m")), phase.shape)
        if not weights.any():
            return
        valid = weights > MOSAIC_WEIGHT_FLOOR * weights.max()
        if not np.all(np.isfinite(phase[valid])):
            raise ValueError("the live mosaic holds NaN or infinite phase where it was measured")
        inner = valid.copy()  # a gradient needs both neighbours measured
        inner[:-1] &= valid[1:]
        inner[:, :-1] &= valid[:, 1:]
        gradient = wrapped_gradient_magnitude(np.where(valid, phase, 0.0), pixel)
        values, w = block_means(gradient, inner, grid, self.map.grid)
        self.map.set_map("structure", np.sqrt(np.maximum(values, 0)) ** 2, w)
        uncertainty = get("phase_uncertainty")
        if uncertainty is not None:
            u = np.asarray(uncertainty, dtype=np.float64)
            ok = valid & np.isfinite(u)
            values, w = block_means(np.where(ok, u, 0.0), ok, grid, self.map.grid)
            self.map.set_map("uncertainty", values, w)

    # ---- bookkeeping -------------------------------------------------------------------------
    @property
    def _min_distance_m(self) -> float:
        """``no_overlap``: the closest a new point may come to a measured one, m."""
        return self.options.min_spacing * self.options.footprint

    @property
    def points_left(self) -> int:
        return max(0, self.options.max_points - len(self.measured) - len(self.pending))

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every measured point in order of suggestion: id, position, reason, score terms,
        outcome."""
        return sorted(self.measured.values(), key=lambda r: r["_id"])

    def positions_m(self) -> np.ndarray:
        """(N, 2) (y, x) of the measured points, m, in order of suggestion."""
        return np.array([[r["beam_y_m"], r["beam_x_m"]] for r in self.history]).reshape(-1, 2)

    def _survey_points(self) -> list[tuple[float, float]]:
        o = self.options
        if o.mode != ScanMode.NO_OVERLAP or o.survey_fraction <= 0:
            return []
        n = int(round(o.survey_fraction * o.max_points))
        y0, y1, x0, x1 = o.region_m
        # a survey no denser than SURVEY_SPACING footprints, so that its gaps can be filled
        n = min(n, int((y1 - y0) * (x1 - x0) / (SURVEY_SPACING * o.footprint) ** 2))
        if n < 1:
            return []
        pts = uniform_grid(o.region_m, n)
        # survey points one beam apart at least (no overlap); a dense survey is thinned
        keep: list[tuple[float, float]] = []
        for y, x in pts:
            if all(math.hypot(y - a, x - b) >= self._min_distance_m * (1 - 1e-9) for a, b in keep):
                keep.append((float(y), float(x)))
        return keep

    def _register(
        self, y: float, x: float, reason: str, score: float, terms: dict[str, float]
    ) -> dict[str, Any]:
        key = f"p{self._next:05d}"
        self._next += 1
        travel = (
            0.0
            if self.last_position_m is None
            else math.hypot(y - self.last_position_m[0], x - self.last_position_m[1])
        )
        suggestion = {
            "_id": key,
            "beam_y_m": float(y),
            "beam_x_m": float(x),
            "reason": reason,
            "score": float(score),
            **{k: float(terms.get(k, 0.0)) for k in SCORE_TERMS},
            "travel_m": float(travel),
        }
        self.pending[key] = dict(suggestion)
        self.map.mark(y, x)
        self.last_position_m = (float(y), float(x))
        return suggestion

    def _greedy(self, n: int) -> list[dict[str, Any]]:
        o, m = self.options, self.map
        structure = scoring.predicted(m.structure_sum, m.structure_weight, self.sigma_cells)
        uncertainty = scoring.predicted(m.uncertainty_sum, m.uncertainty_weight, self.sigma_cells)
        cy, cx = m.grid.centres_m
        out = []
        unmeasured = scoring.unmeasured_fraction(m.covered, m.footprint)
        value = (
            o.weight_explore + o.weight_structure * structure + o.weight_uncertainty * uncertainty
        )
        for _ in range(n):
            gain = unmeasured * value
            ok = scoring.admissible(
                m.nearest_m,
                o.beam_size_m,
                o.mode.value,
                o.min_overlap,
                o.max_overlap,
                self._min_distance_m,
            )
            # the stopping rule looks at the gain alone: a far gap is still worth the trip
            worth = ok & (gain > o.stop_score)
            if not worth.any():
                best = float(gain[ok].max()) if ok.any() else -np.inf
                self.exhausted_reason = (
                    "no admissible position is worth measuring: best gain "
                    f"{best:.3g} <= stop_score {o.stop_score:g}"
                    if np.isfinite(best)
                    else f"no position left that keeps the {o.mode.value} rule"
                )
                break
            travel = scoring.travel_m(cy, cx, self.last_position_m)
            cost = o.travel_cost_per_beam * travel / o.beam_size_m
            score = np.where(worth, gain - cost + self._jitter, -np.inf)
            flat = int(np.argmax(score))
            r, c = np.unravel_index(flat, score.shape)
            u = float(unmeasured[r, c])
            terms = {
                "unmeasured_fraction": u,
                "explore_term": u * o.weight_explore,
                "structure_term": u * o.weight_structure * float(structure[r, c]),
                "uncertainty_term": u * o.weight_uncertainty * float(uncertainty[r, c]),
                "travel_cost": float(cost[r, c]),
            }
            dominant = max(
                ("explore_term", "structure_term", "uncertainty_term"), key=lambda k: terms[k]
            )
            why = {
                "explore_term": "unmeasured area, no structure known nearby",
                "structure_term": "phase structure (gradients) measured nearby",
                "uncertainty_term": "the network is uncertain nearby",
            }[dominant]
            y, x = m.grid.position_m(int(r), int(c))
            out.append(self._register(y, x, why, float(gain[r, c] - cost[r, c]), terms))
            scoring.update_unmeasured(unmeasured, m.covered, m.footprint, int(r), int(c))
        return out

    def _rebuild_coverage(self) -> None:
        points = [
            (r["beam_y_m"], r["beam_x_m"])
            for r in [*self.measured.values(), *self.pending.values()]
        ]
        self.map.rebuild(np.asarray(points, dtype=np.float64).reshape(-1, 2))

    def _position(self, point: Mapping[str, Any]) -> tuple[float, float]:
        try:
            y, x = (float(point[k]) for k in POSITION_KEYS)
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"a point needs numbers {POSITION_KEYS}, got {dict(point)!r}"
            ) from None
        if not (math.isfinite(y) and math.isfinite(x)):
            raise ValueError(f"a point's position must be finite, got ({y!r}, {x!r})")
        return y, x

    def _check_outcome(self, point: Mapping[str, Any]) -> tuple[str, tuple[float, float], dict]:
        key = point.get("_id")
        if key is not None and str(key) in self.pending:
            rec = self.pending[str(key)]
            position = (rec["beam_y_m"], rec["beam_x_m"])
        elif key is not None and str(key) in self.measured:
            raise ValueError(f"point {key} was already ingested")
        else:
            position = self._position(point)
            key = key if key is not None else f"x{len(self.measured):05d}"
        outcome: dict[str, float] = {}
        for name in (STRUCTURE_KEY, UNCERTAINTY_KEY, "frame_id"):
            if name not in point:
                continue
            value = point[name]
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"point {key}: {name} must be a number, got {value!r}") from None
            if not math.isfinite(value) or (name != "frame_id" and value < 0):
                raise ValueError(
                    f"point {key}: {name} = {value!r} is not a valid measurement (NaN, "
                    "infinite or negative): the endpoint's result is refused"
                )
            outcome[name] = value
        if STRUCTURE_KEY not in outcome:
            raise ValueError(f"point {key}: the outcome has no {STRUCTURE_KEY!r}")
        return str(key), position, outcome
