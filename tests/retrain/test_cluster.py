"""The execution layer of continual learning, against real clusters: local, address, Slurm, PBS."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import time
import tomllib
from pathlib import Path

import pytest

from bluesky_ptychonn.retrain.cluster import (
    ClusterConfig,
    ClusterUnavailable,
    StepFailed,
    StepTimeout,
    job_script,
    open_cluster,
    run_step,
)


def worker_facts(x: int) -> dict:
    """A step that reports where it ran: process id, priority and Slurm job."""
    return {
        "square": x * x,
        "pid": os.getpid(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def square_after_first_attempt(x: int, marks: str) -> int:
    """Record this attempt's pid in ``marks``; the first attempt waits (to be killed)."""
    folder = Path(marks)
    first = not any(folder.iterdir())
    (folder / str(os.getpid())).touch()
    if first:
        time.sleep(60)
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def count_attempts(marks: str) -> None:
    Path(marks, f"{time.monotonic_ns()}").touch()
    raise ValueError("always fails")


def assert_no_jobs_left(slurm, message: str, timeout_s: float = 15) -> None:
    """Slurm lists no job within `timeout_s` seconds (cancelled jobs leave the queue)."""
    deadline = time.monotonic() + timeout_s
    while slurm.job_ids():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


@pytest.fixture(scope="module")
def local():
    """A real LocalCluster: one worker process of one thread, nice 10."""
    with open_cluster(ClusterConfig(kind="local", n_workers=1, nice=10)) as handle:
        yield handle


# --- configuration ---------------------------------------------------------------------------


def test_config_round_trips_through_toml():
    text = """
kind = "slurm"
jobs = 2
connect_timeout_s = 5.0
[jobqueue]
cores = 8
memory = "32GiB"
queue = "gpu"
job_extra_directives = ["--gres=gpu:1"]
"""
    config = ClusterConfig.from_mapping(tomllib.loads(text))
    assert config.kind == "slurm" and config.jobs == 2
    assert config.jobqueue["job_extra_directives"] == ["--gres=gpu:1"]
    assert ClusterConfig.from_mapping(config.to_dict()) == config
    assert ClusterConfig().nice == 10 and ClusterConfig().n_workers == 1


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"kind": "kubernetes"}, "kind must be one of"),
        ({"kind": "address"}, "needs address = 'tcp://host:port'"),
        ({"kind": "address", "address": "localhost:8786"}, "needs address"),
        ({"kind": "local", "address": "tcp://127.0.0.1:8786"}, "address is used only with"),
        ({"kind": "local", "jobqueue": {"cores": 2}}, "jobqueue is used only with"),
        ({"kind": "slurm", "n_workers": 4}, "n_workers is used only with kind='local'"),
        ({"kind": "slurm", "jobqueue": {"n_workers": 4}}, "number of batch jobs is `jobs`"),
        ({"n_workers": 0}, "n_workers must be an integer >= 1"),
        ({"nice": 25}, "nice must be an integer from 0 to 19"),
        ({"memory_limit": "lots"}, "memory_limit must be"),
        ({"connect_timeout_s": 0}, "connect_timeout_s must be a number of seconds > 0"),
        ({"workers": 2}, "unknown cluster configuration key(s) 'workers'"),
    ],
)
def test_config_rejects_what_it_cannot_use(mapping, message):
    with pytest.raises(ValueError, match=None) as error:
        ClusterConfig.from_mapping(mapping)
    assert message in str(error.value)


# --- local ------------------------------------------------------------------------------------


def test_local_step_runs_in_a_worker_process_at_lower_priority(local):
    facts = run_step(local, worker_facts, 7)
    assert facts["square"] == 49
    assert facts["pid"] != os.getpid()
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
    assert facts["nice"] == expected
    description = local.describe()
    assert description["kind"] == "local" and description["workers"] == 1
    assert description["scheduler"].startswith("tcp://127.0.0.1:")


def test_local_step_rerun_after_its_worker_is_killed(local, tmp_path):
    marks = tmp_path / "attempts"
    marks.mkdir()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(run_step, local, square_after_first_attempt, 9, str(marks))
        deadline = time.monotonic() + 30
        while not any(marks.iterdir()):
            assert time.monotonic() < deadline, "the step never started"
            assert not result.done(), result.result()
            time.sleep(0.05)
        first_pid = int(next(marks.iterdir()).name)
        os.kill(first_pid, signal.SIGKILL)
        assert result.result(timeout=45) == 81
    pids = {int(path.name) for path in marks.iterdir()}
    assert len(pids) == 2 and first_pid in pids, "the step ran once more, on a new worker"
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    facts = run_step(local, worker_facts, 2)
    assert facts["pid"] in pids - {first_pid}
    assert facts["nice"] == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10), "restarted: niced"


def test_step_whose_workers_keep_dying_is_lost_with_a_clear_error(tmp_path):
    import dask

    marks = tmp_path / "attempts"
    marks.mkdir()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        handle = open_cluster(ClusterConfig(kind="local"))
    with handle, concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(run_step, handle, square_after_first_attempt, 3, str(marks))
        deadline = time.monotonic() + 30
        while not any(marks.iterdir()):
            assert time.monotonic() < deadline and not result.done(), "the step never started"
            time.sleep(0.05)
        os.kill(int(next(marks.iterdir()).name), signal.SIGKILL)
        with pytest.raises(StepFailed, match=r"square_after_first_attempt was lost.*= 0"):
            result.result(timeout=30)


def test_failed_step_names_the_step_and_keeps_the_cause(local):
    with pytest.raises(
        StepFailed, match=r"step test_cluster\.fail failed.*ValueError: no labels"
    ) as error:
        run_step(local, fail, "no labels", retries=0)
    assert error.value.step == "test_cluster.fail"
    assert isinstance(error.value.__cause__, ValueError)


def test_failed_step_is_retried(local, tmp_path):
    with pytest.raises(StepFailed, match="after 3 attempt"):
        run_step(local, count_attempts, str(tmp_path), retries=2)
    assert len(list(tmp_path.iterdir())) == 3


def test_step_timeout_names_the_step(local):
    started = time.monotonic()
    with pytest.raises(StepTimeout, match=r"step time\.sleep did not finish within 0\.5 s"):
        run_step(local, time.sleep, 2, timeout_s=0.5)
    assert time.monotonic() - started < 2.5


# --- address ----------------------------------------------------------------------------------


def test_address_where_nothing_listens_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(
        ClusterUnavailable, match=f"^no Dask scheduler answered at {address} within 2 s$"
    ):
        open_cluster(ClusterConfig(kind="address", address=address, connect_timeout_s=2))
    assert time.monotonic() - started < 2 + 3
    assert issubclass(ClusterUnavailable, ConnectionError)


def test_address_connects_to_a_running_scheduler(local):
    address = local.client.scheduler.address
    with open_cluster(ClusterConfig(kind="address", address=address)) as handle:
        assert handle.kind == "address" and handle.describe()["nice"] is None
        assert run_step(handle, worker_facts, 3)["square"] == 9
    assert run_step(local, worker_facts, 4)["square"] == 16, "closing it left the cluster up"


# --- Slurm and PBS ----------------------------------------------------------------------------


def test_slurm_step_runs_inside_a_slurm_job(slurm):
    # The workers import the steps of this test module, as they would a beamline's package.
    prologue = [f"export PYTHONPATH={Path(__file__).parent}"]
    config = ClusterConfig(
        kind="slurm",
        jobs=1,
        jobqueue=slurm.jobqueue(job_script_prologue=prologue),
        nice=5,
        workers_timeout_s=60,
    )
    with open_cluster(config) as handle:
        jobs = handle.describe()["jobs"]
        assert len(jobs) == 1 and jobs[0] in slurm.job_ids()
        facts = run_step(handle, worker_facts, 5, timeout_s=30)
    assert facts["square"] == 25
    assert facts["slurm_job_id"] == jobs[0]
    assert facts["nice"] == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    assert_no_jobs_left(slurm, "closing the handle did not cancel the Slurm job")


def test_slurm_workers_that_never_join_are_a_clear_error(slurm):
    # A partition that does not exist: sbatch refuses, no worker ever joins.
    config = ClusterConfig(
        kind="slurm", jobqueue=slurm.jobqueue(queue="nowhere"), workers_timeout_s=30
    )
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="will not join: 1 job.* refused by 'sbatch'"):
        open_cluster(config)
    assert time.monotonic() - started < 10, "a refused job is an error at once, not a timeout"
    assert_no_jobs_left(slurm, "a refused job is not in the queue")


def test_slurm_job_left_pending_times_out_and_is_cancelled(slurm):
    config = ClusterConfig(
        kind="slurm",
        jobqueue=slurm.jobqueue(job_extra_directives=["--begin=now+1hour"]),
        workers_timeout_s=2,
    )
    with pytest.raises(ClusterUnavailable, match="1 slurm job.* did not join within 2 s"):
        open_cluster(config)
    assert_no_jobs_left(slurm, "the pending job was not cancelled")


def test_pbs_job_script_carries_the_configured_settings():
    import dask

    config = ClusterConfig(
        kind="pbs",
        jobs=2,
        jobqueue={
            "cores": 4,
            "memory": "16GiB",
            "queue": "prod",
            "account": "ptycho-ops",
            "job_extra_directives": ["-l filesystems=home:eagle"],
            "worker_extra_args": ["--lifetime", "55m"],
            "scheduler_options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        },
    )
    with dask.config.set({"jobqueue.pbs.walltime": "00:45:00"}):
        script = job_script(config)
    assert "#PBS -q prod" in script
    assert "#PBS -A ptycho-ops" in script
    assert "#PBS -l select=1:ncpus=4:mem=" in script
    assert "#PBS -l walltime=00:45:00" in script, "unset keys come from jobqueue.yaml"
    assert "#PBS -l filesystems=home:eagle" in script
    assert "--lifetime 55m" in script and "tcp://127.0.0.1:" in script


def test_pbs_without_qsub_is_unavailable(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    config = ClusterConfig(kind="pbs", jobqueue={"cores": 1, "memory": "1GiB"})
    with pytest.raises(ClusterUnavailable, match="'qsub', which is not on PATH"):
        open_cluster(config)


def test_every_toml_example_of_the_docs_section_is_a_valid_config():
    text = (Path(__file__).parents[2] / "docs" / "continual-learning.md").read_text()
    section = text.split("## Where the work runs", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    kinds = [ClusterConfig.from_mapping(tomllib.loads(block)["cluster"]).kind for block in blocks]
    assert kinds == ["local", "address", "slurm", "pbs"]
