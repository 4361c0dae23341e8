"""Where the heavy steps of continual learning run: a Dask cluster chosen by configuration.

`ClusterConfig` says which cluster (``local``: a `distributed.LocalCluster` of worker
processes on this host; ``address``: a Dask scheduler that is already running; ``slurm`` /
``pbs``: workers submitted as batch jobs by dask-jobqueue), `open_cluster` opens it and
`run_step` runs one step (ePIE of a run, a training) on it and waits for the result.

Workers this module starts (local, Slurm, PBS) run at a lower CPU priority (``nice``), so the
inference endpoint and the RunEngine on the same host keep their cores. A cluster reached by
address belongs to someone else: its workers are left as they are.

Only `distributed` is imported at module level; dask-jobqueue is imported when a Slurm or PBS
cluster is opened (importing it writes dask's ``jobqueue.yaml`` into the dask config folder).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import uuid4

import dask.config
from dask.utils import parse_bytes
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import KilledWorker

__all__ = [
    "KINDS",
    "ClusterConfig",
    "ClusterHandle",
    "ClusterUnavailable",
    "LowerPriority",
    "StepFailed",
    "StepTimeout",
    "job_script",
    "lower_process_priority",
    "open_cluster",
    "run_step",
    "step_name",
]

KINDS = ("local", "address", "slurm", "pbs")
"""The kinds of cluster `ClusterConfig.kind` may name."""

_JOBQUEUE_KINDS = ("slurm", "pbs")
_SUBMIT_COMMAND = {"slurm": "sbatch", "pbs": "qsub"}
_LOOPBACK = "127.0.0.1"
_MAX_NICE = 19
_POLL_S = 0.5  # seconds between checks while waiting for workers

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ClusterUnavailable(ConnectionError):
    """No usable cluster: no scheduler answers at an address, or no worker joined in time."""


class StepFailed(RuntimeError):
    """A step run on the cluster failed; ``step`` names it, ``__cause__`` is the Dask error."""

    def __init__(self, message: str, step: str) -> None:
        super().__init__(message)
        self.step = step


class StepTimeout(TimeoutError):
    """A step did not finish within ``timeout_s``; ``step`` names it (it was cancelled)."""

    def __init__(self, message: str, step: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class ClusterConfig:
    """Which Dask cluster the heavy steps of continual learning run on.

    Plain values only, so it round-trips through JSON and TOML (`from_mapping`, `to_dict`).

    Parameters
    ----------
    kind
        ``"local"`` (worker processes on this host), ``"address"`` (a running scheduler),
        ``"slurm"`` or ``"pbs"`` (workers submitted as batch jobs by dask-jobqueue).
    n_workers, threads_per_worker
        local: the number of worker processes and the threads in each.
    memory_limit
        local: memory per worker process, bytes or a string such as ``"4GiB"``; None lets dask
        choose (``"auto"``: the host's memory shared between the workers).
    nice
        How much lower than the starting process the workers' CPU priority is (added to the
        nice value, 0 to 19; 0 leaves it). Applied to the workers of local, slurm and pbs
        clusters; a cluster reached by ``address`` is not this process's to renice.
    address
        address: the scheduler, ``"tcp://host:port"`` (or ``tls://``).
    jobs
        slurm / pbs: the number of batch jobs to submit (each runs ``processes`` workers,
        one by default).
    jobqueue
        slurm / pbs: keyword arguments of ``dask_jobqueue.SLURMCluster`` / ``PBSCluster``
        (``cores``, ``memory``, ``queue``, ``account``, ``walltime``, ``processes``,
        ``job_extra_directives``, ``job_script_prologue``, ``scheduler_options``,
        ``worker_extra_args``, ``log_directory``, ...). Keys left out come from dask's
        ``jobqueue.yaml`` configuration (``jobqueue.slurm.*`` / ``jobqueue.pbs.*``), as
        dask-jobqueue does.
    connect_timeout_s
        Seconds to wait for a scheduler to answer (address) or for the client to connect.
    workers_timeout_s
        Seconds to wait for the requested workers to join when the cluster is opened
        (slurm / pbs: queue wait included).
    """

    kind: str = "local"
    n_workers: int = 1
    threads_per_worker: int = 1
    memory_limit: int | str | None = None
    nice: int = 10
    address: str | None = None
    jobs: int = 1
    jobqueue: dict[str, Any] = field(default_factory=dict)
    connect_timeout_s: float = 10.0
    workers_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        errors = self._errors()
        if errors:
            raise ValueError("invalid cluster configuration: " + "; ".join(errors))

    def _errors(self) -> list[str]:
        errors: list[str] = []
        if self.kind not in KINDS:
            return [f"kind must be one of {', '.join(map(repr, KINDS))}, not {self.kind!r}"]
        defaults = {f.name: _default(f) for f in dataclasses.fields(self)}

        def unused(name: str, used_by: str) -> None:
            if getattr(self, name) != defaults[name]:
                errors.append(f"{name} is used only with {used_by}, not with kind={self.kind!r}")

        for name in ("n_workers", "threads_per_worker"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                errors.append(f"{name} must be an integer >= 1, not {value!r}")
        if not _is_int(self.nice) or not 0 <= self.nice <= _MAX_NICE:
            errors.append(f"nice must be an integer from 0 to {_MAX_NICE}, not {self.nice!r}")
        if self.memory_limit is not None:
            try:
                if isinstance(self.memory_limit, bool):
                    raise TypeError
                if self.memory_limit != "auto" and parse_bytes(self.memory_limit) <= 0:
                    raise ValueError
            except (TypeError, ValueError):
                errors.append(
                    f"memory_limit must be a positive number of bytes or a size such as '4GiB', "
                    f"not {self.memory_limit!r}"
                )
        if not _is_int(self.jobs) or self.jobs < 1:
            errors.append(f"jobs must be an integer >= 1, not {self.jobs!r}")
        for name in ("connect_timeout_s", "workers_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                errors.append(f"{name} must be a number of seconds > 0, not {value!r}")
        if not isinstance(self.jobqueue, Mapping) or not all(
            isinstance(key, str) for key in self.jobqueue
        ):
            errors.append(
                f"jobqueue must be a table of dask-jobqueue arguments, not {self.jobqueue!r}"
            )
        elif "n_workers" in self.jobqueue:
            errors.append("jobqueue must not set n_workers: the number of batch jobs is `jobs`")

        if self.kind != "local":
            for name in ("n_workers", "threads_per_worker", "memory_limit"):
                unused(name, "kind='local'")
        if self.kind == "address":
            if not isinstance(self.address, str) or not _valid_address(self.address):
                errors.append(
                    f"kind='address' needs address = 'tcp://host:port' (or tls://), "
                    f"not {self.address!r}"
                )
        else:
            unused("address", "kind='address'")
        if self.kind not in _JOBQUEUE_KINDS:
            unused("jobs", "kind='slurm' or 'pbs'")
            unused("jobqueue", "kind='slurm' or 'pbs'")
        return errors

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ClusterConfig:
        """Build from a mapping (a parsed TOML table or JSON object); unknown keys are errors."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"a cluster configuration must be a table, not {mapping!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(
                f"unknown cluster configuration key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        values = dict(mapping)
        if isinstance(values.get("jobqueue"), Mapping):
            values["jobqueue"] = dict(values["jobqueue"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain values (None values left out, so it writes to TOML)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_address(address: str) -> bool:
    try:
        parts = urlsplit(address)
        return parts.scheme in ("tcp", "tls") and bool(parts.hostname) and parts.port is not None
    except ValueError:
        return False


# --- worker priority -------------------------------------------------------------------------

_nice_at_start: int | None = None


def lower_process_priority(increment: int) -> int:
    """Raise this process's nice value (lower its CPU priority) to its first value + increment.

    Idempotent: calling it again in the same process does not lower the priority further.
    On Linux the nice value belongs to each thread, so every thread of the process is
    reniced (threads started later inherit the value). Returns the new nice value.
    """
    global _nice_at_start
    if _nice_at_start is None:
        _nice_at_start = os.getpriority(os.PRIO_PROCESS, 0)
    target = min(_MAX_NICE, _nice_at_start + increment)
    tasks = "/proc/self/task"
    thread_ids = [int(tid) for tid in os.listdir(tasks)] if os.path.isdir(tasks) else [0]
    for tid in thread_ids:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, tid) < target:
                os.setpriority(os.PRIO_PROCESS, tid, target)
    return os.getpriority(os.PRIO_PROCESS, 0)


class LowerPriority(WorkerPlugin):
    """Worker plugin: each worker process lowers its CPU priority by ``nice`` when it starts.

    Registered with the scheduler, so workers that join later (a restarted local worker, a new
    batch job) get it too, before they run any task.
    """

    name = "bluesky-ptychonn-lower-priority"

    def __init__(self, nice: int) -> None:
        self.nice = nice

    def setup(self, worker: Any) -> None:
        lower_process_priority(self.nice)


# --- the cluster handle -----------------------------------------------------------------------


class ClusterHandle:
    """An open cluster: a connected `distributed.Client` and what started it.

    Use as a context manager (or call `close`): the client is closed and, for local, Slurm
    and PBS clusters, the workers are stopped (batch jobs cancelled). A scheduler reached by
    address is left running.
    """

    def __init__(self, config: ClusterConfig, client: Client, cluster: Any | None = None) -> None:
        self.config = config
        self.client = client
        self.cluster = cluster
        self._closed = False

    @property
    def kind(self) -> str:
        """``"local"``, ``"address"``, ``"slurm"`` or ``"pbs"``."""
        return self.config.kind

    @property
    def dashboard_link(self) -> str | None:
        """The scheduler's dashboard URL, or None when it serves none (bokeh not installed)."""
        try:
            link = self.client.dashboard_link
        except Exception:  # noqa: BLE001 - no dashboard service known to the client
            return None
        return link or None

    def describe(self) -> dict[str, Any]:
        """What the cluster is now: kind, scheduler address, dashboard, workers and threads."""
        info = self.client.scheduler_info(n_workers=-1)
        workers = info.get("workers", {})
        description: dict[str, Any] = {
            "kind": self.kind,
            "scheduler": self.client.scheduler.address,
            "dashboard": self.dashboard_link,
            "workers": len(workers),
            "threads": sum(w.get("nthreads", 0) for w in workers.values()),
            "nice": None if self.kind == "address" else self.config.nice,
            "allowed_failures": dask.config.get("distributed.scheduler.allowed-failures"),
        }
        if self.kind in _JOBQUEUE_KINDS and self.cluster is not None:
            description["jobs"] = sorted(
                str(job.job_id) for job in self.cluster.workers.values() if job.job_id
            )
        return description

    def close(self) -> None:
        """Close the client and stop what this handle started; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                _close_cluster(self.cluster)

    def __enter__(self) -> ClusterHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.client.scheduler.address
        return f"<ClusterHandle kind={self.kind!r} {state}>"


def open_cluster(config: ClusterConfig) -> ClusterHandle:
    """Open the cluster `config` names and connect a client; returns a `ClusterHandle`.

    local: a `LocalCluster` of ``n_workers`` processes on loopback (scheduler and dashboard
    bound to 127.0.0.1). address: a client connected within ``connect_timeout_s``. slurm /
    pbs: a dask-jobqueue cluster scaled to ``jobs`` batch jobs; returns once their workers
    have joined. Workers started here run ``nice`` lower (see `LowerPriority`).

    Raises
    ------
    ClusterUnavailable
        No scheduler answers at the address, the batch system's submit command is missing,
        or the workers did not join within ``workers_timeout_s``.
    """
    if config.kind == "address":
        return ClusterHandle(config, _connect(config.address, config.connect_timeout_s))
    if config.kind == "local":
        cluster = LocalCluster(
            n_workers=0,
            threads_per_worker=config.threads_per_worker,
            processes=True,
            memory_limit="auto" if config.memory_limit is None else config.memory_limit,
            host=_LOOPBACK,
            scheduler_port=0,
            dashboard_address=f"{_LOOPBACK}:0",
        )
        n_workers = config.n_workers
        what, hint = f"the {n_workers} local worker process(es)", ""
    else:
        cluster = _jobqueue_cluster(config)
        # dask-jobqueue's own count of worker processes per job (its `processes` argument)
        n_workers = config.jobs * cluster._dummy_job.worker_processes
        what = f"the {n_workers} worker(s) of {config.jobs} {config.kind} job(s)"
        hint = f" (still queued, or unable to reach the scheduler at {cluster.scheduler_address}?)"
    client: Client | None = None
    try:
        client = Client(cluster, timeout=config.connect_timeout_s)
        if config.nice:
            client.register_plugin(LowerPriority(config.nice))
        if config.kind == "local":
            cluster.scale(n_workers)
        else:
            cluster.scale(jobs=config.jobs)
        _wait_for_workers(client, cluster, n_workers, config.workers_timeout_s, what, hint)
    except BaseException:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        _close_cluster(cluster)
        raise
    return ClusterHandle(config, client, cluster)


def _wait_for_workers(
    client: Client, cluster: Any, n_workers: int, timeout_s: float, what: str, hint: str
) -> None:
    """Wait until `n_workers` have joined; fail at once when the batch system refused a job."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            client.wait_for_workers(n_workers, timeout=max(0.01, min(_POLL_S, remaining)))
            return
        except TimeoutError as error:
            refused = _refused(cluster)
            if refused:
                raise ClusterUnavailable(f"{what} will not join: {refused}") from error
            if time.monotonic() >= deadline:
                raise ClusterUnavailable(
                    f"{what} did not join within {timeout_s:g} s{hint}"
                ) from error


def _refused(cluster: Any) -> str:
    """For a jobqueue cluster: how many of its jobs the batch system refused, in words."""
    # SpecCluster lists a job in `workers` once its submission ended; no job id: refused.
    jobs = list(getattr(cluster, "workers", {}).values())
    refused = [job for job in jobs if hasattr(job, "job_id") and not job.job_id]
    if not refused:
        return ""
    command = getattr(refused[0], "submit_command", "the submit command")
    return f"{len(refused)} job(s) were refused by {command!r} (its error is in the log)"


def _close_cluster(cluster: Any) -> None:
    """Close a cluster; a job the batch system refused must not make closing fail."""
    try:
        cluster.close()
    except AssertionError as error:  # SpecCluster asserts every job it created was started
        logger.warning("closing %s: a worker job never started (%s)", cluster, error)


def _connect(address: str | None, timeout_s: float) -> Client:
    try:
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as error:
        raise ClusterUnavailable(
            f"no Dask scheduler answered at {address} within {timeout_s:g} s"
        ) from error


def _jobqueue_cluster(config: ClusterConfig) -> Any:
    """The dask-jobqueue cluster `config` describes, not yet scaled (no job submitted)."""
    command = _SUBMIT_COMMAND[config.kind]
    if shutil.which(command) is None:
        raise ClusterUnavailable(
            f"kind={config.kind!r} submits its workers with {command!r}, which is not on PATH "
            f"(is this a login node of the batch system?)"
        )
    import dask_jobqueue

    cls = dask_jobqueue.SLURMCluster if config.kind == "slurm" else dask_jobqueue.PBSCluster
    try:
        return cls(**config.jobqueue)
    except TypeError as error:
        raise ValueError(
            f"jobqueue has an argument {cls.__name__} does not take: {error}"
        ) from error


def job_script(config: ClusterConfig) -> str:
    """The batch script a slurm / pbs `config` would submit for each job (nothing is submitted).

    Builds the dask-jobqueue cluster (which starts its scheduler) and closes it again; the
    script names that scheduler's address, which changes from call to call.
    """
    if config.kind not in _JOBQUEUE_KINDS:
        raise ValueError(f"kind={config.kind!r} submits no batch jobs")
    import dask_jobqueue

    cls = dask_jobqueue.SLURMCluster if config.kind == "slurm" else dask_jobqueue.PBSCluster
    with cls(**config.jobqueue) as cluster:
        return cluster.job_script()


# --- running one step -------------------------------------------------------------------------


def step_name(fn: Callable[..., Any]) -> str:
    """A readable name for a step: ``module.qualname`` of the function (or of a partial's)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def run_step(
    handle: ClusterHandle,
    fn: Callable[..., T],
    *args: Any,
    retries: int = 2,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> T:
    """Run ``fn(*args, **kwargs)`` as one task on the cluster and return its result.

    The task is submitted with ``pure=False`` (run every time, never taken from a cache) under
    a key that starts with the step's name. A task that raises is run again up to ``retries``
    times. A worker that dies while running it (killed, out of memory, walltime) is not a
    retry: the scheduler reruns the task on another (or the restarted) worker, up to
    ``distributed.scheduler.allowed-failures`` worker deaths (dask's default: 3).

    Parameters
    ----------
    handle
        The open cluster (`open_cluster`).
    fn
        The step; it and its arguments are pickled to the worker, so ``fn`` must be importable
        there (a module-level function of an installed package).
    retries
        How many more times a task that raised is run.
    timeout_s
        Seconds to wait for the result; None waits as long as it takes. On timeout the task is
        cancelled (a Python thread cannot be interrupted: a running step finishes on its
        worker and its result is dropped).

    Raises
    ------
    StepFailed
        The step raised on every attempt (``__cause__`` is its exception), its workers died too
        often, or it was cancelled (the cluster closed).
    StepTimeout
        No result within ``timeout_s``.
    """
    name = step_name(fn)
    future = handle.client.submit(
        fn, *args, pure=False, retries=retries, key=f"{name}-{uuid4().hex}", **kwargs
    )
    try:
        return future.result(timeout=timeout_s)
    except KilledWorker as error:
        raise StepFailed(
            f"step {name} was lost: the workers running it died {error.allowed_failures + 1} "
            f"times (distributed.scheduler.allowed-failures = {error.allowed_failures}); "
            f"out of memory, or killed by the batch system's walltime?",
            name,
        ) from error
    except (asyncio.CancelledError, concurrent.futures.CancelledError) as error:
        raise StepFailed(
            f"step {name} was cancelled before it finished (the cluster closed?)", name
        ) from error
    except TimeoutError as error:
        if future.done():  # the step itself raised TimeoutError
            raise StepFailed(_failed_message(name, error, retries), name) from error
        future.cancel()
        raise StepTimeout(f"step {name} did not finish within {timeout_s:g} s", name) from error
    except Exception as error:
        raise StepFailed(_failed_message(name, error, retries), name) from error


def _failed_message(name: str, error: BaseException, retries: int) -> str:
    return f"step {name} failed after {retries + 1} attempt(s): {type(error).__name__}: {error}"
