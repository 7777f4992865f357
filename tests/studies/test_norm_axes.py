"""norm-axes: the explicit loops are right (numpy oracle), layers agree with them, state shapes, verdicts."""

from __future__ import annotations

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
    }
    for name, key in nchw_keys(4, 2).items():
        out, group_id = loop_normalize(x, key, EPS)
        np.testing.assert_allclose(out.numpy(), expected[name], atol=1e-12, err_msg=name)
        assert group_id.max() + 1 == {"batchnorm": 4, "layernorm": 3, "instancenorm": 12, "groupnorm": 6}[name]


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


def test_layers_agree_with_loops_and_the_usual_bn_does_not(run):
    claims = {c.id: c for c in STUDY.claims(run)}
    for norm in ("batchnorm", "layernorm", "instancenorm", "groupnorm"):
        assert claims[f"nchw-{norm}"].verdict == "supported", claims[f"nchw-{norm}"].detail
    assert claims["seed002-bn-loop"].verdict == "supported"
    assert claims["seed002-ln-loop"].verdict == "supported"
    control = claims["seed002-bn-loop-is-batchnorm1d-hidden"]
    assert control.verdict == "refuted" and control.value > 0.1
    for cid in ("bn-state", "ln-state", "gn-state", "in-state-default"):
        assert claims[cid].verdict == "supported", claims[cid].detail


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
    assert counts == {"statistics/batchnorm": c, "statistics/layernorm": n, "statistics/instancenorm": n * c,
                      "statistics/groupnorm": n * Config().num_groups}


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
