"""batch-size: equal examples and linear lr scaling, cited reference data, verdicts that follow the data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from normlab.engine.spec import Cell, CellContext, StoredRun
from normlab.studies.batch_size import GN_PAPER_ERROR, GN_PAPER_IMAGES_PER_GPU, BatchSize, Config

STUDY = BatchSize()
CONFIG = Config(**BatchSize.quick_overrides)



def test_cells_cover_norms_by_batch_sizes_with_all_seeds():
    cells = STUDY.cells(Config())
    assert len(cells) == len(Config().norms) * len(Config().batch_sizes)
    assert {c.param_dict["batch_size"] for c in cells} == {2, 4, 8, 16, 32, 64}
    assert all(c.seeds == tuple(range(Config().seeds)) for c in cells)


@pytest.mark.parametrize(("change", "match"), [
    ({"norms": ("batchnorm", "rmsnorm")}, r"norms\[1\]: expected one of \['batchnorm'"),
    ({"seeds": 1}, r"seeds: expected an integer in \[2, 10000\], got 1"),
    ({"batch_sizes": (1, 16), "reference_batch": 16}, r"batch_sizes\[0\]: .*BatchNorm needs two samples"),
    ({"reference_batch": 64}, "reference_batch 64 must be one of"),
])
def test_bad_config_is_rejected(change, match):
    with pytest.raises(ValueError, match=match):
        STUDY.check_config(dataclasses.replace(CONFIG, **change))


@pytest.mark.parametrize("batch", [2, 8])
def test_equal_examples_and_linear_lr(batch):
    config = dataclasses.replace(CONFIG, train_size=64, epochs=1.5)
    cell = Cell("batchnorm", (0, 1), (("batch_size", batch),))
    res = STUDY.run_cell(config, CellContext(cell, torch.device("cpu"), Path("."), None))
    m = res.metrics
    assert set(m["step"]) == {96 // batch}  # 1.5 epochs of 64 images, whatever the batch size
    assert np.allclose(m.loc[m["metric"] == "lr", "value"], config.lr_per_32 * batch / 32)
    assert set(m["metric"]) == {"test_acc", "train_acc", "lr", "test_acc_recalibrated"}
    acc = m.loc[m["metric"] == "test_acc", "value"]
    assert ((acc >= 0) & (acc <= 1)).all()
    assert res.extra["data"]["dataset"].iloc[0] == "digits"


def test_cited_reference_numbers_are_the_gn_papers():
    assert GN_PAPER_IMAGES_PER_GPU == (32, 16, 8, 4, 2)
    assert GN_PAPER_ERROR["batchnorm"] == (23.6, 23.7, 24.8, 27.3, 34.7)
    assert GN_PAPER_ERROR["groupnorm"] == (24.1, 24.2, 24.0, 24.2, 24.1)


def _synthetic(bn_small: float, gn_small: float, seeds: int = 8) -> StoredRun:
    """Stored accuracies: every norm 0.85 at batch 32; BN and GN at batch 2 as given."""
    config = dataclasses.replace(Config(), batch_sizes=(2, 32), seeds=seeds)
    rng = np.random.default_rng(1)
    rows = []
    for norm in config.norms:
        for b in config.batch_sizes:
            base = {"batchnorm": bn_small, "groupnorm": gn_small}.get(norm, 0.85) if b == 2 else 0.85
            for seed in range(seeds):
                for metric, shift in (("test_acc", 0.0), ("test_acc_recalibrated", 0.02)):
                    if metric == "test_acc_recalibrated" and norm != "batchnorm":
                        continue
                    rows.append({"arm": norm, "batch_size": b, "seed": seed, "step": 1, "metric": metric,
                                 "value": base + shift + rng.normal(0, 0.004)})
    info = pd.DataFrame({"dataset": ["fashion-mnist"], "notice": [""], "train_size": [3000], "test_size": [2000],
                         "image_size": [14], "arm": ["batchnorm"]})
    return StoredRun(config, pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame(), {"data": info}, Path("."))


def test_verdicts_follow_the_data():
    degrade = {c.id: c.verdict for c in STUDY.claims(_synthetic(bn_small=0.78, gn_small=0.85))}
    assert degrade == {"bn-degrades-small-batch": "supported", "gn-stable-small-batch": "supported",
                       "bn-degrades-more-than-gn": "supported", "bn-small-batch-running-stats": "supported"}
    flat = {c.id: c.verdict for c in STUDY.claims(_synthetic(bn_small=0.85, gn_small=0.80))}
    assert flat["bn-degrades-small-batch"] == "refuted"  # the interval rules out a 1% drop
    assert flat["gn-stable-small-batch"] == "refuted"
    assert flat["bn-degrades-more-than-gn"] == "refuted"


def test_figures_label_the_cited_data():
    run = _synthetic(bn_small=0.78, gn_small=0.85)
    figures = STUDY.figures(run)
    assert [f.name for f in figures] == ["error_vs_batch", "degradation"]
    labels = [t.get_text() for t in figures[0].figure.axes[1].get_legend().get_texts()]
    assert labels == ["BN (cited)", "GN (cited)"]
    assert "cited reference" in figures[0].how_to_read
    assert "3000 training / 2000 test images of 14x14" in STUDY.notes(run)
