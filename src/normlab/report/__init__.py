"""Reports rendered from a run directory alone: figures (PNG+SVG), ``summary.md``, ``report.html``,
``claims.json``. Studies draw with :mod:`normlab.kit.plots`;
:func:`run_and_report` is ``normlab run``: the cells, then the report."""

from normlab.report.build import build_report, run_and_report

__all__ = ["build_report", "run_and_report"]
