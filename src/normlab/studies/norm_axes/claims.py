"""norm-axes' claims: each layer matches its loop, post 002's loops are the layers they name, post 004's reading of
LayerNorm, which norms look at other samples or other positions, and what each norm stores."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, KeyNumber, StoredRun
from normlab.kit import stats
from normlab.studies.norm_axes.config import LABELS, NORMS, SEED_002, SEED_003, SEED_004, Config

NOTES = """\
Post 002 explains BN and LN on BERT's [batch, seq, hidden] with two loops; they are run here verbatim (on float64
tensors) and compared with the layers. Its BN loop keeps one statistic per (position, hidden unit), which is
BatchNorm1d over the flattened seq*hidden features; the way BatchNorm is normally applied to sequences in PyTorch
(BatchNorm1d(hidden) on [batch, hidden, seq]) pools the positions too, and the control claim shows the two differ.
Seeds 003 and 004 describe IN and GN in words; the image figure shows the four sets side by side as in the
GroupNorm paper's Figure 2, drawn from the loops that were checked. Post 004 reads LayerNorm((3, 2, 2))'s
weight of shape (3, 2, 2) as "LayerNorm computes mean and variance more or less element-wise": the claim
`seed004-ln-elementwise-stats` checks that reading against the layer (the affine is element-wise; the statistics
are one per sample).

Checks over random tensors take the worst case over the seeds (unit: seed, one random tensor each): a layer
"averages over a set" when it matches that set's loop to float64 rounding on every tensor, and one tensor that
does not match refutes it. The state claims are deterministic (unit: exact).
"""

UNIT = "seed"  # one random input tensor per seed


def per_seed(run: StoredRun, arm: str, metrics: list[str]) -> np.ndarray:
    """Per seed: the largest value among ``metrics`` (e.g. one layer against one loop, for normlab and torch)."""
    m = run.metrics
    sel = m[(m["arm"] == arm) & m["metric"].isin(metrics)]
    if sel.empty:
        return np.array([])
    return sel.groupby("seed")["value"].max().sort_index().to_numpy(dtype=np.float64)


def libs(name: str) -> list[str]:
    return [f"{name}/normlab", f"{name}/torch"]


def maxdiff(run: StoredRun, arm: str, loop: str, layer: str) -> np.ndarray:
    return per_seed(run, arm, libs(f"maxdiff/{loop}/{layer}"))


def bound_claim(id: str, claim: str, source: str, measurement: str, values: np.ndarray, bound: float,
                side: str) -> Claim:
    """A property of *every* random tensor (one per seed): the kit's worst-case claim (one counterexample
    refutes; no tensors of the kind in the run: inconclusive)."""
    return stats.bound_claim(id, claim, source, measurement, values, bound, side, unit=UNIT, what="random tensors")


def trusted_only_if(claim: Claim, control: Claim) -> Claim:
    """A 'does not depend' claim is only as good as the instrument: if the control that must depend does not,
    the claim is inconclusive."""
    if control.verdict != "supported" and claim.verdict == "supported":
        claim.verdict = "inconclusive"
        claim.detail += f"; control {control.id} did not show the dependence, so the check is not trusted"
    return claim


def state_claims(state: pd.DataFrame) -> list[Claim]:
    def describe(module: str, name: str) -> str:
        hit = state[(state["module"] == module) & (state["name"] == name)]
        if hit.empty:
            return "absent"
        r = hit.iloc[0]
        return f"{r['kind']} {r['shape']}" + (" saved" if bool(r.get("saved", False)) else "") + (
            " learned" if bool(r.get("learned", False)) else "")

    checks = [
        ("bn-state", "BatchNorm stores a learned gamma (weight) and beta (bias) and running mean and variance, each "
         "one per feature (num_features), all saved with the model", f"{SEED_002}, {SEED_004}",
         {"BatchNorm2d(3)": {"weight": "parameter (3,) saved learned", "bias": "parameter (3,) saved learned",
                             "running_mean": "buffer (3,) saved", "running_var": "buffer (3,) saved"},
          "BatchNorm1d(5, momentum=0.3)": {"weight": "parameter (5,) saved learned",
                                           "running_mean": "buffer (5,) saved", "running_var": "buffer (5,) saved"}}),
        ("ln-state", "LayerNorm((3, 2, 2)) has weight and bias of shape (3, 2, 2) (element-wise) and no running "
         "statistics", f"{SEED_002}, {SEED_004}",
         {"LayerNorm((3, 2, 2))": {"weight": "parameter (3, 2, 2) saved learned",
                                   "bias": "parameter (3, 2, 2) saved learned", "running_mean": "absent",
                                   "running_var": "absent"}}),
        ("gn-state", "GroupNorm has per-channel gamma and beta and no running statistics", SEED_004,
         {"GroupNorm(2, 4)": {"weight": "parameter (4,) saved learned", "bias": "parameter (4,) saved learned",
                              "running_mean": "absent", "running_var": "absent"}}),
        ("in-state-default", "InstanceNorm2d(3, momentum=0.3) as in post 004 stores nothing (affine=False and "
         "track_running_stats=False by default, so its momentum is unused)", SEED_004,
         {"InstanceNorm2d(3, momentum=0.3)": {"weight": "absent", "bias": "absent", "running_mean": "absent",
                                              "running_var": "absent"}}),
        ("in-state-options", "InstanceNorm2d with affine=True and track_running_stats=True stores per-channel gamma, "
         "beta and running statistics, like BatchNorm (post 004 lists these parameters)", SEED_004,
         {"InstanceNorm2d(3, affine=True, track_running_stats=True)": {
             "weight": "parameter (3,) saved learned", "bias": "parameter (3,) saved learned",
             "running_mean": "buffer (3,) saved", "running_var": "buffer (3,) saved"}}),
    ]
    out = []
    for cid, text, source, expected in checks:
        found = [(mod, k, describe(mod, k), v) for mod, names in expected.items() for k, v in names.items()]
        mismatches = sum(got != want for _, _, got, want in found)
        claim = stats.exact_claim(cid, text, source, f"parameters and buffers of {', '.join(expected)} (count of "
                                  "entries that differ from the claim)", float(mismatches), 0.0, atol=0.0)
        claim.detail = "; ".join(f"{mod}.{k}: {got}" + ("" if got == want else f" (claim: {want})")
                                 for mod, k, got, want in found)
        out.append(claim)
    return out


def claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    tol = c.tolerance
    out = []
    what = {"batchnorm": "per channel over N, H, W", "layernorm": "per sample over C, H, W",
            "instancenorm": "per (sample, channel) over H, W", "groupnorm": "per (sample, group of channels) over the "
            "group's C, H, W"}
    src = {"batchnorm": f"{SEED_002}, {SEED_003}, {SEED_004}", "layernorm": f"{SEED_003}, {SEED_004}",
           "instancenorm": f"{SEED_003}, {SEED_004}", "groupnorm": f"{SEED_003}, {SEED_004}"}
    for norm in NORMS:
        out.append(bound_claim(
            f"nchw-{norm}", f"{LABELS[norm]} on (N, C, H, W) normalizes {what[norm]}", src[norm],
            f"per random {c.nchw} tensor: max |layer - explicit loop| (normlab and torch)",
            maxdiff(run, "nchw", norm, norm), tol, "below"))
    out.append(bound_claim(
        "seed004-ln-elementwise-stats", "LayerNorm((C, H, W)) computes its mean and variance element-wise (one "
        "statistic per (c, h, w) element, over the batch)", SEED_004,
        "per random tensor: max |LayerNorm((C, H, W)) - loop with one statistic per (c, h, w) over N|",
        maxdiff(run, "nchw", "ln-elementwise", "layernorm"), tol, "below"))
    out[-1].detail += f"; against one statistic per sample: {maxdiff(run, 'nchw', 'layernorm', 'layernorm').max():.2g}"
    out.append(bound_claim(
        "seed002-bn-loop", "Post 002's BN loop (per seq position and hidden unit, over the batch) is a BatchNorm",
        SEED_002, "per random tensor: max |BatchNorm1d(seq*hidden) on [batch, seq*hidden] - post 002's loop|",
        maxdiff(run, "sequence", "bn-seed002-verbatim", "bn-seed002"), tol, "below"))
    out.append(bound_claim(
        "seed002-ln-loop", "Post 002's LN loop (per token, over hidden) is LayerNorm(hidden)", SEED_002,
        "per random tensor: max |LayerNorm(hidden) - post 002's loop|",
        maxdiff(run, "sequence", "ln-seed002-verbatim", "layernorm"), tol, "below"))
    usual = bound_claim(
        "seed002-bn-loop-is-batchnorm1d-hidden", "Post 002's BN loop is what BatchNorm1d(hidden) computes on a "
        "[batch, hidden, seq] sequence", "control",
        "per random tensor: max |BatchNorm1d(hidden) on the transposed sequence - post 002's BN loop|",
        maxdiff(run, "sequence", "bn-seed002-verbatim", "bn-hidden"), tol, "below")
    pooled = maxdiff(run, "sequence", "bn-hidden", "bn-hidden")
    usual.detail += ("; BatchNorm1d(hidden) shares one statistic per hidden unit over batch *and* seq: "
                     f"{pooled.max() if pooled.size else float('nan'):.2g} from the loop that does that")
    out.append(usual)

    # Who looks at the other samples of the batch, and at the other positions of a sequence.
    bn_dep = bound_claim(
        "bn-depends-on-batch", "Control: BatchNorm's output for a sample changes when the other samples change",
        "control", "per random tensor: smallest over BN layers (BatchNorm2d; post 002's BN; BatchNorm1d(hidden)) "
        "of max |sample 0's output - its output when the other samples are redrawn|",
        np.minimum(per_seed(run, "nchw", libs("batch_dependence/batchnorm")),
                   np.minimum(per_seed(run, "sequence", libs("batch_dependence/bn-seed002")),
                              per_seed(run, "sequence", libs("batch_dependence/bn-hidden")))), tol, "above")
    per_sample = bound_claim(
        "ln-in-gn-per-sample", "LayerNorm, InstanceNorm and GroupNorm normalize each sample on its own: its output "
        "does not depend on the other samples of the batch", f"{SEED_003}, {SEED_004}",
        "per random tensor: largest over LN, IN, GN (images and sequences) of max |sample 0's output - its output "
        "when the other samples are redrawn|",
        np.maximum(per_seed(run, "nchw", [f"batch_dependence/{n}/{lib}" for n in NORMS[1:]
                                          for lib in ("normlab", "torch")]),
                   per_seed(run, "sequence", [f"batch_dependence/{n}/{lib}" for n in NORMS[1:]
                                              for lib in ("normlab", "torch")])), tol, "below")
    pooling = bound_claim(
        "in-gn-depend-on-length", "Control: InstanceNorm, GroupNorm and BatchNorm1d(hidden) on a sequence pool over "
        "its positions, so dropping the last token changes the others' outputs", "control",
        "per random tensor: smallest over IN, GN, BatchNorm1d(hidden) of max |output of the first seq-1 tokens - "
        "their output in a sequence one token shorter|",
        per_seed_min(run, "sequence", ["instancenorm", "groupnorm", "bn-hidden"]), tol, "above")
    length = bound_claim(
        "ln-independent-of-length", "LayerNorm does not depend on the sequence length: each token is normalized "
        "over its hidden units alone", SEED_003,
        "per random tensor: max |LN output of the first seq-1 tokens - their LN output in a sequence one token "
        "shorter|", per_seed(run, "sequence", libs("length_dependence/layernorm")), tol, "below")
    out += [bn_dep, trusted_only_if(per_sample, bn_dep), pooling, trusted_only_if(length, pooling)]
    return out + state_claims(run.extra["state"])


def per_seed_min(run: StoredRun, arm: str, names: list[str]) -> np.ndarray:
    """Per seed: the smallest, over layers ``names``, of each layer's length dependence (max over libraries)."""
    cols = [per_seed(run, arm, libs(f"length_dependence/{n}")) for n in names]
    if any(col.size == 0 for col in cols):
        return np.array([])
    return np.min(np.vstack(cols), axis=0)


def notes(run: StoredRun) -> str:
    return NOTES


def key_numbers(run: StoredRun) -> list[KeyNumber]:
    """What each layer's output depends on, per input layout: how far sample 0's output moves when the batch's
    other samples change, and (sequences) how far the first positions move when the last is dropped (max over
    normlab and torch; 0 = independent). Signed scale: an exact 0 is the answer for most layers, so no log."""
    out: list[KeyNumber] = []
    m = run.metrics
    for arm, kind, what in (("nchw", "batch_dependence", "images (N, C, H, W)"),
                            ("sequence", "batch_dependence", "sequences (batch, seq, hidden)"),
                            ("sequence", "length_dependence", "sequences (batch, seq, hidden)")):
        names = sorted({k.split("/")[1] for k in m.loc[(m["arm"] == arm) & m["metric"].str.startswith(kind + "/"),
                                                        "metric"]})
        change = ("the batch's other samples change" if kind == "batch_dependence" else
                  "the sequence's last position is dropped")
        for name in names:
            v = per_seed(run, arm, libs(f"{kind}/{name}"))
            if v.size:
                out.append(KeyNumber(f"max |output change| when {change}, {what}", LABELS.get(name, name),
                                     tuple(v), "nonnegative", UNIT))
    return out
