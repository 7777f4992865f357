"""The lab: studies = arms x seeds, a runner that trains seeds as one ensemble, a run-directory store,
statistics over seeds. Contract: :mod:`normlab.lab.spec`; engine: :func:`normlab.lab.runner.run_study`."""

from normlab.lab.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study

__all__ = ["Cell", "CellContext", "CellResult", "Claim", "Figure", "StoredRun", "Study"]
