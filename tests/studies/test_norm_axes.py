"""norm-axes: the explicit loops are right (numpy oracle), layers agree with them, state shapes, verdicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from normlab.engine.spec import CellContext, StoredRun
from normlab.studies.norm_axes import (
    Config,
    NormAxes,
    loop_normalize,
    nchw_keys,
    seed002_bn_loop,
    seed002_ln_loop,
    sequence_keys,
)

STUDY = NormAxes()
EPS = 1e-5


def _standardize(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + EPS)  # numpy var: biased


def test_loops_against_numpy_reductions():
    x = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    a = x.numpy()
    g = a.reshape(3, 2, 2, 2, 3)  # (N, groups, C/groups, H, W)
    expected = {
        "batchnorm": _standardize(a, (0, 2, 3)),
        "layernorm": _standardize(a, (1, 2, 3)),
        "instancenorm": _standardize(a, (2, 3)),
        "groupnorm": _standardize(g, (2, 3, 4)).reshape(a.shape),
        "ln-elementwise": _standardize(a, (0,)),  # seed 004's reading: per (c, h, w), over the batch
    }
    for name, key in nchw_keys(4, 2).items():
        out, group_id = loop_normalize(x, key, EPS)
        np.testing.assert_allclose(out.numpy(), expected[name], atol=1e-12, err_msg=name)
        assert group_id.max() + 1 == {"batchnorm": 4, "layernorm": 3, "instancenorm": 12, "groupnorm": 6,
                                      "ln-elementwise": 24}[name]


def test_seed002_loops_equal_the_generic_loops_and_numpy():
    t = torch.randn(3, 4, 6, dtype=torch.float64)  # [batch, seq, hidden]
    keys = sequence_keys(6, 2)
    np.testing.assert_allclose(seed002_bn_loop(t, EPS).numpy(), _standardize(t.numpy(), (0,)), atol=1e-12)
    np.testing.assert_allclose(seed002_ln_loop(t, EPS).numpy(), _standardize(t.numpy(), (2,)), atol=1e-12)
    assert torch.allclose(seed002_bn_loop(t, EPS), loop_normalize(t, keys["bn-seed002"], EPS)[0])
    assert torch.allclose(seed002_ln_loop(t, EPS), loop_normalize(t, keys["layernorm"], EPS)[0])


@pytest.fixture(scope="module")
def run() -> StoredRun:
    config = Config(**NormAxes.quick_overrides)
    metrics, extra = [], {}
    for cell in STUDY.cells(config):
        res = STUDY.run_cell(config, CellContext(cell, torch.device("cpu"), Path("."), None))
        metrics.append(res.metrics.assign(arm=cell.arm))
        for name, table in res.extra.items():
            extra.setdefault(name, []).append(table.assign(arm=cell.arm))
    return StoredRun(config, pd.concat(metrics, ignore_index=True), pd.DataFrame(), pd.DataFrame(),
                     {k: pd.concat(v, ignore_index=True) for k, v in extra.items()}, Path("."))


REAL_VERDICTS = {
    "nchw-batchnorm": "supported", "nchw-layernorm": "supported", "nchw-instancenorm": "supported",
    "nchw-groupnorm": "supported", "seed004-ln-elementwise-stats": "refuted", "seed002-bn-loop": "supported",
    "seed002-ln-loop": "supported", "seed002-bn-loop-is-batchnorm1d-hidden": "refuted",
    "bn-depends-on-batch": "supported", "ln-in-gn-per-sample": "supported", "in-gn-depend-on-length": "supported",
    "ln-independent-of-length": "supported", "bn-state": "supported", "ln-state": "supported",
    "gn-state": "supported", "in-state-default": "supported", "in-state-options": "supported",
}


def test_layers_agree_with_loops_and_the_usual_bn_does_not(run):
    claims = {c.id: c for c in STUDY.claims(run)}
    assert {k: c.verdict for k, c in claims.items()} == REAL_VERDICTS, {k: c.detail for k, c in claims.items()}
    assert claims["seed002-bn-loop-is-batchnorm1d-hidden"].value > 0.1
    assert claims["seed004-ln-elementwise-stats"].value > 0.1


def test_units_and_n(run):
    for c in STUDY.claims(run):
        if c.id.endswith("-state") or c.id.startswith(("in-state", "bn-state")):
            assert (c.unit, c.n) == ("exact", None), c.id
        else:
            assert (c.unit, c.n) == ("seed", run.config.seeds), c.id


# ------------------------------------------------------------------------ every verdict can flip


def _replace(run: StoredRun, arm: str, metric_prefix: str, value: float, seed: int | None = 0) -> StoredRun:
    """The stored run with ``value`` written into every metric of ``arm`` starting with ``metric_prefix``
    (for one seed, or all seeds with ``seed=None``)."""
    m = run.metrics.copy()
    hit = (m["arm"] == arm) & m["metric"].str.startswith(metric_prefix)
    if seed is not None:
        hit &= m["seed"] == seed
    assert hit.any(), (arm, metric_prefix)
    m.loc[hit, "value"] = value
    return dataclasses.replace(run, metrics=m)


def _verdicts(run: StoredRun) -> dict[str, str]:
    return {c.id: c.verdict for c in STUDY.claims(run)}


@pytest.mark.parametrize(("arm", "prefix", "value", "seed", "expected"), [
    # one tensor where a layer misses its loop refutes the claim
    ("nchw", "maxdiff/batchnorm/batchnorm/torch", 0.3, 1, {"nchw-batchnorm": "refuted"}),
    ("nchw", "maxdiff/layernorm/layernorm/normlab", 1e-6, 0, {"nchw-layernorm": "refuted"}),
    ("nchw", "maxdiff/instancenorm/instancenorm/", 0.3, 2, {"nchw-instancenorm": "refuted"}),
    ("nchw", "maxdiff/groupnorm/groupnorm/normlab", 0.3, 0, {"nchw-groupnorm": "refuted"}),
    # had LayerNorm matched the element-wise loop, seed 004's reading would stand
    ("nchw", "maxdiff/ln-elementwise/layernorm/", 0.0, None, {"seed004-ln-elementwise-stats": "supported"}),
    ("sequence", "maxdiff/bn-seed002-verbatim/bn-seed002/", 0.2, 0, {"seed002-bn-loop": "refuted"}),
    ("sequence", "maxdiff/ln-seed002-verbatim/layernorm/", 0.2, 0, {"seed002-ln-loop": "refuted"}),
    ("sequence", "maxdiff/bn-seed002-verbatim/bn-hidden/", 0.0, None,
     {"seed002-bn-loop-is-batchnorm1d-hidden": "supported"}),
    # a per-sample norm that moved with the batch; a BN that did not (the instrument is then not trusted)
    ("nchw", "batch_dependence/groupnorm/torch", 0.5, 1, {"ln-in-gn-per-sample": "refuted"}),
    ("sequence", "batch_dependence/layernorm/normlab", 0.5, 0, {"ln-in-gn-per-sample": "refuted"}),
    ("nchw", "batch_dependence/batchnorm/", 0.0, 2,
     {"bn-depends-on-batch": "refuted", "ln-in-gn-per-sample": "inconclusive"}),
    ("sequence", "length_dependence/layernorm/", 0.4, 0, {"ln-independent-of-length": "refuted"}),
    ("sequence", "length_dependence/groupnorm/", 0.0, 0,
     {"in-gn-depend-on-length": "refuted", "ln-independent-of-length": "inconclusive"}),
])
def test_each_tensor_verdict_flips(run, arm, prefix, value, seed, expected):
    assert _verdicts(_replace(run, arm, prefix, value, seed)) == REAL_VERDICTS | expected


def _with_state(run: StoredRun, module: str, name: str, **changes) -> StoredRun:
    state = run.extra["state"].copy()
    hit = (state["module"] == module) & (state["name"] == name)
    if changes.pop("drop", False):
        state = state[~hit]
    elif hit.any():
        for k, v in changes.items():
            state.loc[hit, k] = v
    else:  # add the entry
        state = pd.concat([state, pd.DataFrame([{"module": module, "kind": "buffer", "name": name, "shape": "(3,)",
                                                 "numel": 3, "saved": True, "learned": False, **changes}])])
    return dataclasses.replace(run, extra={**run.extra, "state": state})


@pytest.mark.parametrize(("module", "name", "changes", "claim"), [
    ("BatchNorm2d(3)", "running_var", {"shape": "(1,)"}, "bn-state"),
    ("BatchNorm2d(3)", "running_mean", {"saved": False}, "bn-state"),  # not saved with the model
    ("BatchNorm1d(5, momentum=0.3)", "weight", {"learned": False}, "bn-state"),
    ("LayerNorm((3, 2, 2))", "running_mean", {}, "ln-state"),  # an LN with running statistics
    ("LayerNorm((3, 2, 2))", "weight", {"shape": "(3,)"}, "ln-state"),
    ("GroupNorm(2, 4)", "weight", {"shape": "(2,)"}, "gn-state"),  # per group instead of per channel
    ("InstanceNorm2d(3, momentum=0.3)", "running_mean", {}, "in-state-default"),
    ("InstanceNorm2d(3, affine=True, track_running_stats=True)", "weight", {"drop": True}, "in-state-options"),
])
def test_each_state_verdict_flips(run, module, name, changes, claim):
    assert _verdicts(_with_state(run, module, name, **changes)) == REAL_VERDICTS | {claim: "refuted"}


def test_seed_sentences_quote_the_posts_and_name_real_claims(run):
    ids = {c.id for c in STUDY.claims(run)}
    for s in STUDY.seed_sentences:
        assert set(s.tested_by) <= ids, s.tested_by
    assert set(STUDY.post_titles) == {"002", "003", "004"}
    seeds = Path("/work/shared/seeds")
    if not seeds.is_dir():
        pytest.skip("the seed posts are not on this machine")
    for s in STUDY.seed_sentences:
        text = next(seeds.glob(f"{s.seed}_*.txt")).read_text().replace("\n", "")  # the scrape breaks lines
        assert s.quote in text, s.quote


def test_state_table_has_seed004_shapes(run):
    state = run.extra["state"]
    ln = state[state["module"] == "LayerNorm((3, 2, 2))"].set_index("name")["shape"].to_dict()
    assert ln == {"weight": "(3, 2, 2)", "bias": "(3, 2, 2)"}
    bn1d = state[state["module"] == "BatchNorm1d(5, momentum=0.3)"].set_index("name")["shape"].to_dict()
    assert bn1d == {"weight": "(5,)", "bias": "(5,)", "running_mean": "(5,)", "running_var": "(5,)",
                    "num_batches_tracked": "()"}
    assert state[state["module"] == "InstanceNorm2d(3, momentum=0.3)"]["kind"].tolist() == ["(none)"]


def test_statistics_counts_follow_the_shapes(run):
    m = run.metrics
    n, c, _, _ = Config().nchw
    counts = {r.metric: r.value for r in m[(m["arm"] == "nchw") & m["metric"].str.startswith("statistics/")]
              .itertuples()}
    _, _, h, w = Config().nchw
    assert counts == {"statistics/batchnorm": c, "statistics/layernorm": n, "statistics/instancenorm": n * c,
                      "statistics/groupnorm": n * Config().num_groups, "statistics/ln-elementwise": c * h * w}


def test_a_wrong_layer_would_be_refuted(run):
    broken = run.metrics.copy()
    hit = (broken["arm"] == "nchw") & (broken["metric"] == "maxdiff/groupnorm/groupnorm/normlab")
    broken.loc[hit, "value"] = 0.3
    claims = {c.id: c for c in STUDY.claims(StoredRun(run.config, broken, run.probe_scalars, run.probe_histograms,
                                                      run.extra, run.run_dir))}
    assert claims["nchw-groupnorm"].verdict == "refuted"


def test_figures_render(run):
    figures = STUDY.figures(run)
    assert [f.name for f in figures] == ["axes_nchw", "axes_sequence", "state"]
    assert len(figures[1].figure.axes) == 5


def test_groups_must_divide():
    with pytest.raises(ValueError, match="num_groups=4 must divide"):
        STUDY.check_config(Config(num_groups=4))
