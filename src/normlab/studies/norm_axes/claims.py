"""norm-axes' claims: each layer matches its loop, seed 002's loops are the layers they name, and each norm
stores what seeds 002 and 004 say."""

from __future__ import annotations

from normlab.engine.spec import Claim, StoredRun
from normlab.kit import stats
from normlab.studies.norm_axes.config import LABELS, NORMS, SEED_002, SEED_004, Config

NOTES = """\
Seed 002 explains BN and LN on BERT's [batch_size, seq_len, hidden_size] with two loops; they are run here
verbatim (on float64 tensors) and compared with the layers. Its BN loop keeps one statistic per (position,
hidden unit), which is BatchNorm1d over the flattened seq*hidden features; the way BatchNorm is normally
applied to sequences in PyTorch (BatchNorm1d(hidden) on [batch, hidden, seq]) pools the positions too, and the
control claim shows the two differ. Seeds 003 and 004 describe IN and GN in words; the image figure shows
the four sets side by side as in the GroupNorm paper's Figure 2, drawn from the loops that were checked.
"""


def maxdiff(run: StoredRun, arm: str, loop: str, layer: str) -> float:
    m = run.metrics
    sel = (m["arm"] == arm) & m["metric"].isin([f"maxdiff/{loop}/{layer}/normlab", f"maxdiff/{loop}/{layer}/torch"])
    return float(m.loc[sel, "value"].max())


def claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    n = c.seeds
    out = []
    for norm in NORMS:
        claim = stats.exact_claim(
            f"nchw-{norm}", f"{LABELS[norm]} on (N, C, H, W) averages over the set in the docstring table",
            "seeds 002-004", f"max |layer - explicit loop| over {n} random {c.nchw} tensors, normlab and torch",
            maxdiff(run, "nchw", norm, norm), 0.0, atol=c.tolerance)
        out.append(claim)
    bn_loop = stats.exact_claim(
        "seed002-bn-loop", "Seed 002's BN loop (per seq position and hidden unit, over the batch) is a "
        "BatchNorm", SEED_002, "max |BatchNorm1d(seq*hidden) on [batch, seq*hidden] - seed 002's loop|",
        maxdiff(run, "sequence", "bn-seed002-verbatim", "bn-seed002"), 0.0, atol=c.tolerance)
    ln_loop = stats.exact_claim(
        "seed002-ln-loop", "Seed 002's LN loop (per token, over hidden) is LayerNorm(hidden)", SEED_002,
        "max |LayerNorm(hidden) - seed 002's loop|", maxdiff(run, "sequence", "ln-seed002-verbatim", "layernorm"),
        0.0, atol=c.tolerance)
    usual = stats.exact_claim(
        "seed002-bn-loop-is-batchnorm1d-hidden", "Seed 002's BN loop is what BatchNorm1d(hidden) computes on a "
        "[batch, hidden, seq] sequence", "control",
        "max |BatchNorm1d(hidden) on the transposed sequence - seed 002's BN loop|",
        maxdiff(run, "sequence", "bn-seed002-verbatim", "bn-hidden"), 0.0, atol=c.tolerance)
    usual.detail += ("; BatchNorm1d(hidden) shares one statistic per hidden unit over batch *and* seq: "
                     f"{maxdiff(run, 'sequence', 'bn-hidden', 'bn-hidden'):.2g} from the loop that does that")
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


def notes(run: StoredRun) -> str:
    return NOTES
