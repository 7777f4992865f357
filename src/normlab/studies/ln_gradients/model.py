"""ln-gradients: what a cell trains. The post's network per arm, and one arm's seeds trained as one ensemble."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from normlab.engine.spec import CellContext, CellResult
from normlab.kit.ensemble import make_ensemble, member_losses, std_and_excess_kurtosis
from normlab.kit.flat_params import flatten_parameters
from normlab.kit.tables import long_metrics, with_seeds
from normlab.probe import Probe
from normlab.studies.ln_gradients.config import ARMS, ArmSpec, Config, datasets, inputs, layout, target


class SeedModel(nn.Module):
    """The post's ``Model``: ``linears = Sequential(...)``, built per arm (``relu``: a control, not the seed).

    Seed layout: ``Linear(2,20) → Linear(20,20) → [Dropout] → Linear(20,20) → [LN] → Linear(20,20) → [LN]
    → Linear(20,1)``. ReLU (controls only) follows each hidden Linear, after its LN.
    """

    def __init__(self, arm: ArmSpec, dropout_p: float = 0.1):
        super().__init__()
        kinds = layout(arm)
        last = len(kinds) - 1
        make = {"relu": nn.ReLU, "dropout": lambda: nn.Dropout(dropout_p), "ln": lambda: nn.LayerNorm(20)}
        self.linears = nn.Sequential(*[
            nn.Linear(2 if i == 0 else 20, 1 if i == last else 20) if kind == "linear" else make[kind]()
            for i, kind in enumerate(kinds)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linears(x)


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
    # fused: one kernel for the whole update of all parameters (the same elementwise Adam math as the post's
    # per-tensor loop, to float rounding): these tensors are tiny, so per-kernel overhead is the cost.
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

    metrics = pd.concat([
        long_metrics(per_step.cpu().numpy(), np.arange(steps), seeds, ("train_loss", "grad_norm")),
        long_metrics(evals.cpu().numpy(), np.asarray(eval_steps), seeds,
                     ("grad_spread", "grad_kurtosis", "train_loss_eval", "heldout_interp", "heldout_extrap")),
    ], ignore_index=True)
    scalars = hists = None
    if probe is not None:
        # grad, weight, update and global kinds only: the probe watches no module
        scalars = with_seeds(probe.scalars(), seeds)
        hists = with_seeds(probe.histograms(empty_bins=False), seeds)  # long format: absent bins are empty
    return CellResult(metrics=metrics, probe_scalars=scalars, probe_histograms=hists,
                      extra={"predictions": predictions})


def _make_probe(config: Config, model: nn.Module, opt: torch.optim.Optimizer) -> Probe | None:
    if not config.probe:
        return None
    # Parameters only (the seed logged every parameter's gradient and value); no activation hooks.
    return Probe(model, opt, every=config.probe_every, histograms=config.hist_every, bins=64,
                 modules=lambda name, module: False)


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
