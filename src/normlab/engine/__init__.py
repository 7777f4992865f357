"""The engine: runs a study's cells into a run directory and reads it back.

The contract a study implements is :mod:`normlab.engine.spec`; :func:`normlab.engine.runner.run_study`
runs it (cells one by one, in worker processes, :mod:`normlab.engine.parallel`, or on Dask workers,
:mod:`normlab.engine.executors`), :mod:`normlab.engine.store`
owns the run directory, :func:`normlab.engine.load.load_run` reads it back. The engine knows no study by
name and builds no report: the command line finds the study and asks :mod:`normlab.report` for the report.
"""

from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, SeedSentence, StoredRun, Study

__all__ = ["Cell", "CellContext", "CellResult", "Claim", "Figure", "SeedSentence", "StoredRun", "Study"]
