"""Which preset a run used, and what that means for reading its verdicts.

A study's ``--quick`` preset is a smoke test: it checks that the study runs end to end in seconds, with too
few seeds and steps for its verdicts to mean anything. The report says so wherever a verdict appears,
with the sizes the default preset uses. The preset is read from the stored config itself (compared with
the study's default and quick configs), so it holds for runs started from Python as well as the CLI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from normlab.engine.config import apply_overrides, config_to_dict
from normlab.engine.spec import Study

SMOKE_TEST_VERDICT = "not judged at this size"


@dataclass(frozen=True)
class Preset:
    """``kind``: "default", "quick" or "custom"; ``sizes``: (field, this run's value, the default's value) for
    the fields the quick preset changes (seeds, steps, ...)."""

    kind: str
    sizes: tuple[tuple[str, Any, Any], ...]

    @property
    def smoke_test(self) -> bool:
        return self.kind == "quick"

    def sizes_text(self, which: str = "run") -> str:
        """"seeds=3, steps=120" for this run (``which="run"``) or for the default preset."""
        return ", ".join(f"{k}={_short(v if which == 'run' else d)}" for k, v, d in self.sizes)

    def line(self) -> str:
        """One line for the top of a report."""
        if self.kind == "default":
            return f"default preset ({self.sizes_text()})" if self.sizes else "default preset"
        if self.kind == "quick":
            return (f"quick preset or smaller, a smoke test ({self.sizes_text()}); the default preset uses "
                    f"{self.sizes_text('default')}")
        return f"custom settings ({self.sizes_text()}; the default preset uses {self.sizes_text('default')})"

    def banner(self, study: str) -> str:
        """What a reader must know before reading a verdict of a quick run ("" otherwise)."""
        if not self.smoke_test:
            return ""
        return (f"Smoke test: this run used the quick preset's sizes or smaller ({self.sizes_text()}), which only checks that the "
                f"study runs. Its verdicts are {SMOKE_TEST_VERDICT}: the default preset uses "
                f"{self.sizes_text('default')} (normlab run {study}).")


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ",".join(map(str, v)) + ")"
    return str(v)


def preset_of(study: Study, config: Any) -> Preset:
    """The preset ``config`` is, for ``study``: its default, its quick preset, or custom settings.

    A run is a smoke test (``"quick"``) when it is the quick preset, or when any size the quick preset
    shrinks (seeds, steps, epochs...) is at or below its quick value: ``--quick --seeds 2`` is no more
    judgeable than ``--quick``. ``sizes`` lists the quick preset's fields and every other field that differs
    from the default.
    """
    default = study.Config()
    quick = apply_overrides(default, dict(study.quick_overrides), source="quick preset")
    here, base, small = config_to_dict(config), config_to_dict(default), config_to_dict(quick)
    fields = [f.name for f in dataclasses.fields(default)]
    shown = [k for k in fields if k in study.quick_overrides or here[k] != base[k]]
    sizes = tuple((k, here[k], base[k]) for k in shown)
    shrunk = [k for k in study.quick_overrides if _number(small[k]) and _number(base[k]) and small[k] < base[k]]
    if here == base:
        kind = "default"
    elif here == small or any(_number(here[k]) and here[k] <= small[k] for k in shrunk):
        kind = "quick"
    else:
        kind = "custom"
    return Preset(kind, sizes)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
