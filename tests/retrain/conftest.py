"""Real clusters for the continual-learning tests: a one-node Slurm started for the session.

``slurm`` starts munge, slurmctld and slurmd (foreground processes of this test session, in a
temporary folder, on free loopback-addressed ports, with their own munge socket) and yields a
`SlurmInstance`; ``SlurmInstance.jobqueue()`` gives dask-jobqueue arguments that work on it.
When Slurm is not installed the tests that use it are skipped, or fail when ``CI`` is set.

``dask_config_dir`` (autouse, session) points dask's config folder at a temporary one, so
importing dask-jobqueue does not write ``~/.config/dask/jobqueue.yaml``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SLURM_COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
PARTITION = "debug"


@pytest.fixture(scope="session", autouse=True)
def dask_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary dask config folder (``DASK_CONFIG`` and ``dask.config.PATH``)."""
    import dask.config

    folder = tmp_path_factory.mktemp("dask-config")
    previous_env, previous_path = os.environ.get("DASK_CONFIG"), dask.config.PATH
    os.environ["DASK_CONFIG"] = str(folder)
    dask.config.PATH = str(folder)
    yield folder
    dask.config.PATH = previous_path
    if previous_env is None:
        os.environ.pop("DASK_CONFIG", None)
    else:
        os.environ["DASK_CONFIG"] = previous_env


@dataclass
class SlurmInstance:
    """A running one-node Slurm: its config file, environment, partition and folder."""

    conf: Path
    folder: Path
    node: str
    partition: str = PARTITION
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *command: str) -> str:
        """Run a Slurm client command (``squeue``, ``scancel``...) against this instance."""
        result = subprocess.run(
            command, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=30
        )
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        return result.stdout

    def job_ids(self) -> list[str]:
        """The ids of the jobs Slurm still knows (pending, running or completing)."""
        return self.run("squeue", "--noheader", "--format=%i").split()

    def jobqueue(self, **overrides: Any) -> dict[str, Any]:
        """`ClusterConfig.jobqueue` arguments for this node: 1 core, 1 GiB, loopback only."""
        arguments: dict[str, Any] = {
            "cores": 1,
            "memory": "1GiB",
            "processes": 1,
            "queue": self.partition,
            "walltime": "00:10:00",
            "job_extra_directives": ["--oversubscribe"],
            "scheduler_options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
            "worker_extra_args": ["--host", "127.0.0.1"],
            "log_directory": str(self.folder / "logs"),
        }
        arguments.update(overrides)
        return arguments


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(
            f"{reason}; CI must run the Slurm tests (.ci/run installs Slurm)", pytrace=False
        )
    pytest.skip(f"{reason} (apt-get install -y slurm-wlm munge, as root)")


def _slurm_conf(folder: Path, node: str, ctld_port: int, slurmd_port: int, memory_mb: int) -> str:
    return f"""\
ClusterName=ptychonn-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(process: subprocess.Popen, pid_file: Path) -> None:
    """Stop a daemon by the pid in its pid file (else its own pid); kill it if it lingers."""
    pid = process.pid
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    if process.poll() is None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmInstance]:
    """A one-node Slurm (munged + slurmctld + slurmd) for the session; see `SlurmInstance`.

    Sets ``SLURM_CONF`` in this process's environment while it runs (dask-jobqueue calls
    ``sbatch`` / ``scancel`` with it); at the end cancels every job, waits for them to end and
    stops the daemons by their pid files.
    """
    missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
    if missing:
        _skip_or_fail(f"Slurm is not installed here ({', '.join(missing)} not found)")
    if os.geteuid() != 0:
        _skip_or_fail("the one-node Slurm of the tests runs its daemons as root")

    # Not under pytest's 0700 temporary root: munged (user munge) needs to reach its socket.
    folder = Path(tempfile.mkdtemp(prefix="ptychonn-slurm-"))
    os.chmod(folder, 0o711)
    munge_dir = folder / "munge"
    for name in ("state", "spool", "logs", "munge"):
        (folder / name).mkdir()
    shutil.chown(munge_dir, "munge", "munge")
    os.chmod(munge_dir, 0o711)
    node = socket.gethostname().split(".")[0]
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, node, _free_port(), _free_port(), memory_mb))
    instance = SlurmInstance(conf=conf, folder=folder, node=node, env={"SLURM_CONF": str(conf)})
    previous_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)

    daemons: list[tuple[subprocess.Popen, Path]] = []
    log = (folder / "daemons.out").open("w")

    def start(command: list[str], pid_file: Path, **options: Any) -> None:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **options)
        daemons.append((process, pid_file))

    try:
        start(
            [
                "munged", "--foreground", f"--socket={munge_dir}/munge.socket",
                f"--pid-file={munge_dir}/munged.pid", f"--seed-file={munge_dir}/munged.seed",
                f"--log-file={munge_dir}/munged.log",
            ],
            munge_dir / "munged.pid",
            user="munge",
            group="munge",
            extra_groups=[],
        )  # fmt: skip
        _wait_for(lambda: (munge_dir / "munge.socket").exists(), "munged's socket", folder)
        start(["slurmctld", "-D", "-f", str(conf)], folder / "slurmctld.pid")
        start(["slurmd", "-D", "-f", str(conf)], folder / "slurmd.pid")
        _wait_for(lambda: _node_state(instance) == "idle", f"node {node} idle in sinfo", folder)
        yield instance
    finally:
        try:
            if daemons and all(process.poll() is None for process, _ in daemons[:2]):
                _cancel_jobs(instance)
        finally:
            for process, pid_file in reversed(daemons):
                _stop(process, pid_file)
            log.close()
            if previous_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = previous_conf
            shutil.rmtree(folder, ignore_errors=True)


def _node_state(instance: SlurmInstance) -> str:
    try:
        return instance.run("sinfo", "--noheader", "--format=%T", "--nodes", instance.node).strip()
    except RuntimeError:
        return ""


def _cancel_jobs(instance: SlurmInstance) -> None:
    """Cancel every job and wait (bounded) until Slurm has none left."""
    if instance.job_ids():
        instance.run("scancel", "--partition", instance.partition)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while instance.job_ids() and time.monotonic() < deadline:
        time.sleep(0.2)


def _wait_for(condition: Any, what: str, folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
                for path in sorted(folder.rglob("*.log")) + [folder / "daemons.out"]
                if path.is_file()
            )
            pytest.fail(
                f"the test Slurm did not start: no {what} within {START_TIMEOUT_S:g} s\n{logs}"
            )
        time.sleep(0.1)
