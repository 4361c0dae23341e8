"""Where the loop's heavy steps run: in this process, or on a Dask cluster (local, Slurm, PBS).

An executor has one method, ``run(name, fn, *args, **kwargs)``, which returns ``fn``'s result
or raises. `DaskExecutor` opens its cluster (`cluster.open_cluster`) on first use, so building
one never blocks and a scheduler that is down is reported when a scan needs it
(`cluster.ClusterUnavailable`, a ``ConnectionError``: the dispatcher keeps the scan queued).
Worker deaths are handled by the scheduler (the task is rerun on another worker); a step that
raises is rerun ``retries`` times (default 0: ePIE that diverged diverges again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def worker_threads() -> int | None:
    """The Dask worker's thread count when running on one (its ``threads_per_worker``), else None.

    Torch's own default, one thread per core, stalls in spin-waits when the cores are busy
    (measured: 0.5 instead of 52 batches/s with an endpoint on the other core), so a step takes
    what the cluster gave its worker.
    """
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


class Executor:
    """Runs one step: ``run(name, fn, *args, **kwargs) -> fn(*args, **kwargs)``."""

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": type(self).__name__}

    def close(self) -> None:
        """Release what the executor holds (idempotent)."""


class InlineExecutor(Executor):
    """Runs each step in this process (tests, small replays, no cluster)."""

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def describe(self) -> dict[str, Any]:
        return {"kind": "inline"}


class DaskExecutor(Executor):
    """Runs each step as one task on a Dask cluster described by a `cluster.ClusterConfig`.

    Args:
        config: the cluster (a `ClusterConfig` or its mapping).
        retries: reruns of a step that raised.
        timeout_s: longest wait for one step (None: as long as it takes).
    """

    def __init__(self, config: Any, *, retries: int = 0, timeout_s: float | None = None):
        from .cluster import ClusterConfig

        self.config = (
            config
            if isinstance(config, ClusterConfig)
            else ClusterConfig.from_mapping(dict(config))
        )
        self.retries = int(retries)
        self.timeout_s = timeout_s
        self._handle = None
        self._lock = threading.Lock()

    @property
    def handle(self) -> Any:
        """The open cluster (opened on first use; raises `ClusterUnavailable`)."""
        with self._lock:
            if self._handle is None:
                from .cluster import open_cluster

                self._handle = open_cluster(self.config)
            return self._handle

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from .cluster import run_step

        return run_step(
            self.handle, fn, *args, retries=self.retries, timeout_s=self.timeout_s, **kwargs
        )

    def describe(self) -> dict[str, Any]:
        if self._handle is None:
            return {"kind": self.config.kind, "open": False}
        return {**self._handle.describe(), "open": True}

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
