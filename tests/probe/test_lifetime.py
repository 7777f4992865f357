"""Every hook the probe installs is gone after the probe closes: on a normal exit, when the training loop
raises inside the ``with`` block, when the probe's own hook raises, and when the constructor fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.modules.module as module_hooks
import torch.optim.optimizer as optimizer_hooks
from probe_oracle import seed000_data, seed000_ln_model
from torch import nn

from normlab.probe import Probe

GLOBAL_HOOKS = (
    (module_hooks, "_global_forward_hooks"), (module_hooks, "_global_forward_pre_hooks"),
    (module_hooks, "_global_backward_hooks"), (module_hooks, "_global_backward_pre_hooks"),
    (module_hooks, "_global_forward_hooks_with_kwargs"), (module_hooks, "_global_forward_hooks_always_called"),
    (optimizer_hooks, "_global_optimizer_pre_hooks"), (optimizer_hooks, "_global_optimizer_post_hooks"),
)
MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
                "_state_dict_hooks", "_load_state_dict_pre_hooks")
OPTIMIZER_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def hook_snapshot(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict:
    """Every hook dict torch keeps for these modules, optimizers, parameters and globally, copied."""
    snapshot = {}
    for owner, name in GLOBAL_HOOKS:
        snapshot[("global", name)] = dict(getattr(owner, name, {}))
    for module_name, module in model.named_modules():
        for name in MODULE_HOOKS:
            snapshot[(module_name, name)] = dict(getattr(module, name, None) or {})
    for index, optimizer in enumerate(optimizers):
        for name in OPTIMIZER_HOOKS:
            snapshot[(f"optimizer {index}", name)] = dict(getattr(optimizer, name))
    for param_name, p in model.named_parameters():
        for name in TENSOR_HOOKS:
            snapshot[(param_name, name)] = dict(getattr(p, name, None) or {})
    return snapshot


def _setup():
    model = seed000_ln_model()
    x, y = seed000_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, optimizer, x, y


def _train_step(model, optimizer, x, y):
    nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
    optimizer.step()
    optimizer.zero_grad()


def _assert_installed_then_removed(probe_hooks_seen: dict, before: dict, after: dict):
    assert probe_hooks_seen != before  # the probe did install hooks (else this test could not fail)
    assert after == before


@pytest.mark.parametrize("histograms", [False, True])
def test_hooks_are_removed_on_normal_exit(histograms):
    model, optimizer, x, y = _setup()
    before = hook_snapshot(model, [optimizer])
    with Probe(model, optimizer, histograms=histograms) as probe:
        during = hook_snapshot(model, [optimizer])
        for _ in range(3):
            _train_step(model, optimizer, x, y)
    _assert_installed_then_removed(during, before, hook_snapshot(model, [optimizer]))
    assert probe.steps == 3


def test_hooks_are_removed_when_the_training_loop_raises_and_the_exception_is_unchanged():
    model, optimizer, x, y = _setup()
    before = hook_snapshot(model, [optimizer])
    error = KeyError("from the training loop")
    with pytest.raises(KeyError) as raised:
        with Probe(model, optimizer):
            during = hook_snapshot(model, [optimizer])
            _train_step(model, optimizer, x, y)
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()  # mid-step: weights captured next
            raise error
    assert raised.value is error and not getattr(error, "__notes__", None)
    _assert_installed_then_removed(during, before, hook_snapshot(model, [optimizer]))


def test_hooks_are_removed_when_the_probes_own_hook_raises():
    class Merges(nn.Module):  # an ensemble layer that forgets the member dimension: the probe's hook raises
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(2, 3, 3))

        def forward(self, x):
            return torch.bmm(x, self.weight).flatten(0, 1)

    model = nn.Sequential(Merges())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = hook_snapshot(model, [optimizer])
    with pytest.raises(ValueError, match=r"module '0' gave a tensor of shape \(8, 3\)"):
        with Probe(model, optimizer, members=2):
            during = hook_snapshot(model, [optimizer])
            model(torch.randn(2, 4, 3))
    _assert_installed_then_removed(during, before, hook_snapshot(model, [optimizer]))


def test_hooks_are_removed_when_an_optimizer_hook_raises(monkeypatch):
    model, optimizer, x, y = _setup()
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    before = hook_snapshot(model, [optimizer, other])

    def broken_capture(self):
        raise RuntimeError("capture failed")

    monkeypatch.setattr(Probe, "_before_step", broken_capture)
    with pytest.raises(RuntimeError, match="capture failed"):
        with Probe(model, [optimizer, other]):
            during = hook_snapshot(model, [optimizer, other])
            _train_step(model, optimizer, x, y)
    _assert_installed_then_removed(during, before, hook_snapshot(model, [optimizer, other]))


def test_a_constructor_that_fails_leaves_no_hook(tmp_path):
    model, optimizer, _, _ = _setup()
    before = hook_snapshot(model, [optimizer])
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(OSError):  # TensorBoard cannot create its folder: after the module hooks were made
        Probe(model, optimizer, logdir=not_a_folder / "tb")
    assert hook_snapshot(model, [optimizer]) == before
    shared = torch.optim.SGD([next(model.parameters())], lr=0.1)
    before = hook_snapshot(model, [optimizer, shared])
    with pytest.raises(ValueError, match=r"parameter '0.weight' is in optimizer 0 and optimizer 1"):
        Probe(model, [optimizer, shared])
    assert hook_snapshot(model, [optimizer, shared]) == before


def test_close_is_idempotent_and_a_closed_probe_records_nothing():
    model, optimizer, x, y = _setup()
    before = hook_snapshot(model, [optimizer])
    probe = Probe(model, optimizer)
    _train_step(model, optimizer, x, y)
    probe.close()
    table = probe.scalars()
    probe.close()
    with probe:  # entering a closed probe and leaving it again closes nothing twice
        pass
    assert hook_snapshot(model, [optimizer]) == before
    _train_step(model, optimizer, x, y)
    assert probe.steps == 1
    assert probe.scalars().equals(table)
    with pytest.raises(RuntimeError, match="closed"):
        probe.step()
