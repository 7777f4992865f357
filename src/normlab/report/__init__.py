"""Reports rendered from a run directory alone: figures (PNG+SVG), ``summary.md``, ``report.html``,
``claims.json``. Studies use :mod:`normlab.report.figures` to draw."""

from normlab.report.build import build_report

__all__ = ["build_report"]
