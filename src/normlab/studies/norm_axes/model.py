"""What a norm-axes cell computes: every norm written as explicit loops (the reference), the layers checked
against them, and the parameters and buffers of post 004's example layers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from normlab import nn as nlnn
from normlab.engine.spec import CellResult
from normlab.kit.tables import metric_rows
from normlab.studies.norm_axes.config import Config

# ------------------------------------------------------------------------------ the loops (reference)


def standardize(values: list[float], eps: float) -> list[float]:
    """Post 002's ``Norm(...)``: standardize a list with its own mean and biased variance."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + eps) for v in values]


def loop_normalize(x: torch.Tensor, key: Callable[[tuple[int, ...]], tuple], eps: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize ``x`` with plain Python loops: elements with the same ``key(index)`` share statistics.

    Returns the normalized tensor and, per element, the id of its statistics group (for the figures).
    """
    groups: dict[tuple, list[tuple[int, ...]]] = {}
    for index in itertools.product(*(range(d) for d in x.shape)):
        groups.setdefault(key(index), []).append(index)
    out, group_id = torch.empty_like(x), torch.empty(x.shape, dtype=torch.long)
    for gid, members in enumerate(groups.values()):
        for index, value in zip(members, standardize([float(x[i]) for i in members], eps), strict=True):
            out[index], group_id[index] = value, gid
    return out, group_id


def nchw_keys(channels: int, groups: int) -> dict[str, Callable]:
    per_group = channels // groups
    return {
        "batchnorm": lambda i: (i[1],),  # one statistic per channel
        "layernorm": lambda i: (i[0],),  # one per sample
        "instancenorm": lambda i: (i[0], i[1]),  # one per (sample, channel)
        "groupnorm": lambda i: (i[0], i[1] // per_group),  # one per (sample, group of channels)
        # post 004's reading of LayerNorm((C, H, W)): "more like computing mean and variance element-wise",
        # i.e. one statistic per (c, h, w) element, over the batch (the claims check LayerNorm against it)
        "ln-elementwise": lambda i: (i[1], i[2], i[3]),
    }


def seed002_bn_loop(t: torch.Tensor, eps: float) -> torch.Tensor:
    """Post 002, verbatim structure: ``for i in seq: for j in hidden: Norm([t[k][i][j] for k in batch])``."""
    batch_size, seq_len, hidden_size = t.shape
    out = torch.empty_like(t)
    for i in range(seq_len):
        for j in range(hidden_size):
            normed = standardize([float(t[k][i][j]) for k in range(batch_size)], eps)
            for k in range(batch_size):
                out[k][i][j] = normed[k]
    return out


def seed002_ln_loop(t: torch.Tensor, eps: float) -> torch.Tensor:
    """Post 002, verbatim structure: ``for i in batch: for j in seq: Norm([t[i][j][k] for k in hidden])``."""
    batch_size, seq_len, hidden_size = t.shape
    out = torch.empty_like(t)
    for i in range(batch_size):
        for j in range(seq_len):
            normed = standardize([float(t[i][j][k]) for k in range(hidden_size)], eps)
            for k in range(hidden_size):
                out[i][j][k] = normed[k]
    return out


def sequence_keys(hidden: int, groups: int) -> dict[str, Callable]:
    per_group = hidden // groups
    return {  # index = (batch, seq, hidden)
        "bn-seed002": lambda i: (i[1], i[2]),
        "bn-hidden": lambda i: (i[2],),
        "layernorm": lambda i: (i[0], i[1]),
        "instancenorm": lambda i: (i[0], i[2]),
        "groupnorm": lambda i: (i[0], i[2] // per_group),
    }


# ------------------------------------------------------------------------------ the layers (checked)


def nchw_layers(shape: tuple[int, ...], groups: int, eps: float, lib) -> dict[str, torch.nn.Module]:
    _, c, h, w = shape
    kw = {"eps": eps, "dtype": torch.float64}
    return {
        "batchnorm": lib.BatchNorm2d(c, affine=False, **kw),  # train mode: batch statistics
        "layernorm": lib.LayerNorm((c, h, w), elementwise_affine=False, **kw),
        "instancenorm": lib.InstanceNorm2d(c, **kw),
        "groupnorm": lib.GroupNorm(groups, c, affine=False, **kw),
    }


def sequence_outputs(t: torch.Tensor, groups: int, eps: float, lib) -> dict[str, torch.Tensor]:
    b, s, h = t.shape
    kw = {"eps": eps, "dtype": torch.float64}
    channels_first = t.transpose(1, 2)  # (B, hidden, seq): the layout BatchNorm1d/InstanceNorm1d/GN expect
    return {
        # post 002's BN loop = one BatchNorm feature per (seq, hidden) position
        "bn-seed002": lib.BatchNorm1d(s * h, affine=False, **kw)(t.reshape(b, s * h)).view(b, s, h),
        "bn-hidden": lib.BatchNorm1d(h, affine=False, **kw)(channels_first).transpose(1, 2),
        "layernorm": lib.LayerNorm(h, elementwise_affine=False, **kw)(t),
        "instancenorm": lib.InstanceNorm1d(h, **kw)(channels_first).transpose(1, 2),
        "groupnorm": lib.GroupNorm(groups, h, affine=False, **kw)(channels_first).transpose(1, 2),
    }


def state_examples() -> dict[str, torch.nn.Module]:
    """Post 004's example layers (and post 002's "what does each norm store")."""
    return {
        "BatchNorm1d(5, momentum=0.3)": nlnn.BatchNorm1d(5, momentum=0.3),
        "BatchNorm2d(3)": nlnn.BatchNorm2d(3),
        "LayerNorm((3, 2, 2))": nlnn.LayerNorm((3, 2, 2)),
        "InstanceNorm2d(3, momentum=0.3)": nlnn.InstanceNorm2d(3, momentum=0.3),
        "InstanceNorm2d(3, affine=True, track_running_stats=True)":
            nlnn.InstanceNorm2d(3, affine=True, track_running_stats=True),
        "GroupNorm(2, 4)": nlnn.GroupNorm(2, 4),
    }


def state_table() -> pd.DataFrame:
    rows = []
    for label, module in state_examples().items():
        for kind, named in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
            for name, tensor in named:
                rows.append({"module": label, "kind": kind, "name": name, "shape": str(tuple(tensor.shape)),
                             "numel": tensor.numel(), "saved": name in module.state_dict(),
                             "learned": bool(tensor.requires_grad)})
        if not any(r["module"] == label for r in rows):
            rows.append({"module": label, "kind": "(none)", "name": "", "shape": "", "numel": 0, "saved": False,
                         "learned": False})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- the cells


def layer_outputs(config: Config, arm: str, x: torch.Tensor, lib) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if arm == "nchw":
            return {k: layer(x) for k, layer in nchw_layers(tuple(x.shape), config.num_groups, config.eps, lib).items()}
        return sequence_outputs(x, config.num_groups, config.eps, lib)


def dependence(config: Config, arm: str, x: torch.Tensor, outs: dict[str, torch.Tensor], g: torch.Generator,
               lib) -> dict[str, dict[str, float]]:
    """How much each layer's output moves when what it should not see changes.

    ``batch_dependence``: sample 0's output when every other sample of the batch is replaced by fresh random
    values. ``length_dependence`` (sequences with seq >= 3): the first seq-1 positions' outputs when the last
    position is dropped (a shorter sequence)."""
    other = x.clone()
    other[1:] = torch.randn(other[1:].shape, generator=g, dtype=x.dtype) * 3 + 1
    moved = layer_outputs(config, arm, other, lib)
    out = {"batch_dependence": {k: float((outs[k][0] - moved[k][0]).abs().max()) for k in outs}}
    if arm == "sequence" and x.shape[1] >= 3:
        short = layer_outputs(config, arm, x[:, :-1], lib)
        out["length_dependence"] = {k: float((outs[k][:, :-1] - short[k]).abs().max()) for k in outs}
    return out



def membership(norm: str, group_id: torch.Tensor) -> pd.DataFrame:
    """Which statistics set each element belongs to: one row per element, its index as ``d0, d1, ...``."""
    idx = np.array(list(itertools.product(*(range(d) for d in group_id.shape))))
    table = pd.DataFrame(idx, columns=[f"d{k}" for k in range(idx.shape[1])])
    table["norm"], table["group"] = norm, group_id.flatten().numpy()
    return table


def state_cell() -> CellResult:
    table = state_table()
    rows = [(0, 0, f"numel/{r.module}/{r.name}", float(r.numel)) for r in table.itertuples() if r.name]
    return CellResult(metric_rows(rows), extra={"state": table})


def tensors_cell(config: Config, arm: str, seeds: Sequence[int], progress: Callable[[int, int], None]
                 ) -> CellResult:
    """Arm ``nchw`` or ``sequence``: per seed, max |layer - loop| for every layer (normlab's and torch's)
    against every loop; the first seed's statistics sets for the figures."""
    shape = config.nchw if arm == "nchw" else config.sequence
    keys = nchw_keys(shape[1], config.num_groups) if arm == "nchw" else sequence_keys(shape[2], config.num_groups)
    rows, sets = [], []
    for n, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + torch.randn(
            shape[1:], generator=g, dtype=torch.float64)  # position-dependent offsets: sets matter
        loops = {name: loop_normalize(x, key, config.eps) for name, key in keys.items()}
        if arm == "sequence":  # post 002's own loop structure, checked against the generic loop too
            loops["bn-seed002-verbatim"] = (seed002_bn_loop(x, config.eps), None)
            loops["ln-seed002-verbatim"] = (seed002_ln_loop(x, config.eps), None)
        for lib_name, lib in (("normlab", nlnn), ("torch", torch.nn)):
            outs = layer_outputs(config, arm, x, lib)
            for name, out in outs.items():
                for loop_name, (ref, _) in loops.items():
                    rows.append((seed, 0, f"maxdiff/{loop_name}/{name}/{lib_name}",
                                 float((out - ref).abs().max())))
            for what, diff in dependence(config, arm, x, outs, g, lib).items():
                for name, value in diff.items():
                    rows.append((seed, 0, f"{what}/{name}/{lib_name}", value))
        if n == 0:
            for name, (_, gid) in loops.items():
                if gid is not None:
                    sets.append(membership(name, gid))
        progress(n + 1, len(seeds))
    for name, (_, gid) in loops.items():
        if gid is not None:
            rows.append((seeds[0], 0, f"statistics/{name}", float(gid.max() + 1)))
            rows.append((seeds[0], 0, f"set_size/{name}", float(gid.numel() / (gid.max() + 1))))
    return CellResult(metric_rows(rows), extra={"membership": pd.concat(sets, ignore_index=True)})
