"""A model pushed by the continual-learning loop during a run shows in that run's events."""

from __future__ import annotations

import threading

from bluesky_ptychonn.plans import spiral_scan
from bluesky_ptychonn.retrain.options import PromoteOptions
from bluesky_ptychonn.retrain.promote import push
from bluesky_ptychonn.session import Session


def test_a_model_pushed_mid_run_is_visible_in_the_events(session_file, tiny_model, tmp_path):
    tiny_model(tmp_path / "promoted", version="promoted", input_px=32, frame_px=128, reduce="bin")
    versions: list[str] = []
    pushed: dict[str, object] = {}

    def watch(name, doc):
        if name != "event":
            return
        versions.append(doc["data"]["endpoint_result_model_version"])
        if doc["seq_num"] == 8:  # mid-run, as a promotion would arrive
            threading.Thread(
                target=lambda: pushed.setdefault(
                    "reply", push(control, tmp_path / "promoted", PromoteOptions())
                )
            ).start()

    with Session.from_config(session_file) as session:
        control = session.endpoint.control_address
        session.RE.subscribe(watch)
        plan = spiral_scan(
            [session.detector, session.endpoint], session.stage, 0.5e-6, step_m=0.6e-7
        )
        (uid,) = session.RE(plan)
        assert session.wait(timeout_s=120)
        assert pushed["reply"]["ok"], pushed
        seen = [v for v in versions if v]
        assert seen[0] == "tiny" and seen[-1] == "promoted", versions
        switch = seen.index("promoted")
        assert set(seen[switch:]) == {"promoted"}  # one switch, never back
        data = session.catalog.raw[uid]["primary"]["endpoint_result_model_version"].read()
        assert "promoted" in set(data) and "tiny" in set(data)
