"""Saving a study's figures into the run directory (PNG and SVG, atomically). Drawing helpers: :mod:`normlab.kit.plots`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt

from normlab.atomic import atomic_write


def save_figure(fig: plt.Figure, directory: Path, name: str) -> dict[str, Path]:
    """Save ``name.png`` and ``name.svg`` atomically, close the figure, return the paths."""
    paths = {}
    try:
        for fmt in ("png", "svg"):
            path = Path(directory) / f"{name}.{fmt}"
            with atomic_write(path) as f:
                # No bbox_inches="tight": figures use constrained layout already, and "tight" costs another draw.
                fig.savefig(f, format=fmt, dpi=100)  # for svg: the dpi of rasterized parts
            paths[fmt] = path
            # The first save ran the constrained layout; keep those positions for the second format instead of
            # solving the layout again (it is a third of a figure's drawing time).
            fig.set_layout_engine("none")
    finally:
        plt.close(fig)
    return paths
