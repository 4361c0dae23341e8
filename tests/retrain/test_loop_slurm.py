"""The loop's ePIE and training as Slurm jobs through dask-jobqueue, on a real one-node Slurm."""

from __future__ import annotations

from scans import small_scan
from test_loop import fast_options

from bluesky_ptychonn.retrain.executors import DaskExecutor
from bluesky_ptychonn.retrain.loop import ContinualLoop


def test_the_loop_runs_its_steps_as_slurm_jobs(slurm, tmp_path):
    scan = small_scan(tmp_path / "scan0.cxi", seed=0)
    executor = DaskExecutor(
        {
            "kind": "slurm",
            "jobs": 1,
            "jobqueue": slurm.jobqueue(memory="4GiB"),
            "workers_timeout_s": 60,
        }
    )
    loop = ContinualLoop(tmp_path / "state", fast_options(), executor=executor)
    try:
        record = loop.process_scan(scan, "scan0")
        described = executor.describe()
    finally:
        executor.close()
    assert record.decision == "train_from_scratch", record.error
    assert record.trained and record.promoted
    assert set(record.steps) >= {"labels", "train", "export"}
    assert described["kind"] == "slurm" and len(described["jobs"]) == 1
    assert (tmp_path / "state" / "models" / "g1" / "model.json").is_file()
