"""The contract between a study and the lab engine.

A *study* declares what to run and how to judge it; the *engine* (:mod:`normlab.engine.runner`) runs it,
stores everything in a run directory, and the *report* (``normlab.report``) renders from that
directory alone. A study never writes files itself and never reads live objects in ``claims`` or
``figures``: those take the stored tables, so a report can be rebuilt from disk.

Vocabulary
----------
arm
    One experimental condition (``"ln"``, ``"dropout+ln"``, ``"bn/bs=4"`` ...).
cell
    One unit of work the engine can skip on resume: an arm plus the seeds trained *together* (as one
    vectorized ensemble where the model allows it) and any extra parameters (``batch_size``, ``depth``).
metrics table
    Long format, one row per measurement: ``arm, seed, step, metric, value`` plus one column per key of
    ``Cell.params`` (the engine adds ``arm`` and the params; ``run_cell`` returns the rest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from normlab.engine.config import check_fields

Verdict = Literal["supported", "refuted", "inconclusive"]
VERDICTS: tuple[str, ...] = ("supported", "refuted", "inconclusive")

METRIC_COLUMNS: tuple[str, ...] = ("seed", "step", "metric", "value")


@dataclass(frozen=True)
class Cell:
    """One resumable unit of work: ``arm`` trained for ``seeds`` (together), with extra ``params``."""

    arm: str
    seeds: tuple[int, ...]
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def key(self) -> str:
        """A stable, filesystem-safe id (the same cell gets the same key across processes)."""
        raw = json.dumps([self.arm, list(self.seeds), [list(p) for p in self.params]], sort_keys=True)
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.arm)[:40]
        return f"{slug}-{hashlib.sha1(raw.encode()).hexdigest()[:10]}"


@dataclass
class Claim:
    """A seed's claim, the measurement that tests it, and the verdict the data gives.

    ``verdict`` is computed by the study from the stored metrics (never hard-coded). ``statistic`` names
    the test (``"welch_t"``, ``"mean_diff"``, ``"ratio"``, ...), ``value`` is its value, ``effect_size``
    a standardized or relative effect, ``ci`` the 95% interval of the quantity being judged.

    ``unit`` is the unit of replication: what was randomised independently, so that the statistic treats
    ``n`` of them as independent (``"seed"``: runs that share a seed and data order are one unit, however
    many arms or norms they span; ``"seed x depth"``; ``"exact"`` for a deterministic check, with
    ``n=None``). ``p_value`` is the one-sided p of the claimed direction; ``p_adjusted`` and ``survives``
    are filled in by the report (:func:`normlab.kit.stats.correct_for_multiplicity`): Holm's adjustment
    over the study's claims that have a p, and whether a ``supported`` verdict still holds after it.
    """

    id: str
    claim: str
    source: str
    measurement: str
    verdict: Verdict
    statistic: str
    value: float
    p_value: float | None = None
    effect_size: float | None = None
    ci: tuple[float, float] | None = None
    n: int | None = None
    detail: str = ""
    unit: str | None = None
    p_adjusted: float | None = None
    survives: bool | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"Claim {self.id!r}: verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.n is not None:
            if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 0:
                raise ValueError(f"Claim {self.id!r}: n must be a count of independent units (int >= 0) or "
                                 f"None, got {self.n!r}")
            self.n = int(self.n)  # numpy integers too: claims.json holds plain ints

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SeedSentence:
    """One claim sentence of a seed post and how the study treats it: tested by claims, or why it cannot be.

    A study lists every claim sentence of the posts it reproduces (``Study.seed_sentences``); the report
    shows them with the verdicts of the claims that test each one, so a reader sees what the post said,
    what normlab measured, and what it could not.
    """

    seed: str  # the post's id in ../shared/seeds (the file name's prefix, e.g. "000")
    quote: str  # the sentence in the post's own words
    english: str  # what it says, in English
    tested_by: tuple[str, ...] = ()  # ids of the claims that test it
    why_not: str = ""  # when ``tested_by`` is empty: why this study cannot test it

    def __post_init__(self) -> None:
        if bool(self.tested_by) == bool(self.why_not.strip()):
            raise ValueError(f"seed {self.seed} sentence {self.english[:40]!r}: give either tested_by (claim ids) "
                             "or why_not (why it cannot be tested), not both or neither")


# How a per-unit quantity is summarised over units (:mod:`normlab.kit.intervals` implements each).
Scale = Literal["signed", "positive", "nonnegative", "proportion", "binary"]
SCALES: tuple[str, ...] = ("signed", "positive", "nonnegative", "proportion", "binary")


@dataclass(frozen=True)
class KeyNumber:
    """One number a reader of the report uses, declared by the study (``Study.key_numbers``).

    ``quantity`` says what was measured on each unit and how it was taken over steps ("train MSE, mean over
    the last 5% of steps"); ``values`` holds one value per independent unit (``unit``) of ``arm``. The report
    summarises them by ``scale`` and names the summary beside the number: ``"positive"`` (a loss, a norm, a
    ratio: geometric mean, interval on the log scale), ``"proportion"`` (a per-unit value in [0, 1], an accuracy:
    a mean with an interval inside [0, 1]), ``"binary"`` (each unit 0 or 1, diverged or not: k of n with
    Wilson's interval), ``"nonnegative"`` (>= 0, may be 0: arithmetic mean, t-interval cut at 0), ``"signed"``
    (arithmetic mean, t-interval); see :mod:`normlab.kit.intervals`. Claims that compare the same
    quantity use the same summary, so the report shows one number for it everywhere.
    """

    quantity: str
    arm: str
    values: tuple[float, ...]
    scale: Scale = "signed"
    unit: str = "seed"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"KeyNumber {self.quantity!r}: scale must be one of {', '.join(SCALES)}, "
                             f"got {self.scale!r}")
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))


@dataclass
class Figure:
    """A figure the study drew, plus how to read it (shown beside it in the report)."""

    name: str  # file stem, e.g. "loss_curves"; the engine saves name.png and name.svg
    title: str
    how_to_read: str
    figure: Any  # a matplotlib Figure; the engine saves and closes it


@dataclass
class CellContext:
    """What the engine hands to ``run_cell``."""

    cell: Cell
    device: Any  # torch.device
    probe_dir: Path  # where probe records for this cell go (engine-created, may stay empty)
    tb_dir: Path | None  # TensorBoard logdir for this cell, or None
    progress: Callable[[int, int], None] = field(default=lambda done, total: None)  # report steps done


@dataclass
class CellResult:
    """What ``run_cell`` returns: long-format metrics (columns ``METRIC_COLUMNS``), optional probe tables."""

    metrics: pd.DataFrame
    probe_scalars: pd.DataFrame | None = None
    probe_histograms: pd.DataFrame | None = None
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)  # named tables, stored as parquet


@dataclass
class StoredRun:
    """What ``claims`` and ``figures`` receive: everything read back from the run directory."""

    config: Any  # the study's Config instance
    metrics: pd.DataFrame  # all cells, long format + arm + param columns
    probe_scalars: pd.DataFrame  # may be empty
    probe_histograms: pd.DataFrame  # may be empty
    extra: dict[str, pd.DataFrame]  # named tables concatenated over cells (with an ``arm`` column added)
    run_dir: Path


class Study:
    """Base class. A study file subclasses this and registers an instance in ``normlab.studies``.

    Subclasses set the class attributes and implement the four methods. ``Config`` is a dataclass whose
    fields all have defaults (the *default preset*, matching the seed exactly) and whose ``checks`` class
    attribute gives every field its allowed range (:mod:`normlab.engine.config`); ``quick_overrides`` are the
    field values of the ``--quick`` preset (well under a minute on 2 CPU cores).

    ``check_config`` raises ``ValueError`` (a :class:`~normlab.engine.config.ConfigError` names the field)
    for a config that cannot run; it is called once, before the run directory is created, so a bad value
    never leaves a run directory that can never finish. ``cells`` then only lists the work.
    """

    name: ClassVar[str]
    description: ClassVar[str]  # one line, shown by ``normlab list``
    seeds_from: ClassVar[tuple[str, ...]] = ()  # seed articles this study reproduces, e.g. ("000",)
    Config: ClassVar[type]
    quick_overrides: ClassVar[dict[str, Any]] = {}
    # torch intra-op threads while this study runs (None: leave torch's setting). Tiny models run fastest
    # on one thread: on a busy machine, 2+ threads spin-wait on each other for microsecond-sized kernels.
    threads: ClassVar[int | None] = None
    # Whether a cell starts processes of its own (e.g. torch.distributed ranks): executors whose workers are
    # daemonic (Dask's) cannot run such cells, and are refused before the run directory exists.
    starts_processes: ClassVar[bool] = False
    # Where a study from outside normlab came from ({"file": path} or {"entry_point": ...}); set by the
    # loader in normlab.studies, recorded in config.json so ``normlab report`` can load it again.
    source: dict[str, str] | None = None
    # The posts the study reproduces, by id (``seeds_from``): their titles, as the posts name themselves.
    post_titles: ClassVar[dict[str, str]] = {}
    # Every claim sentence of those posts, each tested by claims or marked why it cannot be (the report
    # shows them with the verdicts).
    seed_sentences: ClassVar[tuple[SeedSentence, ...]] = ()

    def check_config(self, config: Any) -> None:
        """Every field in its declared range (``Config.checks``); studies add the checks that span fields."""
        check_fields(config)

    def cells(self, config: Any) -> Sequence[Cell]:
        raise NotImplementedError

    def check_available(self, config: Any) -> None:
        """Raise (``OSError`` or ``ValueError``, saying how to get it) when data the cells need is missing.

        The command line calls it before creating the run directory; it must be cheap (file lookups, no
        loading). The default needs nothing.
        """

    def run_cell(self, config: Any, ctx: CellContext) -> CellResult:
        raise NotImplementedError

    def claims(self, run: StoredRun) -> list[Claim]:
        raise NotImplementedError

    def figures(self, run: StoredRun) -> list[Figure]:
        raise NotImplementedError

    def notes(self, run: StoredRun) -> str:
        """Markdown for the report: what the seed did, what the controls rule in or out."""
        return ""

    def key_numbers(self, run: StoredRun) -> Sequence[KeyNumber]:
        """The short list of numbers a reader uses (roughly 20 at most), each with its scale; the report shows
        exactly these, with their summaries named. The default, none, gives the first rows of the full table
        (every metric at its last step, arithmetic mean per arm), which ``key_numbers.json`` always holds."""
        return ()
