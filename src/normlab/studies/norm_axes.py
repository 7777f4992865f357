r"""norm-axes (seeds 002, 003, 004): which elements each norm averages over, and what it stores.

Every norm computes ``y = (x - mean) / sqrt(var + eps)`` (biased var) and differs only in the *set* of
elements that share one mean and variance:

=========== ======================= ==========================================================
norm        (N, C, H, W) image      [batch, seq, hidden] sequence (seed 002's BERT tensor)
=========== ======================= ==========================================================
BatchNorm   per C: over N, H, W     seed 002's loop: per (seq, hidden) over batch;
                                    BatchNorm1d(hidden) on (B, hidden, seq): per hidden over batch, seq
LayerNorm   per N: over C, H, W     per (batch, seq) over hidden
InstanceNorm per (N, C): over H, W  per (batch, hidden) over seq
GroupNorm   per (N, group): over    per (batch, group of hidden): over seq and the group's hidden
            the group's C, H, W
=========== ======================= ==========================================================

Arms:

* ``nchw``: random ``(N, C, H, W)`` tensors (float64); for each norm the statistics computed with
  explicit Python loops over the elements that share them, compared with normlab's and torch's layers.
* ``sequence``: random ``[batch, seq, hidden]`` tensors; seed 002's two loops written as the seed writes
  them, compared with the layers that compute them (and with the usual ``BatchNorm1d(hidden)``, which
  does not).
* ``state``: the parameters and buffers of seed 004's example layers, with their shapes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from normlab import nn as nlnn
from normlab.engine.config import (
    Check,
    ConfigError,
    integer,
    items,
    number,
    seeds_check,
)
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.kit import stats

SEED_002, SEED_004 = "seed 002", "seed 004"
NORMS = ("batchnorm", "layernorm", "instancenorm", "groupnorm")
LABELS = {"batchnorm": "BatchNorm", "layernorm": "LayerNorm", "instancenorm": "InstanceNorm",
          "groupnorm": "GroupNorm", "bn-seed002": "BatchNorm (seed 002's loop)",
          "bn-hidden": "BatchNorm1d(hidden)"}


@dataclass
class Config:
    seeds: int = 20
    nchw: tuple[int, int, int, int] = (3, 6, 2, 2)  # (N, C, H, W); small enough for loops and 3D cubes
    sequence: tuple[int, int, int] = (3, 4, 6)  # [batch, seq, hidden]
    num_groups: int = 2  # GroupNorm groups (C and hidden must be divisible)
    eps: float = 1e-5
    tolerance: float = 1e-9  # float64 loops vs layers: "the same numbers"

    checks: ClassVar[dict[str, Check]] = {
        "seeds": seeds_check(1),
        "nchw": items(integer(1), min_len=4, max_len=4),
        "sequence": items(integer(1), min_len=3, max_len=3),
        "num_groups": integer(1),
        "eps": number(0, lo_open=True),
        "tolerance": number(0, lo_open=True),
    }


# ------------------------------------------------------------------------------ the loops (reference)


def _norm(values: list[float], eps: float) -> list[float]:
    """Seed 002's ``Norm(...)``: standardize a list with its own mean and biased variance."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + eps) for v in values]


def _loop_normalize(x: torch.Tensor, key: Callable[[tuple[int, ...]], tuple], eps: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize ``x`` with plain Python loops: elements with the same ``key(index)`` share statistics.

    Returns the normalized tensor and, per element, the id of its statistics group (for the figures).
    """
    groups: dict[tuple, list[tuple[int, ...]]] = {}
    for index in itertools.product(*(range(d) for d in x.shape)):
        groups.setdefault(key(index), []).append(index)
    out, group_id = torch.empty_like(x), torch.empty(x.shape, dtype=torch.long)
    for gid, members in enumerate(groups.values()):
        for index, value in zip(members, _norm([float(x[i]) for i in members], eps), strict=True):
            out[index], group_id[index] = value, gid
    return out, group_id


def _nchw_keys(channels: int, groups: int) -> dict[str, Callable]:
    per_group = channels // groups
    return {
        "batchnorm": lambda i: (i[1],),  # one statistic per channel
        "layernorm": lambda i: (i[0],),  # one per sample
        "instancenorm": lambda i: (i[0], i[1]),  # one per (sample, channel)
        "groupnorm": lambda i: (i[0], i[1] // per_group),  # one per (sample, group of channels)
    }


def _seed002_bn_loop(t: torch.Tensor, eps: float) -> torch.Tensor:
    """Seed 002, verbatim structure: ``for i in seq: for j in hidden: Norm([t[k][i][j] for k in batch])``."""
    batch_size, seq_len, hidden_size = t.shape
    out = torch.empty_like(t)
    for i in range(seq_len):
        for j in range(hidden_size):
            normed = _norm([float(t[k][i][j]) for k in range(batch_size)], eps)
            for k in range(batch_size):
                out[k][i][j] = normed[k]
    return out


def _seed002_ln_loop(t: torch.Tensor, eps: float) -> torch.Tensor:
    """Seed 002, verbatim structure: ``for i in batch: for j in seq: Norm([t[i][j][k] for k in hidden])``."""
    batch_size, seq_len, hidden_size = t.shape
    out = torch.empty_like(t)
    for i in range(batch_size):
        for j in range(seq_len):
            normed = _norm([float(t[i][j][k]) for k in range(hidden_size)], eps)
            for k in range(hidden_size):
                out[i][j][k] = normed[k]
    return out


def _sequence_keys(hidden: int, groups: int) -> dict[str, Callable]:
    per_group = hidden // groups
    return {  # index = (batch, seq, hidden)
        "bn-seed002": lambda i: (i[1], i[2]),
        "bn-hidden": lambda i: (i[2],),
        "layernorm": lambda i: (i[0], i[1]),
        "instancenorm": lambda i: (i[0], i[2]),
        "groupnorm": lambda i: (i[0], i[2] // per_group),
    }


# ------------------------------------------------------------------------------ the layers (checked)


def _nchw_layers(shape: tuple[int, ...], groups: int, eps: float, lib) -> dict[str, torch.nn.Module]:
    _, c, h, w = shape
    kw = {"eps": eps, "dtype": torch.float64}
    return {
        "batchnorm": lib.BatchNorm2d(c, affine=False, **kw),  # train mode: batch statistics
        "layernorm": lib.LayerNorm((c, h, w), elementwise_affine=False, **kw),
        "instancenorm": lib.InstanceNorm2d(c, **kw),
        "groupnorm": lib.GroupNorm(groups, c, affine=False, **kw),
    }


def _sequence_outputs(t: torch.Tensor, groups: int, eps: float, lib) -> dict[str, torch.Tensor]:
    b, s, h = t.shape
    kw = {"eps": eps, "dtype": torch.float64}
    channels_first = t.transpose(1, 2)  # (B, hidden, seq): the layout BatchNorm1d/InstanceNorm1d/GN expect
    return {
        # seed 002's BN loop = one BatchNorm feature per (seq, hidden) position
        "bn-seed002": lib.BatchNorm1d(s * h, affine=False, **kw)(t.reshape(b, s * h)).view(b, s, h),
        "bn-hidden": lib.BatchNorm1d(h, affine=False, **kw)(channels_first).transpose(1, 2),
        "layernorm": lib.LayerNorm(h, elementwise_affine=False, **kw)(t),
        "instancenorm": lib.InstanceNorm1d(h, **kw)(channels_first).transpose(1, 2),
        "groupnorm": lib.GroupNorm(groups, h, affine=False, **kw)(channels_first).transpose(1, 2),
    }


def _state_examples() -> dict[str, torch.nn.Module]:
    """Seed 004's example layers (and seed 002's "what does each norm store")."""
    return {
        "BatchNorm1d(5, momentum=0.3)": nlnn.BatchNorm1d(5, momentum=0.3),
        "BatchNorm2d(3)": nlnn.BatchNorm2d(3),
        "LayerNorm((3, 2, 2))": nlnn.LayerNorm((3, 2, 2)),
        "InstanceNorm2d(3, momentum=0.3)": nlnn.InstanceNorm2d(3, momentum=0.3),
        "InstanceNorm2d(3, affine=True, track_running_stats=True)":
            nlnn.InstanceNorm2d(3, affine=True, track_running_stats=True),
        "GroupNorm(2, 4)": nlnn.GroupNorm(2, 4),
    }


def _state_table() -> pd.DataFrame:
    rows = []
    for label, module in _state_examples().items():
        for kind, named in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
            for name, tensor in named:
                rows.append({"module": label, "kind": kind, "name": name, "shape": str(tuple(tensor.shape)),
                             "numel": tensor.numel()})
        if not any(r["module"] == label for r in rows):
            rows.append({"module": label, "kind": "(none)", "name": "", "shape": "", "numel": 0})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ the study


class NormAxes(Study):
    name = "norm-axes"
    description = "Which axes BN/LN/IN/GN reduce over (images and [batch, seq, hidden]) and what they store"
    seeds_from = ("002", "003", "004")
    Config = Config
    threads = 1  # small kernels: a second intra-op thread only spin-waits on a busy machine
    quick_overrides: ClassVar[dict] = {"seeds": 3}

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        if config.nchw[1] % config.num_groups or config.sequence[2] % config.num_groups:
            raise ValueError(f"num_groups={config.num_groups} must divide C={config.nchw[1]} and "
                             f"hidden={config.sequence[2]}")
        _n, _c, h, w = config.nchw
        if h * w < 2:  # (N * H * W >= 2 for BatchNorm follows)
            raise ConfigError(f"nchw: expected H * W >= 2 (InstanceNorm's variance needs two values per "
                              f"channel), got {config.nchw}")
        if min(config.sequence[:2]) < 2:
            raise ConfigError(f"sequence: expected batch >= 2 and seq >= 2 (BatchNorm's and InstanceNorm's "
                              f"variances need two values), got {config.sequence}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        return [Cell("nchw", seeds), Cell("sequence", seeds), Cell("state", (0,))]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        arm = ctx.cell.arm
        if arm == "state":
            table = _state_table()
            rows = [(0, 0, f"numel/{r.module}/{r.name}", float(r.numel)) for r in table.itertuples() if r.name]
            return CellResult(_long(rows), extra={"state": table})
        shape = config.nchw if arm == "nchw" else config.sequence
        keys = (_nchw_keys(shape[1], config.num_groups) if arm == "nchw"
                else _sequence_keys(shape[2], config.num_groups))
        rows, membership = [], []
        for n, seed in enumerate(ctx.cell.seeds):
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + torch.randn(
                shape[1:], generator=g, dtype=torch.float64)  # position-dependent offsets: sets matter
            loops = {name: _loop_normalize(x, key, config.eps) for name, key in keys.items()}
            if arm == "sequence":  # seed 002's own loop structure, checked against the generic loop too
                loops["bn-seed002-verbatim"] = (_seed002_bn_loop(x, config.eps), None)
                loops["ln-seed002-verbatim"] = (_seed002_ln_loop(x, config.eps), None)
            for lib_name, lib in (("normlab", nlnn), ("torch", torch.nn)):
                with torch.no_grad():
                    if arm == "nchw":
                        outs = {k: layer(x) for k, layer in _nchw_layers(shape, config.num_groups, config.eps,
                                                                          lib).items()}
                    else:
                        outs = _sequence_outputs(x, config.num_groups, config.eps, lib)
                for name, out in outs.items():
                    for loop_name, (ref, _) in loops.items():
                        rows.append((seed, 0, f"maxdiff/{loop_name}/{name}/{lib_name}",
                                     float((out - ref).abs().max())))
            if n == 0:
                for name, (_, gid) in loops.items():
                    if gid is not None:
                        membership.append(_membership(name, gid))
            ctx.progress(n + 1, len(ctx.cell.seeds))
        for name, (_, gid) in loops.items():
            if gid is not None:
                rows.append((ctx.cell.seeds[0], 0, f"statistics/{name}", float(gid.max() + 1)))
                rows.append((ctx.cell.seeds[0], 0, f"set_size/{name}", float(gid.numel() / (gid.max() + 1))))
        return CellResult(_long(rows), extra={"membership": pd.concat(membership, ignore_index=True)})

    def claims(self, run: StoredRun) -> list[Claim]:
        return _claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return [_axes_figure(run, "nchw"), _axes_figure(run, "sequence"), _state_figure(run)]

    def notes(self, run: StoredRun) -> str:
        return NOTES


def _long(rows: list[tuple[int, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["seed", "step", "metric", "value"])


def _membership(norm: str, group_id: torch.Tensor) -> pd.DataFrame:
    idx = np.array(list(itertools.product(*(range(d) for d in group_id.shape))))
    table = pd.DataFrame(idx, columns=[f"d{k}" for k in range(idx.shape[1])])
    table["norm"], table["group"] = norm, group_id.flatten().numpy()
    return table


def _maxdiff(run: StoredRun, arm: str, loop: str, layer: str) -> float:
    m = run.metrics
    sel = (m["arm"] == arm) & m["metric"].isin([f"maxdiff/{loop}/{layer}/normlab", f"maxdiff/{loop}/{layer}/torch"])
    return float(m.loc[sel, "value"].max())


def _claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    n = c.seeds
    out = []
    for norm in NORMS:
        claim = stats.exact_claim(
            f"nchw-{norm}", f"{LABELS[norm]} on (N, C, H, W) averages over the set in the docstring table",
            "seeds 002-004", f"max |layer - explicit loop| over {n} random {c.nchw} tensors, normlab and torch",
            _maxdiff(run, "nchw", norm, norm), 0.0, atol=c.tolerance)
        out.append(claim)
    bn_loop = stats.exact_claim(
        "seed002-bn-loop", "Seed 002's BN loop (per seq position and hidden unit, over the batch) is a "
        "BatchNorm", SEED_002, "max |BatchNorm1d(seq*hidden) on [batch, seq*hidden] - seed 002's loop|",
        _maxdiff(run, "sequence", "bn-seed002-verbatim", "bn-seed002"), 0.0, atol=c.tolerance)
    ln_loop = stats.exact_claim(
        "seed002-ln-loop", "Seed 002's LN loop (per token, over hidden) is LayerNorm(hidden)", SEED_002,
        "max |LayerNorm(hidden) - seed 002's loop|", _maxdiff(run, "sequence", "ln-seed002-verbatim", "layernorm"),
        0.0, atol=c.tolerance)
    usual = stats.exact_claim(
        "seed002-bn-loop-is-batchnorm1d-hidden", "Seed 002's BN loop is what BatchNorm1d(hidden) computes on a "
        "[batch, hidden, seq] sequence", "control",
        "max |BatchNorm1d(hidden) on the transposed sequence - seed 002's BN loop|",
        _maxdiff(run, "sequence", "bn-seed002-verbatim", "bn-hidden"), 0.0, atol=c.tolerance)
    usual.detail += ("; BatchNorm1d(hidden) shares one statistic per hidden unit over batch *and* seq: "
                     f"{_maxdiff(run, 'sequence', 'bn-hidden', 'bn-hidden'):.2g} from the loop that does that")
    out += [bn_loop, ln_loop, usual]

    state = run.extra["state"]

    def shape_of(module: str, name: str) -> str:
        hit = state[(state["module"] == module) & (state["name"] == name)]
        return hit["shape"].iloc[0] if len(hit) else "absent"

    checks = [
        ("bn-state", "BatchNorm stores weight, bias, running_mean, running_var, each of size num_features",
         SEED_004, "BatchNorm2d(3)", {"weight": "(3,)", "bias": "(3,)", "running_mean": "(3,)",
                                       "running_var": "(3,)"}),
        ("ln-state", "LayerNorm((3, 2, 2)) has weight and bias of shape (3, 2, 2) and no running statistics",
         SEED_004, "LayerNorm((3, 2, 2))", {"weight": "(3, 2, 2)", "bias": "(3, 2, 2)", "running_mean": "absent"}),
        ("gn-state", "GroupNorm has per-channel gamma and beta and no running statistics", SEED_004,
         "GroupNorm(2, 4)", {"weight": "(4,)", "bias": "(4,)", "running_mean": "absent"}),
        ("in-state-default", "InstanceNorm2d(3, momentum=0.3) as in seed 004 stores nothing (affine=False and "
         "track_running_stats=False by default, so its momentum is unused)", SEED_004,
         "InstanceNorm2d(3, momentum=0.3)", {"weight": "absent", "running_mean": "absent"}),
    ]
    for cid, text, source, module, expected in checks:
        mismatches = sum(shape_of(module, k) != v for k, v in expected.items())
        claim = stats.exact_claim(cid, text, source, f"parameters and buffers of {module}", float(mismatches), 0.0,
                                  atol=0.0)
        claim.detail = "; ".join(f"{k}: {shape_of(module, k)} (expected {v})" for k, v in expected.items())
        out.append(claim)
    return out


# ------------------------------------------------------------------------------------------- figures


def _axes_figure(run: StoredRun, arm: str) -> Figure:
    c: Config = run.config
    table = run.extra["membership"]
    table = table[table["arm"] == arm]
    names = ["batchnorm", "layernorm", "instancenorm", "groupnorm"]
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
    extra = ("" if arm == "nchw" else " 'BatchNorm (seed 002's loop)' is seed 002's BN loop: one statistic per "
             "(seq, hidden) over the batch; 'BatchNorm1d(hidden)' is how BN is applied to sequences in torch "
             "(over batch and seq).")
    return Figure(
        f"axes_{arm}", f"Which elements share one mean and variance: {what}",
        f"Each cube is the tensor {what}; the blue cells are the elements that share one mean and variance with "
        f"the element at the front top-left corner (one normalization set), grey cells belong to other sets. The sets were "
        f"recorded by the explicit loops that the layers were checked against (GroupNorm: {c.num_groups} "
        f"groups).{extra}", fig)


def _state_figure(run: StoredRun) -> Figure:
    state = run.extra["state"]
    cells = [[r.module, r.kind, r.name, r.shape] for r in state.itertuples()]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(cells) + 0.8))
    ax.axis("off")
    tab = ax.table(cellText=cells, colLabels=["module", "kind", "name", "shape"], loc="center", cellLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.auto_set_column_width([0, 1, 2, 3])
    fig.tight_layout()
    return Figure(
        "state", "What each norm stores: parameters and buffers",
        "One row per parameter (learned, gamma = weight, beta = bias) or buffer (saved with the model, not "
        "learned) of seed 004's example layers, read from the layers themselves. BatchNorm stores per-channel "
        "running statistics; LayerNorm's affine has the shape of normalized_shape; GroupNorm's is per channel; "
        "InstanceNorm stores nothing unless affine / track_running_stats are switched on.", fig)


NOTES = """\
Seed 002 explains BN and LN on BERT's [batch_size, seq_len, hidden_size] with two loops; they are run here
verbatim (on float64 tensors) and compared with the layers. Its BN loop keeps one statistic per (position,
hidden unit), which is BatchNorm1d over the flattened seq*hidden features; the way BatchNorm is normally
applied to sequences in PyTorch (BatchNorm1d(hidden) on [batch, hidden, seq]) pools the positions too, and the
control claim shows the two differ. Seeds 003 and 004 describe IN and GN in words; the image figure shows
the four sets side by side as in the GroupNorm paper's Figure 2, drawn from the loops that were checked.
"""
