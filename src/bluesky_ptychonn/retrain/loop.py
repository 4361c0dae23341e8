"""The continual-learning loop: one finished scan in, a decision (and maybe a better model) out.

`ContinualLoop.process_scan` walks the graph of steps for one scan::

    skip? (suspended) ─▶ labels (ePIE, worker) ─▶ Tiled training/ ─▶ gate (worker)
        ─▶ suspend | train (worker) ─▶ judge on frozen holdout ─▶ export (worker)
        ─▶ Tiled models/ (lineage) ─▶ hot swap at the endpoint

Heavy steps go through an executor (`executors.DaskExecutor` on a Dask / Slurm cluster, or
`executors.InlineExecutor` in this process), and talk through files in ``state_dir``:

=========================  =====================================================================
``loop.json``              the loop's state: model in service, suspension, label sets, pending
                           push, generation, records (rewritten atomically after every scan)
``labels/<uid>.npz|json``  each scan's labels and lineage (`labels.LabelSet`)
``labels/<uid>-recon.cxi`` each scan's reconstruction
``models/g<N>/``           each challenger's model folder
=========================  =====================================================================

Every scan gives one `ScanRecord` (JSON): the decision and its reason, the mismatch, whether a
model was trained and promoted and why, the model in service afterwards, the time of each step,
and any error. A failure of one scan (a diverged reconstruction, labels of the wrong size, a
corrupt model) is recorded and the model in service keeps serving; nothing is promoted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .challenger import judge, scratch_preprocessing_dict, train_step
from .executors import Executor, InlineExecutor
from .gate import Decision, Gate, LiveQuality, ValidatedLevel, mismatch_from_dict, score_step
from .labels import labels_step
from .options import LoopOptions
from .promote import PushFailed, export_step, push, registry_write

log = logging.getLogger(__name__)

STATES = ("idle", "reconstructing", "gating", "training", "pushing", "suspended")


@dataclass
class ScanRecord:
    """What the loop did with one scan (JSON-ready with `to_dict`).

    Attributes:
        scan: the scan's name (file or run uid).
        scan_uid: the run's uid.
        decision: a `gate.ACTIONS` action, or ``"refused"`` (the scan could not give labels or
            a step failed: see ``error``).
        reason: why, in one sentence.
        mismatch: the model in service against the new holdout labels (`gate.Mismatch`).
        trained: a challenger was trained.
        promoted: it was promoted (registered and pushed or pending).
        promotion_reason: why it was or was not promoted.
        model_version, model_path: the model in service after this scan.
        pushed: the endpoint serves ``model_version`` (None: no endpoint configured).
        steps: seconds of each step run.
        seconds: wall time of the whole scan.
        error: the error that refused the scan, if any.
        challenger: the training step's summary (holdout figures), if one was trained.
    """

    scan: str
    scan_uid: str
    decision: str
    reason: str
    mismatch: dict[str, Any] | None = None
    trained: bool = False
    promoted: bool = False
    promotion_reason: str | None = None
    model_version: str | None = None
    model_path: str | None = None
    pushed: bool | None = None
    steps: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    challenger: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    finished: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_sidecar_preprocessing(model_dir: str | Path) -> dict[str, Any]:
    """The preprocessing dict of a model folder's sidecar (plain JSON: no torch here)."""
    path = Path(model_dir)
    path = path / "model.json" if path.is_dir() else path
    sidecar = json.loads(path.read_text())
    return dict(sidecar["preprocessing"])


def _read_version(model_dir: str | Path) -> str:
    path = Path(model_dir)
    path = path / "model.json" if path.is_dir() else path
    return str(json.loads(path.read_text()).get("version", ""))


def _pattern_shape(scan_path: str) -> tuple[int, int]:
    import h5py

    with h5py.File(scan_path, "r") as f:
        shape = f["entry_1/data_1/data"].shape
    return int(shape[-2]), int(shape[-1])


class ContinualLoop:
    """The loop's state and its one entry point, `process_scan` (see the module docstring).

    Args:
        state_dir: the loop's folder (created; its ``loop.json`` is resumed when present).
        options: loop settings.
        executor: where the heavy steps run (default: in this process).
        model_dir: the model in service at the start (None: the first scan trains one from
            scratch); ignored when ``state_dir`` holds a saved state.
        writer: anything with ``submit(NodeWrite)`` (a `SpooledTiledWriter`): labels, models
            and records go to Tiled through it; None: no Tiled.
        endpoint_control: the endpoint's control address for the hot swap; None: no push.
        clock: epoch seconds (replay passes each scan's own time).
    """

    def __init__(
        self,
        state_dir: str | Path,
        options: LoopOptions | None = None,
        *,
        executor: Executor | None = None,
        model_dir: str | Path | None = None,
        writer: Any = None,
        endpoint_control: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.options = options or LoopOptions()
        self.options.validate()
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.executor = executor or InlineExecutor()
        self.writer = writer
        self.endpoint_control = endpoint_control
        self.clock = clock
        self.state = "idle"
        self.model_version: str | None = None
        self.model_path: str | None = None
        self.pending_push: str | None = None
        self.level = ValidatedLevel()  # the model in service's validated phase SSIM
        self.failed_challengers = 0  # in a row, since the last promotion
        self.generation = 0
        self.label_paths: list[str] = []
        self.records: list[ScanRecord] = []
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        suspended_until = None
        if self.state_file.is_file():
            saved = json.loads(self.state_file.read_text())
            self.model_version = saved.get("model_version")
            self.model_path = saved.get("model_path")
            self.pending_push = saved.get("pending_push")
            self.level = ValidatedLevel.from_dict(
                saved.get("level") or {"ssim": saved.get("reference_ssim"), "source": "holdout"}
            )
            self.failed_challengers = int(saved.get("failed_challengers", 0))
            self.generation = int(saved.get("generation", 0))
            self.label_paths = list(saved.get("label_paths", []))
            suspended_until = saved.get("suspended_until")
            self.records = [ScanRecord(**r) for r in saved.get("records", [])]
        elif model_dir is not None:
            self.model_path = str(Path(model_dir).resolve())
            self.model_version = _read_version(self.model_path)
        self.gate = Gate(self.options.gate, suspended_until)
        if self.gate.suspended:
            self.state = "suspended"

    # ---- state --------------------------------------------------------------------------------
    @property
    def reference_ssim(self) -> float | None:
        """The model in service's validated phase SSIM (`gate.ValidatedLevel`), None: unknown."""
        return self.level.ssim

    @property
    def state_file(self) -> Path:
        return self.state_dir / "loop.json"

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(status())`` at every change of state (e.g. an Ophyd status device)."""
        self._listeners.append(listener)
        listener(self.status())

    def status(self) -> dict[str, Any]:
        """The loop's state, the last decision and why, the model in service (JSON-ready)."""
        last = self.records[-1] if self.records else None
        return {
            "state": self.state,
            "model_version": self.model_version,
            "model_path": self.model_path,
            "pending_push": self.pending_push,
            "reference_ssim": self.reference_ssim,
            "reference_source": self.level.source,
            "suspended_until": self.gate.suspended_until,
            "generation": self.generation,
            "scans": len(self.records),
            "last_scan": last.scan_uid if last else None,
            "last_decision": last.decision if last else None,
            "last_reason": last.reason if last else None,
        }

    def _set_state(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown loop state {state!r}")
        self.state = state
        snapshot = self.status()
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:  # a listener must not break the loop
                log.exception("continual-learning listener failed")

    def _save(self) -> None:
        saved = {
            "model_version": self.model_version,
            "model_path": self.model_path,
            "pending_push": self.pending_push,
            "reference_ssim": self.reference_ssim,
            "level": self.level.to_dict(),
            "failed_challengers": self.failed_challengers,
            "generation": self.generation,
            "label_paths": self.label_paths,
            "suspended_until": self.gate.suspended_until,
            "options": self.options.to_dict(),
            "records": [r.to_dict() for r in self.records],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=2, default=str))
        tmp.replace(self.state_file)

    # ---- the loop -----------------------------------------------------------------------------
    def _step(self, record: ScanRecord, name: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        started = time.perf_counter()
        try:
            return self.executor.run(name, fn, *args, **kwargs)
        finally:
            record.steps[name] = round(time.perf_counter() - started, 3)

    def process_scan(
        self,
        scan_path: str | Path,
        scan_uid: str | None = None,
        *,
        initial_object_path: str | Path | None = None,
        now_s: float | None = None,
        live_quality: LiveQuality | None = None,
    ) -> ScanRecord:
        """Run the loop for one finished scan (a CXI file); return and keep its record.

        ``live_quality``: the run's per-frame physics residuals / stated uncertainties from
        the endpoint; a rise during the run is the gate's early trigger (`gate.LiveQuality`).
        """
        with self._lock:
            started = time.perf_counter()
            scan_path = str(scan_path)
            uid = scan_uid or Path(scan_path).stem
            now = self.clock() if now_s is None else float(now_s)
            record = ScanRecord(scan=Path(scan_path).name, scan_uid=uid, decision="", reason="")
            try:
                self._retry_pending_push(record)
                self._process(record, scan_path, uid, initial_object_path, now, live_quality)
            except ConnectionError:  # no cluster: not processed; the caller keeps it queued
                self._set_state("suspended" if self.gate.suspended else "idle")
                raise
            except Exception as error:  # recorded: the model in service keeps serving
                log.warning("continual learning refused scan %s: %s", uid, error)
                record.decision = "refused"
                record.error = f"{type(error).__name__}: {error}"
                record.reason = str(error)
            record.model_version = self.model_version
            record.model_path = self.model_path
            record.seconds = round(time.perf_counter() - started, 3)
            record.finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.records.append(record)
            self._save()
            self._write_record(record)
            self._set_state("suspended" if self.gate.suspended else "idle")
            return record

    def refuse(self, scan: str, scan_uid: str, error: BaseException) -> ScanRecord:
        """Record a run that could not even be read as a scan (no positions, no frames...)."""
        with self._lock:
            record = ScanRecord(
                scan=scan,
                scan_uid=scan_uid,
                decision="refused",
                reason=str(error),
                error=f"{type(error).__name__}: {error}",
                model_version=self.model_version,
                model_path=self.model_path,
                finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            self.records.append(record)
            self._save()
            self._write_record(record)
            self._set_state("suspended" if self.gate.suspended else "idle")
            return record

    def _process(
        self,
        record: ScanRecord,
        scan_path: str,
        uid: str,
        initial_object_path: str | Path | None,
        now: float,
        live_quality: LiveQuality | None = None,
    ) -> None:
        skip = self.gate.before_reconstruction(now, live_quality)
        if skip is not None:
            record.decision, record.reason = skip.action, skip.reason
            return
        opts = self.options
        if self.model_path is not None:
            preprocessing = _read_sidecar_preprocessing(self.model_path)
        else:
            preprocessing = scratch_preprocessing_dict(
                _pattern_shape(scan_path), opts.train.scratch
            )
        self._set_state("reconstructing")
        labels = self._step(
            record,
            "labels",
            labels_step,
            scan_path,
            str(self.state_dir / "labels" / uid),
            preprocessing=preprocessing,
            recon=opts.recon,
            holdout_fraction=opts.gate.holdout_fraction,
            seed=opts.train.seed + len(self.label_paths),
            scan_uid=uid,
            quality=opts.quality,
            initial_object_path=(
                str(initial_object_path) if initial_object_path and opts.seed.live_mosaic else None
            ),
            seeded_iterations=opts.seed.iterations,
        )
        record.labels = {k: v for k, v in labels.items() if k != "lineage"}
        self._write_labels(labels)
        self._set_state("gating")
        mismatch = None
        if self.model_path is not None:
            mismatch = mismatch_from_dict(
                self._step(
                    record,
                    "gate",
                    score_step,
                    self.model_path,
                    [labels["labels_path"]],
                    holdout_only=False,  # the model in service never saw any of them
                ),
                self.reference_ssim,
            )
        decision: Decision = self.gate.decide(mismatch, now)
        record.decision, record.reason = decision.action, decision.reason
        if self.gate.last_alarm:  # the run was checked early: say why
            record.reason = f"{decision.reason} (early trigger: {self.gate.last_alarm})"
        if mismatch is not None:
            record.mismatch = {**mismatch.to_dict(), "reference_source": self.level.source}
        self.level.observe(decision)
        earlier = [p for p in self.label_paths if p != labels["labels_path"]]
        if labels["labels_path"] not in self.label_paths:  # a rerun after an outage
            self.label_paths.append(labels["labels_path"])
        if not decision.trains:
            return
        self._set_state("training")
        self.generation += 1
        trained = self._step(
            record,
            "train",
            train_step,
            self.model_path,
            labels["labels_path"],
            earlier,
            list(self.label_paths),
            str(self.state_dir / "models" / f"g{self.generation}"),
            options=asdict(opts.train),
            generation=self.generation,
        )
        record.trained = True
        record.challenger = trained
        promoted, why = judge(trained, opts.train.min_improvement)
        record.promotion_reason = why
        if not promoted:
            self.failed_challengers += 1
            limit = opts.gate.max_failed_challengers
            if self.failed_challengers >= limit:  # what the model in service does is its level
                level = float(trained["holdout"]["incumbent"]["ssim_mean"])
                self.level.set(level, "incumbent holdout")
                self.failed_challengers = 0
                record.promotion_reason = (
                    f"{why}; after {limit} challengers that did not beat it, the model in "
                    f"service's phase SSIM {level:.3f} on the frozen holdout is its validated level"
                )
            return
        self.failed_challengers = 0
        self._set_state("pushing")
        exported = self._step(
            record,
            "export",
            export_step,
            trained["model_dir"],
            onnx=opts.promote.onnx,
            int8=opts.promote.int8,
            calibration_label_paths=list(self.label_paths[-4:]),
        )
        lineage = {
            "parent_version": self.model_version,
            "generation": self.generation,
            "scans": [Path(p).stem for p in self.label_paths],
            "label_sets": list(self.label_paths),
            "trigger": decision.to_dict(),
            "holdout": trained["holdout"],
            "options": opts.to_dict(),
        }
        self._register(trained["model_dir"], trained["holdout"]["challenger"], lineage)
        record.promoted = True
        self.level.set(float(trained["holdout"]["challenger"]["ssim_mean"]), "holdout")
        self.model_path = str(Path(exported["model_dir"]).resolve())
        self.model_version = exported["version"]
        self.pending_push = self.model_path if self.endpoint_control else None
        self._push(record)

    # ---- promotion side effects -----------------------------------------------------------------
    def _push(self, record: ScanRecord) -> None:
        if self.pending_push is None:
            return
        started = time.perf_counter()
        try:
            push(self.endpoint_control, self.pending_push, self.options.promote)
        except PushFailed as error:
            record.pushed = False
            record.promotion_reason = f"{record.promotion_reason}; push pending: {error}"
            log.warning("%s", error)
        else:
            record.pushed = True
            self.pending_push = None
        finally:
            record.steps["push"] = round(time.perf_counter() - started, 3)

    def _retry_pending_push(self, record: ScanRecord) -> None:
        if self.pending_push is not None and self.endpoint_control:
            self._set_state("pushing")
            self._push(record)

    def _register(self, model_dir: str, metrics: dict[str, Any], lineage: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.submit(registry_write(model_dir, metrics=metrics, lineage=lineage))

    def _write_labels(self, labels: dict[str, Any]) -> None:
        if self.writer is None:
            return
        from .tiled import labels_write

        self.writer.submit(labels_write(labels["labels_path"], labels["lineage"]))

    def _write_record(self, record: ScanRecord) -> None:
        if self.writer is None:
            return
        from .tiled import record_write

        try:
            self.writer.submit(record_write(record.to_dict(), self.status()))
        except Exception:  # the record is in loop.json either way
            log.exception("could not queue the loop record for Tiled")
