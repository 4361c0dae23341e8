"""The adaptive agent without a RunEngine: protocol, modes, budgets, reasons, faults."""

import math

import numpy as np
import pytest

from bluesky_ptychonn.adaptive import AgentOptions, MosaicAgent
from bluesky_ptychonn.adaptive.maps import patch_structure
from bluesky_ptychonn.stitch.mosaic import MosaicSnapshot

BEAM = 0.4e-6
REGION = (-2e-6, 2e-6, -2e-6, 2e-6)


def agent(**options):
    return MosaicAgent(AgentOptions(region_m=REGION, beam_size_m=BEAM, **options))


def feed(a, suggestions, structure):
    a.ingest(
        [
            {"_id": s["_id"], "structure_rad_per_m": structure(s["beam_y_m"], s["beam_x_m"])}
            for s in suggestions
        ]
    )


def test_the_agent_satisfies_bluesky_adaptive_protocols():
    from bluesky_adaptive.protocols import (
        CanRegisterSuggestions,
        Checkpointable,
        Optimizer,
        SupportsStoppingCriteria,
        TrialFaultAware,
    )

    a = agent(budget_points=10)
    for protocol in (
        Optimizer,
        SupportsStoppingCriteria,
        Checkpointable,
        TrialFaultAware,
        CanRegisterSuggestions,
    ):
        assert isinstance(a, protocol)


def test_points_follow_structure_and_each_says_why():
    """Structure only at x > 1 um: after the survey, most points go there."""
    a = agent(budget_points=60, survey_fraction=0.2)
    while not a.should_stop()[0]:
        feed(a, a.suggest(8), lambda y, x: 1e7 if x > 1e-6 else 0.0)
    history = a.history
    assert len(history) == 60
    after = [h for h in history if not h["reason"].startswith("survey")]
    right = sum(h["beam_x_m"] > 0.6e-6 for h in after)
    assert right > 0.6 * len(after)  # the right fifth of the region gets most points
    assert all(h["reason"] and "score" in h for h in history)
    assert any("structure" in h["reason"] for h in after)


def test_no_overlap_mode_keeps_points_apart_and_overlap_mode_keeps_them_connected():
    a = agent(budget_points=40, mode="no_overlap")
    feed(a, a.suggest(40), lambda y, x: 1.0)
    p = a.positions_m()
    d = np.hypot(*(p[:, None, :] - p[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 0.6 * BEAM * (1 - 1e-6)
    b = agent(budget_points=30, mode="overlap", min_overlap=0.3, max_overlap=0.7)
    while not b.should_stop()[0]:
        feed(b, b.suggest(4), lambda y, x: 1.0)
    q = b.positions_m()
    for i in range(1, len(q)):  # each point overlaps an earlier one by 0.3 .. 0.7
        nearest = np.min(np.hypot(*(q[:i] - q[i]).T))
        assert BEAM * 0.3 - 1e-12 <= nearest <= BEAM * 0.7 + 1e-12


def test_budgets_and_the_stopping_rule():
    a = agent(budget_points=100, photons_per_point=1e6, dose_budget_photons=5.5e6)
    assert len(a.suggest(64)) == 5
    feed(a, a.history or [s for s in a.pending.values()], lambda y, x: 0.0)
    stop, why = a.should_stop()
    assert stop and "dose budget" in why
    with pytest.raises(ValueError, match="at least 1 point"):
        agent(budget_points=0)
    with pytest.raises(ValueError, match="below one point"):
        agent(budget_points=5, photons_per_point=1e6, dose_budget_photons=1e5)
    # nothing worth measuring: a covered region stops the scan before the budget
    c = agent(budget_points=10_000, survey_fraction=0.0)
    while not c.should_stop()[0]:
        s = c.suggest(64)
        feed(c, s, lambda y, x: 0.0)
    assert len(c.history) < 10_000
    assert "no " in c.should_stop()[1]


def test_nan_outcomes_are_refused_before_anything_is_kept():
    a = agent(budget_points=4)
    s = a.suggest(2)
    with pytest.raises(ValueError, match="not a valid measurement"):
        a.ingest(
            [
                {"_id": s[0]["_id"], "structure_rad_per_m": 1.0},
                {"_id": s[1]["_id"], "structure_rad_per_m": float("nan")},
            ]
        )
    assert not a.measured and len(a.pending) == 2
    a.register_failures(s)
    assert a.failed == [s[0]["_id"], s[1]["_id"]] and not a.pending


def test_checkpoint_and_restore(tmp_path):
    a = agent(
        budget_points=20,
    )
    a.checkpoint_path = tmp_path / "agent.json"
    feed(a, a.suggest(6), lambda y, x: abs(x) * 1e13)
    pending = a.suggest(2)
    a.checkpoint()
    b = MosaicAgent.restore(tmp_path / "agent.json")
    assert [h["_id"] for h in b.history] == [h["_id"] for h in a.history]
    assert set(b.pending) == {p["_id"] for p in pending}
    assert b.suggest(1)[0]["_id"] == a.suggest(1)[0]["_id"]


def test_the_mosaic_and_its_uncertainty_steer_the_agent_when_present():
    """A mosaic with structure on the left and, separately, high uncertainty on the right."""
    px = 20e-9
    n = int(4.4e-6 / px)
    phase = np.zeros((n, n), np.float32)
    yy, xx = np.indices((n, n))
    x_m = -2.2e-6 + xx * px
    y_m = -2.2e-6 + yy * px
    measured = np.hypot(y_m, x_m + 1.2e-6) < 0.5e-6  # a measured disc on the left
    phase[measured] = np.sin(xx[measured] / 2.0)
    weights = measured.astype(np.float32)
    snap = MosaicSnapshot(phase, np.ones_like(phase), weights, px, (-2.2e-6, -2.2e-6), 1)
    a = agent(budget_points=50, survey_fraction=0.0, weight_explore=0.05)
    a.observe_mosaic(snap)
    first = a.suggest(1)[0]
    assert first["beam_x_m"] < -0.4e-6 and "structure" in first["reason"]
    # the same mosaic as a mapping with an uncertainty map (issue 15's optional field)
    measured2 = np.hypot(y_m, x_m - 1.2e-6) < 0.5e-6
    flat = {
        "phase": np.zeros_like(phase),
        "weights": (measured | measured2).astype(np.float32),
        "pixel_size_m": px,
        "origin_m": (-2.2e-6, -2.2e-6),
        "phase_uncertainty": np.where(measured2, 1.0, 0.01),
    }
    b = agent(budget_points=50, survey_fraction=0.0, weight_explore=0.05)
    b.observe_mosaic(flat)
    first = b.suggest(1)[0]
    assert first["beam_x_m"] > 0.4e-6 and "uncertain" in first["reason"]
    flat["phase"] = np.where(measured, np.nan, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        b.observe_mosaic(flat)


def test_patch_structure_is_larger_for_edges_than_for_flat_phase():
    flat = np.full((32, 32), 0.3)
    edge = flat.copy()
    edge[:, 16:] += 1.0
    assert patch_structure(flat, 10e-9) == 0.0
    assert patch_structure(edge, 10e-9) > 1e6
    wrapped = np.full((32, 32), math.pi - 0.01)
    wrapped[:, 16:] = -math.pi + 0.01  # a 2 pi wrap is not an edge
    assert patch_structure(wrapped, 10e-9) < 0.05 * patch_structure(edge, 10e-9)


def test_suggest_of_64_points_is_timed():
    import time

    a = MosaicAgent(
        AgentOptions(
            region_m=(-6e-6, 6e-6, -6e-6, 6e-6),
            beam_size_m=0.36e-6,
            budget_points=4096,
            survey_fraction=0.02,
        )
    )
    feed(a, a.suggest(82), lambda y, x: abs(np.sin(x * 1e6)) * 1e7)
    t0 = time.perf_counter()
    assert len(a.suggest(64)) == 64
    print(f"suggest(64): {(time.perf_counter() - t0) * 1e3:.0f} ms")  # measured, not asserted


def test_the_incremental_unmeasured_update_equals_the_full_recompute():
    from bluesky_ptychonn.adaptive import scoring
    from bluesky_ptychonn.adaptive.maps import RegionMap

    m = RegionMap(REGION, 0.1e-6, 0.6e-6)
    unmeasured = scoring.unmeasured_fraction(m.covered, m.footprint)
    rng = np.random.default_rng(1)
    for y, x in rng.uniform(-2e-6, 2e-6, (30, 2)):
        m.mark(y, x)
        scoring.update_unmeasured(unmeasured, m.covered, m.footprint, *m.grid.to_cell(y, x))
    np.testing.assert_allclose(unmeasured, scoring.unmeasured_fraction(m.covered, m.footprint))
    assert 0 < unmeasured.mean() < 1


def test_a_live_mosaic_read_back_from_tiled_feeds_the_agent():
    """`storage.tiled_results.read_live_mosaic` gives a `LiveMosaic` (another process's
    mosaic): the agent takes it as it takes a stitcher's snapshot."""
    from bluesky_ptychonn.storage.tiled_results import LiveMosaic

    px, n = 20e-9, 200
    phase = np.zeros((n, n), np.float32)
    phase[:, 100:] = np.sin(np.arange(100) / 2.0)[None, :]
    weights = np.zeros((n, n), np.float32)
    weights[:, 100:] = 1.0  # the right half measured, with structure
    mosaic = LiveMosaic(phase, np.ones_like(phase), weights, px, (-2e-6, -2e-6), {})
    a = agent(budget_points=20, survey_fraction=0.0, weight_explore=0.05)
    a.observe_mosaic(mosaic)
    assert a.map.structure_weight[:, a.map.grid.shape[1] // 2 + 2 :].min() > 0
    assert a.map.structure_weight[:, : a.map.grid.shape[1] // 2 - 2].max() == 0
