"""`SpooledTiledWriter`: bluesky-tiled-plugins' TiledWriter behind an on-disk spool.

Subscribe it to the RunEngine instead of a bare ``TiledWriter``::

    writer = SpooledTiledWriter("http://127.0.0.1:8000", api_key=key, spool_dir="spool")
    RE.subscribe(writer)

What happens to a document:

1. The RunEngine thread appends it to the run's file in the spool
   (`storage.spool.SpoolDirectory`) and returns: a call costs a JSON encoding and one
   ``write``; the RunEngine never waits for Tiled.
2. A delivery thread reads the documents back in order and hands them to a ``TiledWriter``
   (one per run, ``batch_size`` events per table append) on ``catalog.raw``.
3. When a delivery fails (the server is stopped, the network is down, a request times out),
   the run's ``TiledWriter`` may have written part of what it holds; retrying the same
   document could duplicate or lose rows. So the thread waits until the server answers again
   (backoff from ``retry_initial_s`` to ``retry_max_s``), deletes the half-written run node,
   and replays the run from its spool file into a fresh ``TiledWriter``. The result in Tiled
   is the run as the RunEngine emitted it, once.
4. At the stop document the run file is deleted (or kept, ``keep_delivered=True``).

Result writes (`storage.tiled_catalog.NodeWrite`: live mosaics, ePIE results, training pairs,
model versions) travel through the same spool with `submit`; they are idempotent, so they are
simply retried. A write superseded by a later write of the same node with the same arrays
(live-mosaic snapshots during an outage) is skipped and counted.

A spool left by a session that crashed is replayed when the next writer starts on the same
folder: whole runs (a run without a stop document gets one, ``exit_status="abort"`` and a
reason saying so, so that Tiled flushes its rows and readers see it is incomplete) and
pending writes.

If the server keeps refusing an item while it is reachable (``max_attempts`` times: a
document that Tiled rejects, say), the item moves to the spool's ``failed/`` folder and an
error is logged; it is never deleted. A wrong API key is retried forever (the spool keeps
everything) and reported in ``stats.last_error``.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..storage.spool import SpoolDirectory, decode_document
from ..storage.tiled_catalog import NodeWrite, TiledCatalog, connect, is_loopback_uri

__all__ = ["SpoolStats", "SpooledTiledWriter"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 50


@dataclass
class SpoolStats:
    """Counters of a `SpooledTiledWriter` (a snapshot; see `SpooledTiledWriter.stats`).

    Attributes:
        docs_spooled: documents the RunEngine handed over in this session.
        docs_delivered: of those, documents delivered to Tiled.
        docs_recovered: documents replayed from a previous session's spool.
        runs_completed: runs whose stop document was delivered (recovered ones included).
        runs_replayed: times a half-written run was deleted and written again.
        writes_spooled, writes_delivered, writes_superseded: result writes submitted,
            delivered, skipped because a later write of the same node replaced them.
        writes_recovered: result writes left by a previous session and delivered.
        failures: delivery attempts that raised.
        items_failed: runs and writes moved to ``failed/``.
        pending: items waiting for delivery.
        connected: whether the last delivery attempt reached the server.
        last_error: the last delivery error, as text.
    """

    docs_spooled: int = 0
    docs_delivered: int = 0
    docs_recovered: int = 0
    runs_completed: int = 0
    runs_replayed: int = 0
    writes_spooled: int = 0
    writes_delivered: int = 0
    writes_superseded: int = 0
    writes_recovered: int = 0
    failures: int = 0
    items_failed: int = 0
    pending: int = 0
    connected: bool = False
    last_error: str = ""


class _RunState:
    def __init__(self, uid: str, path: Path):
        self.uid = uid
        self.path = path
        self.reader = None  # binary handle reading the run file in step with delivery
        self.writer = None  # the run's TiledWriter
        self.delivered = 0  # documents of the file delivered to the current writer
        self.dirty = False  # the current writer failed: replay before going on
        self.failed = False  # moved to failed/: skip its documents


class _Closing(Exception):
    """The writer is closing: leave the item in the spool."""


class SpooledTiledWriter:
    """A document callback that writes runs to Tiled through an on-disk spool.

    Args:
        target: a server URI (``http://host:port`` or a container URI) or a `TiledCatalog`.
        api_key: the key (default ``$TILED_API_KEY``); ignored when ``target`` is a catalog.
        spool_dir: the spool folder (one session at a time).
        batch_size: events per table append of ``TiledWriter`` (smaller: live readers see
            frames sooner; larger: fewer requests).
        writer_kwargs: more ``TiledWriter`` arguments (``spec_to_mimetype``, ``patches``...).
        retry_initial_s, retry_max_s: backoff between attempts while the server is away.
        max_attempts: attempts at one item while the server is reachable before the item
            goes to ``failed/``.
        keep_delivered: keep delivered files in the spool's ``delivered/``.
        start: start the delivery thread now (False: call `start` later).
    """

    def __init__(
        self,
        target: str | TiledCatalog,
        *,
        api_key: str | None = None,
        spool_dir: str | Path,
        batch_size: int = DEFAULT_BATCH_SIZE,
        writer_kwargs: dict[str, Any] | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        max_attempts: int = 8,
        keep_delivered: bool = False,
        start: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._catalog = target if isinstance(target, TiledCatalog) else None
        self._uri = target.uri if isinstance(target, TiledCatalog) else str(target)
        self._api_key = api_key
        self.spool = SpoolDirectory(spool_dir, keep_delivered=keep_delivered)
        self.batch_size = int(batch_size)
        self.writer_kwargs = dict(writer_kwargs or {})
        self.retry_initial_s = float(retry_initial_s)
        self.retry_max_s = float(retry_max_s)
        self.max_attempts = int(max_attempts)

        self._stats = SpoolStats()
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._run_of: dict[str, str] = {}  # descriptor / resource uid -> run uid
        self._open_runs: list[str] = []
        self._runs: dict[str, _RunState] = {}
        self._pending_targets: dict[tuple[str, str], collections.deque] = {}
        self._targets_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._recover()
        if start:
            self.start()

    # ---- the RunEngine side ---------------------------------------------------------------
    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        uid = self._route(name, doc)
        if uid is None:
            log.warning("a %s document belongs to no open run; it is not spooled", name)
            return
        path = self.spool.append(uid, name, doc)
        if name == "start":
            self._enqueue(("start", uid, path))
        self._enqueue(("doc", uid, name))
        with self._stats_lock:
            self._stats.docs_spooled += 1

    def _route(self, name: str, doc: dict[str, Any]) -> str | None:
        if name == "start":
            self._open_runs.append(doc["uid"])
            return doc["uid"]
        if name == "stop":
            uid = doc["run_start"]
            if uid in self._open_runs:
                self._open_runs.remove(uid)
            for key in [k for k, run in self._run_of.items() if run == uid]:
                del self._run_of[key]
            return uid
        if name == "descriptor":
            self._run_of[doc["uid"]] = doc["run_start"]
            return doc["run_start"]
        if name in ("event", "event_page", "stream_datum"):
            return self._run_of.get(doc["descriptor"], self._current_run())
        if name in ("resource", "stream_resource"):
            uid = doc.get("run_start") or self._current_run()
            if uid is not None:
                self._run_of[doc["uid"]] = uid
            return uid
        if name == "datum":
            return self._run_of.get(doc["resource"], self._current_run())
        if name == "datum_page":
            return self._run_of.get(doc["resource"], self._current_run())
        return self._current_run()

    def _current_run(self) -> str | None:
        return self._open_runs[-1] if self._open_runs else None

    def submit(self, write: NodeWrite) -> None:
        """Spool a result write; it reaches Tiled when the server is there."""
        folder = self.spool.put_write(write)
        with self._targets_lock:
            target = (write.parent, write.key)
            self._pending_targets.setdefault(target, collections.deque()).append(
                frozenset(write.arrays)
            )
        self._enqueue(("write", folder, False))
        with self._stats_lock:
            self._stats.writes_spooled += 1

    def _enqueue(self, item: tuple) -> None:
        with self._idle:
            self._in_flight += 1
        self._queue.put(item)

    # ---- status ---------------------------------------------------------------------------
    @property
    def stats(self) -> SpoolStats:
        with self._stats_lock:
            snapshot = SpoolStats(**asdict(self._stats))
        snapshot.pending = self._in_flight
        return snapshot

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything spooled so far is delivered; False if ``timeout_s`` passed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining if remaining is not None else 1.0)
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._deliver_forever, name="SpooledTiledWriter", daemon=True
            )
            self._thread.start()

    def close(self, timeout_s: float | None = 30.0, *, join_timeout_s: float = 10.0) -> bool:
        """Deliver what is pending (up to ``timeout_s``), stop the thread, release the spool.

        Returns whether everything was delivered; what was not stays in the spool and is
        replayed by the next writer on the same folder. If the delivery thread does not stop
        within ``join_timeout_s`` (stuck in a request), the spool stays locked until this
        process exits, so that no two sessions deliver the same files.
        """
        delivered = self.flush(timeout_s) if self._thread is not None else False
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=join_timeout_s)
            if self._thread.is_alive():
                log.warning(
                    "the delivery thread is still in a request to %s; the spool %s stays "
                    "locked until this process exits",
                    self._uri,
                    self.spool.path,
                )
                return delivered
        for state in self._runs.values():
            if state.reader is not None:
                state.reader.close()
        self.spool.close()
        return delivered

    def __enter__(self) -> SpooledTiledWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- recovery of a previous session ---------------------------------------------------
    def _recover(self) -> None:
        items = [
            (run.path.name, ("recover_run", run.uid, run.path)) for run in self.spool.pending_runs()
        ]
        for folder in self.spool.pending_writes():
            items.append((folder.name, ("write", folder, True)))
            parent, key, arrays = SpoolDirectory.write_target(folder)
            with self._targets_lock:
                self._pending_targets.setdefault((parent, key), collections.deque()).append(arrays)
        for _, item in sorted(items, key=lambda pair: pair[0]):
            self._enqueue(item)
        if items:
            log.info("replaying %d items left in the spool %s", len(items), self.spool.path)

    # ---- the delivery thread --------------------------------------------------------------
    def _deliver_forever(self) -> None:
        while not self._closing.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                kind = item[0]
                if kind == "start":
                    self._runs[item[1]] = _RunState(item[1], item[2])
                elif kind == "doc":
                    self._deliver_doc(self._runs[item[1]], item[2])
                elif kind == "write":
                    self._deliver_write(item[1], recovered=item[2])
                elif kind == "recover_run":
                    self._recover_run(item[1], item[2])
            except _Closing:
                return
            except Exception:  # a bug here must not stop delivery of everything else
                log.exception("SpooledTiledWriter could not handle %r", item[:2])
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()

    def _catalog_or_connect(self) -> TiledCatalog:
        if self._catalog is None:
            self._catalog = connect(self._uri, api_key=self._api_key)
        return self._catalog

    def _attempt(self, what: str, action, path: Path | None = None) -> bool:
        """Run ``action(catalog)`` until it succeeds; False if the item went to failed/."""
        delay = self.retry_initial_s
        refusals = 0
        while True:
            if self._closing.is_set():
                raise _Closing
            try:
                action(self._catalog_or_connect())
                with self._stats_lock:
                    self._stats.connected = True
                return True
            except Exception as error:
                reachable = self._reachable()
                with self._stats_lock:
                    self._stats.failures += 1
                    self._stats.connected = reachable
                    self._stats.last_error = f"{what}: {type(error).__name__}: {error}"
                if reachable and not _is_auth_error(error):
                    refusals += 1
                    if refusals >= self.max_attempts and path is not None:
                        failed = self.spool.fail(path)
                        log.error(
                            "Tiled at %s refused %s %d times while reachable (%s: %s); it is "
                            "kept in %s",
                            self._uri,
                            what,
                            refusals,
                            type(error).__name__,
                            error,
                            failed,
                        )
                        with self._stats_lock:
                            self._stats.items_failed += 1
                        return False
                log.warning(
                    "delivering %s to Tiled at %s failed (%s: %s); %s, retrying in %.1f s",
                    what,
                    self._uri,
                    type(error).__name__,
                    error,
                    "server reachable" if reachable else "server unreachable",
                    delay,
                )
                self._wake.wait(delay)
                delay = min(self.retry_max_s, delay * 2)

    def _reachable(self) -> bool:
        import httpx

        try:
            with httpx.Client(trust_env=not is_loopback_uri(self._uri), timeout=2.0) as client:
                response = client.get(self._uri)
            return response.status_code < 500
        except httpx.HTTPError:
            return False

    def _new_writer(self, catalog: TiledCatalog):
        from bluesky_tiled_plugins import TiledWriter

        return TiledWriter(catalog.raw, batch_size=self.batch_size, **self.writer_kwargs)

    def _rewrite(self, catalog: TiledCatalog, uid: str, docs) -> Any:
        """Delete run ``uid`` if Tiled has it, then write ``docs`` with a fresh writer."""
        raw = catalog.raw
        if uid in raw:
            # external_only=False: the run's own rows and arrays go; externally managed files
            # (a detector's HDF5) are never deleted by Tiled
            raw.delete_contents([uid], recursive=True, external_only=False)
        writer = self._new_writer(catalog)
        for name, doc in docs:
            writer(name, doc)
        return writer

    def _deliver_doc(self, state: _RunState, name: str) -> None:
        if state.reader is None:
            state.reader = open(state.path, "rb")  # noqa: SIM115 (closed at stop)
        line = state.reader.readline()
        if state.failed:  # moved to failed/ earlier: the rest of the run goes there too
            if name == "stop":
                state.reader.close()
                del self._runs[state.uid]
            return
        doc = decode_document(line)[1]

        def deliver(catalog: TiledCatalog) -> None:
            if state.dirty or state.writer is None:
                docs = list(SpoolDirectory.read_run(state.path))[: state.delivered]
                if state.dirty:
                    with self._stats_lock:
                        self._stats.runs_replayed += 1
                state.writer = self._rewrite(catalog, state.uid, docs)
                state.dirty = False
            try:
                state.writer(name, doc)
            except Exception:
                state.dirty = True
                raise

        ok = self._attempt(f"run {state.uid} ({name})", deliver, state.path)
        if not ok:
            state.failed = True
            if name == "stop":
                state.reader.close()
                del self._runs[state.uid]
            return
        state.delivered += 1
        with self._stats_lock:
            self._stats.docs_delivered += 1
        if name == "stop":
            state.reader.close()
            self.spool.done(state.path)
            del self._runs[state.uid]
            with self._stats_lock:
                self._stats.runs_completed += 1

    def _recover_run(self, uid: str, path: Path) -> None:
        docs = list(SpoolDirectory.read_run(path))
        if not docs:
            self.spool.done(path)
            return
        if docs[-1][0] != "stop":
            docs.append(("stop", _abort_stop(uid, docs)))
            log.warning(
                "run %s in the spool has no stop document (its session ended first); it is "
                "written with exit_status='abort'",
                uid,
            )
        ok = self._attempt(f"recovered run {uid}", lambda c: self._rewrite(c, uid, docs), path)
        if ok:
            self.spool.done(path)
            with self._stats_lock:
                self._stats.docs_recovered += len(docs)
                self._stats.runs_completed += 1

    def _deliver_write(self, folder: Path, recovered: bool) -> None:
        write = SpoolDirectory.read_write(folder)
        target = (write.parent, write.key)
        with self._targets_lock:
            pending = self._pending_targets.get(target)
            mine = pending.popleft() if pending else frozenset(write.arrays)
            superseded = bool(pending) and all(mine <= later for later in pending)
            if pending is not None and not pending:
                del self._pending_targets[target]
        if superseded:
            self.spool.done(folder)
            with self._stats_lock:
                self._stats.writes_superseded += 1
            return
        ok = self._attempt(f"{write.parent}/{write.key}", lambda c: c.put(write), folder)
        if ok:
            self.spool.done(folder)
            with self._stats_lock:
                if recovered:
                    self._stats.writes_recovered += 1
                else:
                    self._stats.writes_delivered += 1


def _abort_stop(uid: str, docs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    counts: dict[str, int] = collections.Counter()
    stream_of = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    for name, doc in docs:
        if name == "event":
            counts[stream_of.get(doc["descriptor"], "primary")] += 1
        elif name == "event_page":
            counts[stream_of.get(doc["descriptor"], "primary")] += len(doc["seq_num"])
    last_time = max((doc.get("time", 0.0) for _, doc in docs), default=time.time())
    return {
        "uid": str(uuid.uuid4()),
        "run_start": uid,
        "time": float(last_time) or time.time(),
        "exit_status": "abort",
        "reason": "bluesky-ptychonn: the session ended before the stop document; the run was "
        "replayed from the spool as far as it went",
        "num_events": dict(counts),
    }


def _is_auth_error(error: BaseException) -> bool:
    if isinstance(error, PermissionError):
        return True
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) in (401, 403)
