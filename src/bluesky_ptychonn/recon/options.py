"""Reconstruction settings as typed dataclasses: printable, comparable, JSON-serialisable.

`EPIEOptions` and `APOptions` are the two front-door option sets; each nests `ObjectOptions`
and `ProbeOptions` (and `APOptions` a `SyncOptions`). `options_to_dict` gives the plain dict
stored in `Reconstruction.settings`; `options_from_dict` reads it back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEVICES = ("cpu", "cuda", "auto")
PROBE_INITIAL = ("auto", "data")


@dataclass
class ObjectOptions:
    """How the object is updated and how its grid is laid out.

    Attributes:
        step_size: ePIE's alpha (dimensionless, > 0); 1 is the classic full step. Unused by AP,
            whose overlap projection solves for the object exactly.
        regularisation: in (0, 1]; ePIE's object step at a pixel is divided by
            ``(1 - r) * I_batch + r * max(I_batch)``, I_batch the summed probe intensity of the
            batch there. 1 is classic ePIE (divide by the peak); smaller values step further
            where the batch illuminates weakly, as rPIE does (Maiden et al., Optica 2017). The
            default 0.2 was measured (`bench recon --steps`, scans of the tests' independent
            simulator, 40 and 100 iterations) within 1.14x of the best phase error of 1, 0.5,
            0.2 and 0.05 on every scan (1 fell to 1.66x on a high-dose zone plate, 0.5 to
            1.23x); on the real Siemens star 1 and 0.2 reached the same data error.
        margin_px: free pixels added on every side of the scanned area when the object grid is
            built from the positions (object pixels).
        normalise: while the probe is refined, after every iteration scale the object so that
            its RMS amplitude, weighted by the scan's illumination, is 1, and the probe
            inversely (the model is unchanged; pty-chi's "remove object-probe ambiguity").
            Keeps the object's amplitude physical, so that the probe cannot fade while the
            object grows. Skipped when the probe's power constraint is on (it fixes the same
            scale).
    """

    step_size: float = 1.0
    regularisation: float = 0.2
    margin_px: int = 4
    normalise: bool = True

    def validate(self) -> None:
        if not self.step_size > 0:
            raise ValueError(f"object step_size must be positive, got {self.step_size!r}")
        if not 0 < self.regularisation <= 1:
            raise ValueError(
                f"object regularisation must lie in (0, 1], got {self.regularisation!r}"
            )
        if int(self.margin_px) != self.margin_px or self.margin_px < 0:
            raise ValueError(f"object margin_px must be a non-negative int, got {self.margin_px!r}")


@dataclass
class ProbeOptions:
    """How the probe is initialised and updated.

    Attributes:
        update: refine the probe (False keeps the initial probe fixed).
        step_size: ePIE's beta (dimensionless, > 0). Unused by AP.
        start_iteration: first iteration (0-based) that updates the probe; the object gets a
            head start on a rough probe.
        initial: "auto" uses the probe handed to the reconstruction (or the data set's) and
            builds one from the data when there is none; "data" always builds one from the data.
        rescale_to_data: scale the initial probe so that its power sum |P|^2 (photons) equals
            the mean total counts of a pattern (a given probe's scale is often arbitrary).
        power_constraint: after every iteration rescale the probe to ``power_photons`` and the
            object inversely (fixes the object/probe scale ambiguity; the model is unchanged).
        power_photons: target of the power constraint, sum |P|^2 in photons; None takes the
            mean total counts of a pattern.
        centre: after every probe update move the probe and the object together by whole
            pixels so that the probe's intensity centre of mass stays on pixel (H//2, W//2)
            (a shift of both leaves every diffraction pattern unchanged); stops the probe from
            drifting out of its window.
        trial_iterations: ePIE only, when the probe is refined: iterate every candidate start
            (the given probe, or the file's, and probes built from the data for the beam
            sizes of ``trial_overlaps``, each on both sides of the focus) side by side for
            this many iterations on the same batches, then continue from the best (see
            ``trial_margin``; the others are dropped, their errors go into the settings). 0
            keeps the given start. The trial takes at most a tenth of ``iterations`` (at
            least one iteration), so short runs stay cheap; it costs that many iterations
            per extra candidate.
        trial_overlaps: overlap ratios 1 - step / beam size for which a probe is built from
            the data as a candidate start (`prepare.probe_diameter_guess_px`); a larger
            assumed overlap means a larger, more defocused beam, so together they span the
            defocus a scan is likely to be run at.
        trial_margin: a supplied start (the given probe or the file's) is kept unless
            another candidate's error is below its error divided by this (dimensionless,
            >= 1); among probes built from the data the lowest error wins. Early errors
            favour small, bright probes a little; a stuck start measured 30-60 times worse
            than the best candidate, a good one at most 1.6 times.
        modes: ePIE only: number of mutually incoherent probe modes (partial coherence, >= 1).
            A pattern is modelled as sum_m |F[P_m O]|^2; each mode gets its own update from
            the modal Fourier-magnitude correction. Modes missing from the start probe are
            added (`recon.modes.initial_modes`); the result's probe is then (M, H, W).
        mode_power: power of each added mode as a fraction of the probe's total power at the
            start (dimensionless, in [0, 1 / modes)); pty-chi's 0.02.
        orthogonalise: with several modes, after every probe update rotate them into
            orthogonal modes sorted by power (leaves the summed intensity unchanged).
    """

    update: bool = True
    step_size: float = 1.0
    start_iteration: int = 1
    initial: str = "auto"
    rescale_to_data: bool = True
    power_constraint: bool = False
    power_photons: float | None = None
    centre: bool = True
    trial_iterations: int = 4
    trial_overlaps: tuple[float, ...] = (0.6, 0.8)
    trial_margin: float = 2.0
    modes: int = 1
    mode_power: float = 0.02
    orthogonalise: bool = True

    def validate(self) -> None:
        if not self.step_size > 0:
            raise ValueError(f"probe step_size must be positive, got {self.step_size!r}")
        if self.start_iteration < 0:
            raise ValueError(f"probe start_iteration must be >= 0, got {self.start_iteration!r}")
        if self.initial not in PROBE_INITIAL:
            raise ValueError(f"probe initial must be one of {PROBE_INITIAL}, got {self.initial!r}")
        if self.power_photons is not None and not self.power_photons > 0:
            raise ValueError(f"probe power_photons must be positive, got {self.power_photons!r}")
        if int(self.trial_iterations) != self.trial_iterations or self.trial_iterations < 0:
            raise ValueError(
                f"probe trial_iterations must be a non-negative int, got {self.trial_iterations!r}"
            )
        if not self.trial_margin >= 1:
            raise ValueError(f"probe trial_margin must be >= 1, got {self.trial_margin!r}")
        if int(self.modes) != self.modes or self.modes < 1:
            raise ValueError(f"probe modes must be a positive int, got {self.modes!r}")
        if not 0 <= self.mode_power < 1 / self.modes:
            raise ValueError(
                f"probe mode_power must lie in [0, 1/modes) = [0, {1 / self.modes:.3g}), got "
                f"{self.mode_power!r}"
            )
        if not all(0 <= overlap < 1 for overlap in self.trial_overlaps):
            raise ValueError(
                f"probe trial_overlaps must lie in [0, 1), got {self.trial_overlaps!r}"
            )


@dataclass
class SyncOptions:
    """Phase synchronisation of the frames inside alternating projections.

    Attributes:
        every: synchronise every ``every`` iterations; 0 switches it off.
        power_iterations: warm-started power iterations on the Gramian per synchronisation.
        support_threshold: frame pixels where |probe|^2 is below this fraction of its maximum
            are left out of the Gramian (they carry no weight; leaving them out saves time).
    """

    every: int = 0
    power_iterations: int = 20
    support_threshold: float = 1e-3

    def validate(self) -> None:
        if int(self.every) != self.every or self.every < 0:
            raise ValueError(f"sync every must be a non-negative int, got {self.every!r}")
        if self.power_iterations < 1:
            raise ValueError(f"sync power_iterations must be >= 1, got {self.power_iterations!r}")
        if not 0 <= self.support_threshold < 1:
            raise ValueError(
                f"sync support_threshold must lie in [0, 1), got {self.support_threshold}"
            )


@dataclass
class PositionOptions:
    """Refinement of the scan positions during an ePIE reconstruction (position correction).

    The gradient method pty-chi, PtychoShelves and tike use: after the object has settled,
    each iteration moves every position by ``step_size`` times the least-squares shift
    d = Re<P dO/ds, chi> / (|P dO/ds|^2 + max over the batch), chi the exit-wave correction
    of the Fourier-magnitude step, dO/ds the object patch's gradient (Fourier
    differentiation), summed over the probe modes. The step of each axis is clipped to
    ``max_step_px`` and to ``mad_clip`` times the median absolute deviation of all the
    iteration's steps (pty-chi's bounds); the total correction of every position to
    ``max_shift_px`` from its nominal place. The mean correction is removed every iteration
    (a common shift of all positions is a shift of the object, not information).

    Attributes:
        correct: refine the positions (False: keep the file's).
        start_iteration: first iteration (0-based) that moves positions; the object must
            show its features first.
        step_size: fraction of the least-squares shift applied (dimensionless, > 0). pty-chi's
            default is 0.3; 1 was measured better (random errors of 1 and 1.5 px RMS per axis
            on 100-position scans of the independent simulator, 60 iterations: 1.35 -> 0.75
            and 2.18 -> 1.15 px against 0.99 and 1.76 px at 0.3; on error-free positions it
            moved them by 0.18 px RMS, 0.07 at 0.3, the phase error unchanged).
        max_step_px: largest move of one coordinate per iteration (object pixels; pty-chi's
            ``update_magnitude_limit`` 0.1).
        mad_clip: moves are also clipped to this many times the median absolute deviation of
            the iteration's moves (0: not clipped; pty-chi's 10).
        max_shift_px: largest total correction of one coordinate (object pixels); keep it
            below ``ObjectOptions.margin_px`` so that windows stay on the object.
    """

    correct: bool = False
    start_iteration: int = 10
    step_size: float = 1.0
    max_step_px: float = 0.1
    mad_clip: float = 10.0
    max_shift_px: float = 4.0

    def validate(self) -> None:
        if int(self.start_iteration) != self.start_iteration or self.start_iteration < 0:
            raise ValueError(
                f"positions start_iteration must be a non-negative int, got "
                f"{self.start_iteration!r}"
            )
        for name in ("step_size", "max_step_px", "max_shift_px"):
            if not getattr(self, name) > 0:
                raise ValueError(f"positions {name} must be positive, got {getattr(self, name)!r}")
        if not self.mad_clip >= 0:
            raise ValueError(f"positions mad_clip must be >= 0, got {self.mad_clip!r}")


@dataclass
class DivergenceOptions:
    """When a reconstruction counts as diverged: `ReconstructionDiverged` is raised, no result.

    Checked after every iteration (the error must also be finite). A diverged reconstruction
    would teach a network garbage, so it is refused rather than returned.

    Attributes:
        enabled: check at all (False: only NaN or infinite errors are refused).
        error_growth: diverged when the data error exceeds this factor times the lowest error
            so far (dimensionless, > 1).
        grace_iterations: the growth check starts after this many iterations (the first
            iterations of a rough start, and the start of the probe update, may raise the
            error for a while).
        max_object_amplitude: diverged when max |O| over the illuminated area exceeds this
            many times its illumination-weighted RMS (dimensionless, so any scale of the
            object passes; converged reconstructions measured below 1.5, a physical object
            stays within a few times its RMS).
        min_probe_power_fraction: diverged when the probe's power sum |P|^2 falls below this
            fraction of the mean counts of a pattern (of its initial power when neither
            `ObjectOptions.normalise` nor `ProbeOptions.rescale_to_data` ties it to the
            data): the probe fading while the object grows. Checked after iterations that
            update the probe, not under the probe's power constraint; 0 switches it off.
    """

    enabled: bool = True
    error_growth: float = 5.0
    grace_iterations: int = 3
    max_object_amplitude: float = 10.0
    min_probe_power_fraction: float = 0.1

    def validate(self) -> None:
        if not self.error_growth > 1:
            raise ValueError(f"divergence error_growth must be > 1, got {self.error_growth!r}")
        if int(self.grace_iterations) != self.grace_iterations or self.grace_iterations < 0:
            raise ValueError(
                f"divergence grace_iterations must be a non-negative int, got "
                f"{self.grace_iterations!r}"
            )
        if not self.max_object_amplitude > 0:
            raise ValueError(
                f"divergence max_object_amplitude must be positive, got "
                f"{self.max_object_amplitude!r}"
            )
        if not 0 <= self.min_probe_power_fraction < 1:
            raise ValueError(
                f"divergence min_probe_power_fraction must lie in [0, 1), got "
                f"{self.min_probe_power_fraction!r}"
            )


def _validate_common(options: EPIEOptions | APOptions) -> None:
    if int(options.iterations) != options.iterations or options.iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {options.iterations!r}")
    if options.device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {options.device!r}")
    options.object.validate()
    options.probe.validate()
    options.divergence.validate()


@dataclass
class EPIEOptions:
    """Extended ptychographic iterative engine (Maiden & Rodenburg 2009) in mini-batches.

    Attributes:
        iterations: passes over all positions.
        batch_size: positions updated together (vectorised); 1 is the classic sequential ePIE.
        object, probe: update settings.
        positions: position correction (`PositionOptions`; off by default).
        divergence: when the run is refused as diverged (`DivergenceOptions`).
        shuffle: draw a new random position order every iteration (lower final errors); False
            draws one random order (from the seed) and keeps it (a smoother error curve).
        subpixel: honour sub-pixel positions by Fourier-shifting the probe (else round them).
        device: "cpu", "cuda" or "auto" (CUDA when available).
        seed: seed of the random position order (same seed, same result on one device).
        progress: show a progress bar.
    """

    iterations: int = 100
    batch_size: int = 32
    shuffle: bool = True
    object: ObjectOptions = field(default_factory=ObjectOptions)
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    positions: PositionOptions = field(default_factory=PositionOptions)
    divergence: DivergenceOptions = field(default_factory=DivergenceOptions)
    subpixel: bool = True
    device: str = "cpu"
    seed: int = 0
    progress: bool = False

    algorithm = "epie"

    def validate(self) -> None:
        _validate_common(self)
        self.positions.validate()
        if self.positions.correct and not self.subpixel:
            raise ValueError("position correction needs sub-pixel positions (subpixel=True)")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")


@dataclass
class APOptions:
    """Alternating projections (error reduction) over all frames, with phase synchronisation.

    Each iteration projects the frames (exit waves) onto the measured moduli, optionally
    synchronises their phases, and projects them onto the set of frames consistent with one
    object (weighted average: the overlap projection). The probe, when updated, is solved for
    in the same way after the object.

    Attributes:
        iterations: number of iterations.
        object, probe: settings (step sizes are unused).
        sync: phase synchronisation settings.
        divergence: when the run is refused as diverged (`DivergenceOptions`).
        subpixel, device, seed, progress: as in `EPIEOptions`.
    """

    iterations: int = 100
    object: ObjectOptions = field(default_factory=ObjectOptions)
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    sync: SyncOptions = field(default_factory=SyncOptions)
    divergence: DivergenceOptions = field(default_factory=DivergenceOptions)
    subpixel: bool = True
    device: str = "cpu"
    seed: int = 0
    progress: bool = False

    algorithm = "ap"

    def validate(self) -> None:
        _validate_common(self)
        self.sync.validate()
        if self.probe.modes != 1:
            raise ValueError(
                f"alternating projections reconstruct one probe mode; probe "
                f"modes={self.probe.modes} needs ePIE"
            )


ALGORITHMS: dict[str, type] = {"epie": EPIEOptions, "ap": APOptions}


def options_to_dict(options: EPIEOptions | APOptions) -> dict[str, Any]:
    """Plain JSON-ready dict of the options, with the algorithm name under ``"algorithm"``."""
    out = dataclasses.asdict(options)
    out["algorithm"] = options.algorithm
    return out


def options_from_dict(settings: dict[str, Any]) -> EPIEOptions | APOptions:
    """Inverse of `options_to_dict` (unknown keys raise TypeError)."""
    settings = dict(settings)
    name = settings.pop("algorithm", "epie")
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}")
    cls = ALGORITHMS[name]
    nested = {
        "object": ObjectOptions,
        "probe": ProbeOptions,
        "sync": SyncOptions,
        "divergence": DivergenceOptions,
        "positions": PositionOptions,
    }
    for key, sub in nested.items():
        if key in settings and isinstance(settings[key], dict):
            settings[key] = sub(**settings[key])
    if isinstance(settings.get("probe"), ProbeOptions):  # JSON turns tuples into lists
        probe = settings["probe"]
        probe.trial_overlaps = tuple(probe.trial_overlaps)
    return cls(**settings)
