"""norm-axes' figures: the statistics sets as cubes (images, sequences) and the table of what each norm stores."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from normlab.engine.spec import Figure, StoredRun
from normlab.studies.norm_axes.config import LABELS, NORMS, Config


def figures(run: StoredRun) -> list[Figure]:
    return [axes_figure(run, "nchw"), axes_figure(run, "sequence"), state_figure(run)]


def axes_figure(run: StoredRun, arm: str) -> Figure:
    c: Config = run.config
    table = run.extra["membership"]
    table = table[table["arm"] == arm]
    names = list(NORMS)
    if arm == "sequence":
        names = ["bn-seed002", "bn-hidden", *names[1:]]
    fig = plt.figure(figsize=(3.2 * len(names), 4.0))
    for k, name in enumerate(names):
        t = table[table["norm"] == name]
        if arm == "nchw":  # axes: N, C, H*W (H and W flattened, as in the GN paper's Figure 2)
            n, ch, h, w = c.nchw
            coords = np.stack([t["d1"], t["d0"], t["d2"] * w + t["d3"]], 1)
            dims, axis_names = (ch, n, h * w), ("C", "N", "H·W")
        else:
            b, s, hid = c.sequence
            coords = np.stack([t["d2"], t["d0"], t["d1"]], 1)
            dims, axis_names = (hid, b, s), ("hidden", "batch", "seq")
        coords = coords.astype(int)  # the stored table mixes 3-d and 4-d indices: NaN-padded floats
        groups = t["group"].to_numpy()
        # The set of the element at the front top-left corner: every set then shows on a visible face.
        corner = (coords[:, 0] == 0) & (coords[:, 1] == 0) & (coords[:, 2] == dims[2] - 1)
        first = groups[corner][0]
        filled = np.ones(dims, dtype=bool)
        colors = np.empty(dims, dtype=object)
        colors[...] = "#f0f0f0"
        for (i, j, z), gid in zip(coords, groups, strict=True):
            if gid == first:
                colors[i, j, z] = "#3b75af"
        ax = fig.add_subplot(1, len(names), k + 1, projection="3d")
        ax.voxels(filled, facecolors=colors, edgecolor="#999999", linewidth=0.3)
        ax.set_xlabel(axis_names[0], labelpad=-10)
        ax.set_ylabel(axis_names[1], labelpad=-10)
        ax.set_zlabel(axis_names[2], labelpad=-10)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        n_stats = len(np.unique(groups))
        ax.set_title(f"{LABELS[name]}\n{n_stats} statistics of {len(groups) // n_stats} elements", fontsize=9)
    fig.tight_layout()
    what = (f"(N, C, H, W) = {c.nchw}, H and W flattened into one axis" if arm == "nchw"
            else f"[batch, seq, hidden] = {c.sequence}")
    extra = ("" if arm == "nchw" else " 'BatchNorm (post 002's loop)' is post 002's BN loop: one statistic per "
             "(seq, hidden) over the batch; 'BatchNorm1d(hidden)' is how BN is applied to sequences in torch "
             "(over batch and seq).")
    return Figure(
        f"axes_{arm}", f"Which elements share one mean and variance: {what}",
        f"Each cube is the tensor {what}; the blue cells are the elements that share one mean and variance with "
        f"the element at the front top-left corner (one normalization set), grey cells belong to other sets. The sets were "
        f"recorded by the explicit loops that the layers were checked against (GroupNorm: {c.num_groups} "
        f"groups).{extra}", fig)


def state_figure(run: StoredRun) -> Figure:
    state = run.extra["state"]
    cells = [[r.module, r.kind, r.name, r.shape, "yes" if getattr(r, "saved", False) else "",
              "yes" if getattr(r, "learned", False) else ""] for r in state.itertuples()]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(cells) + 0.8))
    ax.axis("off")
    tab = ax.table(cellText=cells, colLabels=["module", "kind", "name", "shape", "in state_dict", "learned"], loc="center", cellLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.auto_set_column_width([0, 1, 2, 3, 4, 5])
    fig.tight_layout()
    return Figure(
        "state", "What each norm stores: parameters and buffers",
        "One row per parameter (learned, gamma = weight, beta = bias) or buffer (saved with the model, not "
        "learned) of post 004's example layers, read from the layers themselves, with whether it is saved in the "
        "state_dict (the model file) and learned (requires_grad). BatchNorm stores per-channel "
        "running statistics; LayerNorm's affine has the shape of normalized_shape; GroupNorm's is per channel; "
        "InstanceNorm stores nothing unless affine / track_running_stats are switched on.", fig)
