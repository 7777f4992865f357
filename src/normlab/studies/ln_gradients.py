"""ln-gradients (seed 000): does LayerNorm lower the loss and "prevent overfitting", as gradients suggest?

The seed trains a 5-Linear network with no activation function on 20 points of ``y = 2*x1 - x2**2 + 1``
(with ``x1 = x2 - 10``: the two inputs are collinear, so the target is a parabola in one variable) in
four arms: ``dropout``, ``dropout+ln``, ``ln``, ``none``; Adam(lr=0.01, weight_decay=0.01), MSELoss, full
batch, 1000 steps; it reads loss curves and TensorBoard gradient histograms of one run per arm.

normlab reruns the four arms exactly, with N seeds each trained as one vectorized ensemble, a held-out
set of the same function, and control arms:

* ``relu`` / ``relu+ln``: the network is linear except for LN, so "LN lowers the loss" may only mean
  "a nonlinearity lowers the loss". With ReLUs, does LN still help?
* ``none/std`` / ``ln/std``: inputs and targets standardized (the seed's are unscaled: |y| up to 340).
* ``none/adamw`` / ``ln/adamw``: decoupled weight decay (AdamW) instead of Adam's L2 term.

The model, data and losses are in this file; the measures and claims in ``_ln_gradients_claims.py``
(``_``-prefixed module: not a study), the figures in ``_ln_gradients_figures.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from normlab.engine.config import (
    Check,
    flag,
    integer,
    items,
    number,
    one_of,
    seeds_check,
)
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.kit.ensemble import make_ensemble, member_losses, std_and_excess_kurtosis
from normlab.kit.flat_params import flatten_parameters

SEED_ARMS: tuple[str, ...] = ("dropout", "dropout+ln", "ln", "none")
CONTROL_ARMS: tuple[str, ...] = ("relu", "relu+ln", "none/std", "ln/std", "none/adamw", "ln/adamw")


@dataclass(frozen=True)
class ArmSpec:
    """An arm as data: which layers the network has, how data is scaled, which optimizer."""

    dropout: bool = False
    ln: bool = False
    relu: bool = False
    standardize: bool = False
    optimizer: str = "adam"  # "adam": L2 term added to the gradient (the seed); "adamw": decoupled decay


ARMS: dict[str, ArmSpec] = {
    "dropout": ArmSpec(dropout=True),
    "dropout+ln": ArmSpec(dropout=True, ln=True),
    "ln": ArmSpec(ln=True),
    "none": ArmSpec(),
    "relu": ArmSpec(relu=True),
    "relu+ln": ArmSpec(ln=True, relu=True),
    "none/std": ArmSpec(standardize=True),
    "ln/std": ArmSpec(ln=True, standardize=True),
    "none/adamw": ArmSpec(optimizer="adamw"),
    "ln/adamw": ArmSpec(ln=True, optimizer="adamw"),
}


@dataclass
class Config:
    seeds: int = 32
    steps: int = 1000  # the seed's `iteration`
    lr: float = 0.01
    weight_decay: float = 0.01
    dropout_p: float = 0.1
    arms: tuple[str, ...] = SEED_ARMS + CONTROL_ARMS
    eval_every: int = 10  # held-out loss, eval-mode train loss, gradient spread/kurtosis: every this many steps
    probe_every: int = 10  # normlab.probe scalars (per-parameter gradient/weight/update stats)
    hist_every: int = 50  # normlab.probe histograms of every parameter's gradient and value
    probe: bool = True

    checks: ClassVar[dict[str, Check]] = {
        "seeds": seeds_check(1),
        "steps": integer(2),
        "lr": number(0, lo_open=True),
        "weight_decay": number(0),
        "dropout_p": number(0, 1, hi_open=True),
        "arms": items(one_of(ARMS), unique=True),
        "eval_every": integer(1),
        "probe_every": integer(1),
        "hist_every": integer(1),
        "probe": flag(),
    }


class SeedModel(nn.Module):
    """The seed's ``Model``: ``linears = Sequential(...)``, built per arm (``relu``: a control, not the seed).

    Seed layout: ``Linear(2,20) → Linear(20,20) → [Dropout] → Linear(20,20) → [LN] → Linear(20,20) → [LN]
    → Linear(20,1)``. ReLU (controls only) follows each hidden Linear, after its LN.
    """

    def __init__(self, arm: ArmSpec, dropout_p: float = 0.1):
        super().__init__()
        act = [nn.ReLU()] if arm.relu else []
        layers: list[nn.Module] = [nn.Linear(2, 20), *act, nn.Linear(20, 20), *act]
        if arm.dropout:
            layers.append(nn.Dropout(dropout_p))
        layers.append(nn.Linear(20, 20))
        if arm.ln:
            layers.append(nn.LayerNorm(20))
        layers += [*act, nn.Linear(20, 20)]
        if arm.ln:
            layers.append(nn.LayerNorm(20))
        layers += [*act, nn.Linear(20, 1)]
        self.linears = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linears(x)


def target(t: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The seed's function on its line ``x1 = t - 10, x2 = t``: ``y = 2*x1 - x2**2 + 1``."""
    return 2 * (t - 10) - t**2 + 1


def inputs(t: torch.Tensor) -> torch.Tensor:
    """``(B,) -> (B, 2)``: ``[x1, x2] = [t - 10, t]`` as in the seed (``arange(-10,10)``, ``arange(0,20)``)."""
    return torch.stack([t - 10, t], dim=1)


def datasets() -> dict[str, torch.Tensor]:
    """Train: the seed's 20 points ``t = 0..19``. Held-out (same function, same line ``x1 = x2 - 10``):
    ``interp`` = the 19 midpoints ``t = 0.5..18.5`` (can the fit be trusted *between* training points? the
    honest test of overfitting 20 points), ``extrap`` = ``t = -3..-1`` and ``20..22`` (outside the range)."""
    return {
        "train": torch.arange(0, 20).float(),
        "interp": torch.arange(0, 19).float() + 0.5,
        "extrap": torch.tensor([-3.0, -2.0, -1.0, 20.0, 21.0, 22.0]),
    }


def linear_floor() -> float:
    """The lowest train MSE any affine model of ``(x1, x2)`` can reach (least squares on the line)."""
    t = datasets()["train"].double().numpy()
    a = np.stack([t, np.ones_like(t)], axis=1)
    y = target(t)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(np.mean((a @ coef - y) ** 2))


class LnGradients(Study):
    name = "ln-gradients"
    description = "Seed 000: LayerNorm vs dropout on a 5-Linear net; loss, fluctuation, gradient distributions."
    seeds_from = ("000",)
    Config = Config
    quick_overrides = {"seeds": 4, "steps": 100, "eval_every": 10, "probe_every": 10, "hist_every": 25}  # noqa: RUF012
    threads = 1

    def cells(self, config: Config) -> list[Cell]:
        return [Cell(arm=a, seeds=tuple(range(config.seeds))) for a in config.arms]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        return train_arm(config, ctx)

    def claims(self, run: StoredRun) -> list[Claim]:
        from normlab.studies._ln_gradients_claims import all_claims

        return all_claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        from normlab.studies._ln_gradients_figures import all_figures

        return all_figures(run)

    def notes(self, run: StoredRun) -> str:
        from normlab.studies._ln_gradients_claims import notes

        return notes(run)


def train_arm(config: Config, ctx: CellContext) -> CellResult:
    """Train ``ctx.cell.seeds`` of one arm as one ensemble; return per-step metrics and probe tables."""
    arm = ARMS[ctx.cell.arm]
    seeds = ctx.cell.seeds
    n = len(seeds)
    model = make_ensemble(lambda: SeedModel(arm, config.dropout_p), seeds).to(ctx.device)
    data = {k: v.to(ctx.device) for k, v in datasets().items()}
    x = {k: inputs(t) for k, t in data.items()}
    y = {k: target(t) for k, t in data.items()}
    x_mu, x_sd = x["train"].mean(0), x["train"].std(0)
    y_mu, y_sd = y["train"].mean(), y["train"].std()
    if arm.standardize:  # scale with train statistics only; losses are reported in the original units
        x = {k: (v - x_mu) / x_sd for k, v in x.items()}
        y_fit = {k: (v - y_mu) / y_sd for k, v in y.items()}
        loss_scale = float(y_sd) ** 2
    else:
        y_fit, loss_scale = y, 1.0
    opt_cls = torch.optim.AdamW if arm.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel for the whole update of all parameters (the same elementwise Adam math as the seed's
    # per-tensor loop, to float rounding); measured 27% less time per ensemble step than foreach on CPU.
    # All parameters in one (N, P) matrix and all gradients in another (kit/flat_params.py): one tensor for
    # the optimizer, gradients accumulated in place, the per-member gradient without a concatenation.
    flat = flatten_parameters(model, n)
    opt = opt_cls([flat.param], lr=config.lr, weight_decay=config.weight_decay, fused=True)

    steps = config.steps
    per_step = torch.empty((2, steps, n), device=ctx.device)  # train_loss, grad_norm
    eval_steps = sorted(set(range(0, steps, config.eval_every)) | {steps - 1})
    # grad_spread, grad_kurtosis (of the gradient at that step), then train (eval mode), interp, extrap
    evals = torch.empty((5, len(eval_steps), n), device=ctx.device)
    # The three held-out splits in one eval-mode forward (every layer acts row by row without dropout).
    eval_x = torch.cat([x["train"], x["interp"], x["extrap"]])
    eval_y = [y_fit["train"], y_fit["interp"], y_fit["extrap"]]
    split_sizes = [len(v) for v in eval_y]
    probe = _make_probe(config, model, opt)
    ei = 0
    try:
        model.train()
        for step in range(steps):
            losses = member_losses(model(x["train"]).squeeze(-1), y_fit["train"])  # (N,)
            losses.sum().backward()  # the sum: each member gets exactly its own MSELoss gradient
            is_eval = ei < len(eval_steps) and step == eval_steps[ei]
            with torch.no_grad():
                g = flat.grad  # (N, P): every gradient entry of a member
                torch.mul(losses, loss_scale, out=per_step[0, step])
                torch.linalg.vector_norm(g, dim=1, out=per_step[1, step])
                if is_eval:
                    evals[0, ei], evals[1, ei] = std_and_excess_kurtosis(g, dim=1)
            opt.step()  # (the probe, if any, records through the optimizer's step hooks)
            flat.zero_grad()
            if is_eval:
                # Evaluated after the update: the model as it stands at the end of `step`.
                model.eval()
                with torch.no_grad():
                    preds = model(eval_x).squeeze(-1).split(split_sizes, dim=1)
                    for j, (pred, truth) in enumerate(zip(preds, eval_y, strict=True)):
                        evals[2 + j, ei] = member_losses(pred, truth) * loss_scale
                model.train()
                ei += 1
            if step % 25 == 0 or step == steps - 1:
                ctx.progress(step + 1, steps)
        predictions = _predictions(model, arm, x_mu, x_sd, y_mu, y_sd, seeds, ctx.device)
    finally:
        if probe is not None:
            probe.close()

    metrics = _long(per_step.cpu().numpy(), np.arange(steps), seeds, ("train_loss", "grad_norm"))
    metrics = pd.concat([metrics, _long(evals.cpu().numpy(), np.asarray(eval_steps), seeds,
                                        ("grad_spread", "grad_kurtosis", "train_loss_eval", "heldout_interp",
                                         "heldout_extrap"))],
                        ignore_index=True)
    scalars = hists = None
    if probe is not None:
        seed_of = np.asarray(seeds)
        scalars = probe.scalars()  # grad, weight, update and global kinds only: the probe watches no module
        scalars["seed"] = seed_of[scalars["member"].to_numpy()]
        hists = probe.histograms(empty_bins=False)  # long format: absent bins are empty
        hists["seed"] = seed_of[hists["member"].to_numpy()]
    return CellResult(metrics=metrics, probe_scalars=scalars, probe_histograms=hists,
                      extra={"predictions": predictions})


def _make_probe(config: Config, model: nn.Module, opt: torch.optim.Optimizer):
    if not config.probe:
        return None
    from normlab.probe import Probe

    # Parameters only (the seed logged every parameter's gradient and value); no activation hooks.
    return Probe(model, opt, every=config.probe_every, histograms=config.hist_every, bins=64,
                 modules=lambda name, module: False)


def _long(values: np.ndarray, steps: np.ndarray, seeds: tuple[int, ...], names: tuple[str, ...]) -> pd.DataFrame:
    """``values`` ``(metrics, steps, members)`` -> long rows ``seed, step, metric, value``."""
    m, s, n = values.shape
    return pd.DataFrame({
        "seed": np.tile(np.asarray(seeds), m * s),
        "step": np.tile(np.repeat(steps, n), m),
        "metric": np.repeat(np.asarray(names, dtype=object), s * n),
        "value": values.reshape(-1).astype(np.float64),
    })


def _predictions(model: nn.Module, arm: ArmSpec, x_mu, x_sd, y_mu, y_sd, seeds, device) -> pd.DataFrame:
    """Each member's final prediction on a fine grid of ``t`` (original units), eval mode."""
    t = torch.linspace(-3, 22, 101, device=device)
    x = inputs(t)
    if arm.standardize:
        x = (x - x_mu) / x_sd
    model.eval()
    with torch.no_grad():
        pred = model(x).squeeze(-1)  # (N, T)
    if arm.standardize:
        pred = pred * y_sd + y_mu
    n, k = pred.shape
    return pd.DataFrame({
        "seed": np.repeat(np.asarray(seeds), k),
        "t": np.tile(t.cpu().numpy(), n),
        "pred": pred.cpu().numpy().reshape(-1).astype(np.float64),
    })
