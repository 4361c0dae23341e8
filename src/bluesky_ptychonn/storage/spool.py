"""An on-disk spool of documents and result writes, so that nothing is lost while Tiled is away.

`SpoolDirectory` owns one folder (one session at a time: a lock file is held with
``fcntl.flock``). Its layout:

=============================  ================================================================
``lock``                       held by the session that owns the spool
``runs/<seq>-<uid>.jsonl``     one Bluesky run: one ``{"name": ..., "doc": ...}`` JSON object
                               per line, in the order the RunEngine emitted them
``ops/<seq>-<key>/``           one `NodeWrite`: ``op.json`` (parent, key, metadata, specs,
                               array names) and one ``<name>.npy`` per array; the folder appears
                               under its final name only when complete (written as
                               ``.tmp-...``, then renamed)
``failed/``                    runs and writes the server refused again and again (kept)
``delivered/``                 delivered files, only with ``keep_delivered=True``
=============================  ================================================================

``<seq>`` is the time in nanoseconds and a counter, so sorting names sorts by submission time,
across sessions too.

Arrays inside documents (detector frames in events) are stored without pickle, as
``{"__ndarray__": {"descr": ..., "shape": [...], "base64": ...}}`` where ``descr`` is numpy's
``dtype_to_descr`` (structured dtypes included); arrays of a `NodeWrite` are ``.npy`` files
read back with ``allow_pickle=False``. Object arrays are refused.

Durability: every line is written with one ``write`` call and flushed to the operating system
before the call returns (it survives a crash of the Python process); the run file is fsync'ed
at the stop document and every write folder before it is renamed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tiled_catalog import NodeWrite, safe_key

__all__ = [
    "SpoolDirectory",
    "SpoolLockedError",
    "decode_document",
    "document_from_json",
    "document_to_json",
    "encode_document",
]

_ND = "__ndarray__"


class SpoolLockedError(RuntimeError):
    """Another live session holds the spool folder."""


# ----------------------------------------------------------------------------------------------
# codec


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot be spooled (no pickle)")
        array = np.ascontiguousarray(value)
        return {
            _ND: {
                "descr": np.lib.format.dtype_to_descr(array.dtype),
                "shape": list(array.shape),
                "base64": base64.b64encode(array.tobytes()).decode("ascii"),
            }
        }
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"a {type(value).__name__} cannot be spooled as JSON")


def _object_hook(obj: dict[str, Any]) -> Any:
    if _ND in obj and len(obj) == 1:
        spec = obj[_ND]
        descr = spec["descr"]
        if isinstance(descr, list):
            descr = [tuple(field) for field in descr]
        dtype = np.lib.format.descr_to_dtype(descr)
        if dtype.hasobject:
            raise ValueError("refusing to decode an object array")
        data = base64.b64decode(spec["base64"])
        return np.frombuffer(data, dtype=dtype).reshape(spec["shape"]).copy()
    return obj


def encode_document(name: str, doc: Any) -> str:
    """One JSON line (without the newline) for a (name, document) pair."""
    return json.dumps({"name": name, "doc": doc}, default=_default, separators=(",", ":"))


def document_to_json(doc: Any) -> bytes:
    """A document as JSON bytes (numpy arrays as in the spool): a pickle-free 0MQ serializer."""
    return json.dumps(doc, default=_default, separators=(",", ":")).encode()


def document_from_json(data: bytes | str) -> dict[str, Any]:
    """Inverse of `document_to_json`: the pickle-free 0MQ deserializer."""
    return json.loads(data, object_hook=_object_hook)


def decode_document(line: str | bytes) -> tuple[str, dict[str, Any]]:
    """The (name, document) pair of one spooled line; numpy arrays are restored."""
    item = json.loads(line, object_hook=_object_hook)
    return item["name"], item["doc"]


# ----------------------------------------------------------------------------------------------
# the folder


@dataclass
class SpooledRun:
    """A run file of the spool."""

    path: Path
    uid: str


class SpoolDirectory:
    """A spool folder (see the module docstring). Thread-safe.

    Args:
        path: the folder (created with mode 0700).
        keep_delivered: move delivered files to ``delivered/`` instead of deleting them.
        fsync: fsync run files at stop and write folders before renaming.

    Raises:
        SpoolLockedError: another process holds the folder.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, keep_delivered: bool = False, fsync: bool = True
    ):
        self.path = Path(path)
        for sub in ("runs", "ops", "failed"):
            (self.path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keep_delivered = keep_delivered
        self.fsync = fsync
        self._lock = threading.Lock()
        self._counter = 0
        self._open_runs: dict[str, tuple[Any, Path]] = {}  # uid -> (append handle, path)
        self._lock_file = open(self.path / "lock", "a+")  # noqa: SIM115 (held for our life)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolLockedError(
                f"the spool {self.path} is in use by another session (it holds {self.path}/lock)"
            ) from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()

    def _seq(self) -> str:
        self._counter += 1
        return f"{time.time_ns():020d}-{self._counter:06d}"

    # ---- runs -----------------------------------------------------------------------------
    def append(self, uid: str, name: str, doc: dict[str, Any]) -> Path:
        """Append a document to its run's file (created at the first document); return the path."""
        line = (encode_document(name, doc) + "\n").encode()
        with self._lock:
            if uid in self._open_runs:
                handle, path = self._open_runs[uid]
            else:
                path = self.path / "runs" / f"{self._seq()}-{safe_key(uid)}.jsonl"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                handle = os.fdopen(fd, "ab", buffering=0)
                self._open_runs[uid] = (handle, path)
            handle.write(line)
            if name == "stop":
                if self.fsync:
                    os.fsync(handle.fileno())
                handle.close()
                del self._open_runs[uid]
            return path

    @staticmethod
    def read_run(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        """The documents of a run file; a truncated last line (a crash mid-write) is skipped."""
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                yield decode_document(line)

    def pending_runs(self) -> list[SpooledRun]:
        """Run files in submission order."""
        runs = []
        for path in sorted((self.path / "runs").glob("*.jsonl")):
            uid = path.stem.split("-", 2)[2]
            runs.append(SpooledRun(path, uid))
        return runs

    # ---- node writes ----------------------------------------------------------------------
    def put_write(self, write: NodeWrite) -> Path:
        """Store a `NodeWrite` as a complete folder; return the folder."""
        with self._lock:
            name = f"{self._seq()}-{write.parent}-{write.key}"
        tmp = self.path / "ops" / f".tmp-{name}"
        tmp.mkdir(mode=0o700)
        for array_name, array in write.arrays.items():
            with open(tmp / f"{array_name}.npy", "wb") as f:
                np.save(f, array, allow_pickle=False)
                if self.fsync:
                    os.fsync(f.fileno())
        spec = {
            "parent": write.parent,
            "key": write.key,
            "metadata": write.metadata,
            "specs": write.specs,
            "arrays": sorted(write.arrays),
        }
        with open(tmp / "op.json", "w") as f:
            json.dump(spec, f)
            if self.fsync:
                os.fsync(f.fileno())
        final = self.path / "ops" / name
        tmp.rename(final)
        return final

    @staticmethod
    def write_target(folder: Path) -> tuple[str, str, frozenset[str]]:
        """(parent, key, array names) of a write folder, without loading its arrays."""
        spec = json.loads((folder / "op.json").read_text())
        return spec["parent"], spec["key"], frozenset(spec["arrays"])

    @staticmethod
    def read_write(folder: Path) -> NodeWrite:
        spec = json.loads((folder / "op.json").read_text())
        arrays = {
            name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in spec["arrays"]
        }
        return NodeWrite(
            parent=spec["parent"],
            key=spec["key"],
            metadata=spec["metadata"],
            arrays=arrays,
            specs=spec["specs"],
        )

    def pending_writes(self) -> list[Path]:
        """Complete write folders in submission order (half-written ``.tmp-`` ones removed)."""
        folders = []
        for path in sorted((self.path / "ops").iterdir()):
            if path.name.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True)
            elif (path / "op.json").exists():
                folders.append(path)
        return folders

    # ---- bookkeeping ----------------------------------------------------------------------
    def done(self, path: Path) -> None:
        """A run file or write folder was delivered: delete it (or keep it in delivered/)."""
        if self.keep_delivered:
            target = self.path / "delivered" / path.name
            target.parent.mkdir(exist_ok=True, mode=0o700)
            path.rename(target)
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def fail(self, path: Path) -> Path:
        """Move a run file or write folder the server keeps refusing to ``failed/``."""
        target = self.path / "failed" / path.name
        path.rename(target)
        return target

    def close(self) -> None:
        """Close open run files and release the lock (pending files stay for the next session)."""
        with self._lock:
            for handle, _ in self._open_runs.values():
                handle.close()
            self._open_runs.clear()
            if not self._lock_file.closed:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()
