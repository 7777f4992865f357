"""sync-bn: the cells and config checks, the distributed first step against its one-process twins (with a
twin that must differ, so the check can fail), a failing rank failing its cell with one clear error, and
every verdict flipped by synthetic stored runs whose answer is known (effect present, absent, reversed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from normlab.cli import app
from normlab.data.images import load_images
from normlab.engine.ranks import RanksError, run_ranks
from normlab.engine.spec import StoredRun
from normlab.studies.sync_bn import Config, SyncBN
from normlab.studies.sync_bn import model as sync_model
from normlab.studies.sync_bn.claims import claims

STUDY = SyncBN()
QUICK = Config(**SyncBN.quick_overrides)


# --- design ---------------------------------------------------------------------------------------------------

def test_cells_are_arm_by_images_per_rank_with_every_seed():
    c = Config()
    cells = STUDY.cells(c)
    assert {(x.arm, x.param_dict["per_rank_batch"]) for x in cells} == {(a, b) for a in c.arms
                                                                        for b in c.per_rank_batches}
    assert all(x.seeds == tuple(range(c.seeds)) for x in cells)
    assert len({x.key for x in cells}) == len(cells)


def test_the_lr_follows_the_global_batch():
    c = Config()
    assert sync_model.learning_rate(c, 16) == pytest.approx(c.lr * 2 * 16 / c.lr_batch)
    assert sync_model.learning_rate(c, 2) * 8 == pytest.approx(sync_model.learning_rate(c, 16))


@pytest.mark.parametrize(("change", "match"), [
    ({"ranks": 1}, r"ranks: .*SyncBatchNorm needs more than one rank"),
    ({"per_rank_batches": (1, 4)}, r"per_rank_batches\[0\]: .*two images per rank"),
    ({"per_rank_batches": (2, 300)}, "a global batch of 2 x 300 exceeds the 400 training images"),
    ({"arms": ("batchnorm", "layernorm")}, r"arms\[1\]: expected one of"),
    ({"num_groups": 3}, "num_groups: expected a divisor"),
    ({"collective_timeout": 400.0}, "collective_timeout: expected at most cell_timeout"),
])
def test_bad_config_is_rejected(change, match):
    with pytest.raises(ValueError, match=match):
        STUDY.check_config(dataclasses.replace(QUICK, **change))


# --- the distributed step against the one-process lab -----------------------------------------------------------

TINY = dataclasses.replace(QUICK, train_size=64, test_size=32, seeds=2)


@pytest.fixture(scope="module")
def first_steps():
    """Each BN arm's first step on 2 gloo ranks (b=4), with the single-process twins of both arms."""
    data = load_images(TINY.dataset, train_size=TINY.train_size, test_size=TINY.test_size)
    seeds = (0, 1)
    out = {}
    for arm in ("syncbn", "batchnorm"):
        got = run_ranks(sync_model.train_rank, 2, (dataclasses.replace(TINY, epochs=0.2), arm, 4, seeds),
                        timeout=180)[0]
        twins = {a: sync_model.one_process_first_step(TINY, a, 4, seeds, data) for a in ("syncbn", "batchnorm")}
        out[arm] = (got, twins)
    return out


@pytest.mark.parametrize("arm", ["syncbn", "batchnorm"])
def test_the_two_rank_step_equals_its_one_process_twin_and_not_the_other_arms(first_steps, arm):
    got, twins = first_steps[arm]
    other = "batchnorm" if arm == "syncbn" else "syncbn"
    same = sync_model.relative_differences(got["first_grads"], twins[arm][1], 2)
    assert float(same.max()) < 1e-5
    np.testing.assert_allclose(got["first_losses"].numpy(), twins[arm][0].numpy(), rtol=1e-5)
    # Statistics over 4 vs 8 images give a different step: the check can tell the arms apart.
    assert float(sync_model.relative_differences(got["first_grads"], twins[other][1], 2).min()) > 1e-3


def test_a_failing_rank_fails_the_cell_with_one_clear_error():
    too_big = dataclasses.replace(TINY, per_rank_batches=(40,))  # a global batch of 80 from 64 images
    with pytest.raises(RanksError, match=r"rank \d raised ValueError: batch_order: batch_size must be in \[1, 64\]"):
        sync_model.train_cell(too_big, "groupnorm", 40, (0, 1))


def test_cli_shows_a_failed_rank_as_one_error_line(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise RanksError("run_ranks(train_rank, world_size=2): rank 1 raised ValueError: boom")

    monkeypatch.setattr(sync_model, "run_ranks", fail)
    result = CliRunner().invoke(app, ["run", "sync-bn", "--quick", "--progress", "none", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2  # the CLI's error exit
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == ("error: run_ranks(train_rank, world_size=2): rank 1 raised "
                                                      "ValueError: boom")


# --- every verdict flips: synthetic stored runs with known answers -----------------------------------------------

SYNTH = Config(seeds=8, per_rank_batches=(2, 8, 32))


def _stored(*, bn_drop=0.0, gn_drop=0.0, sync_gain=0.0, recal_gain=None, sync_diff=1e-7, bn_diff=1e-7,
            gn_noise=0.0, config: Config = SYNTH, arms=None) -> StoredRun:
    """Test accuracies per seed: a shared per-seed level (seeds pair the arms), BN and GN losing ``*_drop`` at
    the smallest b (linear in log b down from the largest), SyncBN ``sync_gain`` above BN at the smallest b
    (shrinking to 0 at the largest), recalibrated accuracies ``recal_gain`` apart, small per-cell noise."""
    rng = np.random.default_rng(0)
    config = dataclasses.replace(config, arms=tuple(arms or config.arms))
    level = 0.8 + 0.02 * rng.standard_normal(config.seeds)
    sizes = sorted(config.per_rank_batches)
    recal_gain = sync_gain if recal_gain is None else recal_gain
    rows = []
    for b in sizes:
        share = 1.0 - np.log(b / sizes[0]) / np.log(sizes[-1] / sizes[0])  # 1 at the smallest b, 0 at the largest
        bn = level - bn_drop * share
        gn = level - 0.01 - gn_drop * share + gn_noise * rng.standard_normal(config.seeds)
        acc = {"batchnorm": bn, "syncbn": bn + sync_gain * share, "groupnorm": gn}
        recal = {"batchnorm": bn, "syncbn": bn + recal_gain * share}
        for arm in config.arms:
            noise = lambda: 0.002 * rng.standard_normal(config.seeds)  # noqa: E731
            for seed in range(config.seeds):
                rows.append((arm, b, seed, 100, "test_acc", acc[arm][seed] + noise()[seed]))
                if arm in recal:
                    rows.append((arm, b, seed, 100, "test_acc_recalibrated", recal[arm][seed] + noise()[seed]))
                diff = {"syncbn": sync_diff, "batchnorm": bn_diff}.get(arm, 1e-7)
                rows += [(arm, b, seed, 0, "first_step_grad_rel_diff", diff),
                         (arm, b, seed, 0, "first_step_loss_rel_diff", 1e-8)]
    metrics = pd.DataFrame(rows, columns=["arm", "per_rank_batch", "seed", "step", "metric", "value"])
    return StoredRun(config, metrics, pd.DataFrame(), pd.DataFrame(), {}, Path("."))


def _verdicts(run: StoredRun) -> dict[str, str]:
    out = {c.id: c for c in claims(run)}
    assert all(c.unit and (c.n is None) == (c.unit == "exact") for c in out.values())
    return {k: c.verdict for k, c in out.items()}


@pytest.mark.parametrize(("effects", "expected"), [
    ({"sync_gain": 0.05}, "supported"),   # SyncBN clearly better at the smallest b
    ({"sync_gain": 0.0}, "refuted"),      # no gain: the CI rules out a 1% gain
    ({"sync_gain": -0.05}, "refuted"),    # SyncBN worse
])
def test_attribution_claim_follows_the_data(effects, expected):
    assert _verdicts(_stored(**effects))["syncbn-beats-bn-small-b"] == expected


@pytest.mark.parametrize(("effects", "expected"), [
    ({"sync_gain": 0.05, "recal_gain": 0.05}, "supported"),
    ({"sync_gain": 0.05, "recal_gain": 0.0}, "refuted"),   # the gain was only in the running estimates
    ({"sync_gain": 0.05, "recal_gain": -0.05}, "refuted"),
])
def test_recalibration_control_follows_the_data(effects, expected):
    assert _verdicts(_stored(**effects))["syncbn-gain-survives-recalibration"] == expected


@pytest.mark.parametrize(("effects", "expected"), [
    ({"bn_drop": 0.1}, "supported"),     # BN degrades, GN flat
    ({"bn_drop": 0.0}, "refuted"),       # BN flat
    ({"bn_drop": -0.1}, "refuted"),      # BN better at small b
    ({"bn_drop": 0.1, "gn_drop": 0.1}, "inconclusive"),  # GN degrades too: not BN's statistics
    # GN loses as much but noisily (its own drop not significant): "not shown to differ" is not "flat"
    ({"bn_drop": 0.05, "gn_drop": 0.05, "gn_noise": 0.08}, "inconclusive"),
    ({"bn_drop": 0.1, "gn_drop": 0.02}, "supported"),  # GN loses a little, BN far more: BN's statistics
])
def test_bn_trend_follows_the_data_and_the_gn_control(effects, expected):
    run = _stored(**effects)
    assert _verdicts(run)["bn-degrades-small-b"] == expected
    if expected == "inconclusive":
        claim = next(c for c in claims(run) if c.id == "bn-degrades-small-b")
        assert "NOT attributed" in claim.detail and "control GN" in claim.detail


def test_bn_trend_is_not_attributed_without_the_gn_control():
    run = _stored(bn_drop=0.1, arms=("batchnorm", "syncbn"))
    claim = next(c for c in claims(run) if c.id == "bn-degrades-small-b")
    assert claim.verdict == "inconclusive" and "GN control" in claim.detail


@pytest.mark.parametrize(("effects", "expected"), [
    ({"gn_drop": 0.0}, "supported"),
    ({"gn_drop": 0.05}, "refuted"),
    ({"gn_drop": -0.05}, "refuted"),
])
def test_gn_flatness_follows_the_data(effects, expected):
    assert _verdicts(_stored(**effects))["gn-flat-across-b"] == expected


@pytest.mark.parametrize(("diffs", "expected"), [
    ({"sync_diff": 3e-7, "bn_diff": 2e-7}, ("supported", "supported")),
    ({"sync_diff": 0.02, "bn_diff": 2e-7}, ("refuted", "supported")),
    ({"sync_diff": 3e-7, "bn_diff": float("nan")}, ("supported", "refuted")),
])
def test_exact_checks_follow_the_measured_differences(diffs, expected):
    v = _verdicts(_stored(**diffs))
    assert (v["syncbn-step-equals-bn-over-global-batch"], v["bn-step-equals-ghost-bn"]) == expected


def test_a_missing_arm_leaves_its_claims_unjudged():
    v = _verdicts(_stored(sync_gain=0.05, arms=("batchnorm", "groupnorm")))
    assert v["syncbn-beats-bn-small-b"] == v["syncbn-step-equals-bn-over-global-batch"] == "inconclusive"
    assert v["bn-step-equals-ghost-bn"] == "supported"


def test_figures_and_notes_draw_from_a_stored_run():
    run = _stored(sync_gain=0.05, bn_drop=0.05)
    figs = STUDY.figures(run)
    assert [f.name for f in figs] == ["error_vs_images_per_rank", "syncbn_gain"]
    assert "What it cannot show" in STUDY.notes(run)


def test_the_dask_executor_is_refused_before_the_run_directory_exists(tmp_path):
    from typer.testing import CliRunner

    from normlab.cli import app

    result = CliRunner().invoke(app, ["run", "sync-bn", "--quick", "--executor", "dask", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "starts processes in its cells" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()
