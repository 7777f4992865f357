"""SmallCNN: norms built as documented, members equal independent runs, recalibration is exact."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from normlab.models.cnn import (
    CNN_NORMS,
    SmallCNN,
    build_members,
    member_accuracy,
    member_input,
    norm2d,
    recalibrate,
    stack_members,
    train_members,
)


def test_norm2d_sets_match_their_definitions():
    x = torch.randn(3, 6, 5, 5, dtype=torch.float64) * 3 + 1
    cases = {
        "layernorm": F.layer_norm(x, (6, 5, 5)),  # over C, H, W
        "instancenorm": F.instance_norm(x),  # over H, W per (sample, channel)
        "groupnorm": F.group_norm(x, 2),
        "batchnorm": F.batch_norm(x, None, None, training=True),  # over N, H, W per channel
        "none": x,
    }
    for name, expected in cases.items():
        layer = norm2d(name, 6, num_groups=2).double()
        torch.testing.assert_close(layer(x), expected, msg=name)  # affine starts as identity


def test_norm2d_rejects_bad_names_groups_and_kwargs():
    with pytest.raises(ValueError, match="norm must be one of"):
        norm2d("rmsnorm", 4)
    with pytest.raises(ValueError, match="num_groups=3 must divide channels=4"):
        norm2d("groupnorm", 4, num_groups=3)
    with pytest.raises(ValueError, match="takes no extra arguments"):
        norm2d("groupnorm", 4, momentum=0.1)


@pytest.mark.parametrize("norm", CNN_NORMS)
def test_shapes_single_and_members(norm):
    assert SmallCNN(1, 10, (4, 8, 8), norm, num_groups=2)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    model = build_members((0, 1, 2), widths=(4, 8, 8), norm=norm, num_groups=2)
    assert model(torch.randn(2, 3, 12, 12)).shape == (2, 3, 10)


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match=r"expected input \(N, 1, H, W\)"):
        SmallCNN()(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="widths must be three positive ints"):
        SmallCNN(widths=(4, 8))
    with pytest.raises(ValueError, match="members must be a positive int"):
        SmallCNN(members=0)
    with pytest.raises(ValueError, match="share one configuration"):
        stack_members([SmallCNN(norm="batchnorm"), SmallCNN(norm="groupnorm")])
    with pytest.raises(ValueError, match="batch_size must be in"):
        train_members(SmallCNN(), torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), (0,),
                      batch_size=1, examples=4, lr=0.1)


def _independent_run(seed, norm, x, y, batch_size, steps, lr):
    """The reference: one ordinary SmallCNN, same init seed, same shuffling rule as train_members."""
    torch.manual_seed(seed)
    model = SmallCNN(widths=(4, 8, 8), norm=norm, num_groups=2)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    per_pass = len(x) // batch_size
    for step in range(steps):
        if step % per_pass == 0:
            order = torch.randperm(len(x), generator=gen)
        idx = order[(step % per_pass) * batch_size:(step % per_pass + 1) * batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("norm", CNN_NORMS)
def test_members_equal_independent_runs(norm):
    torch.manual_seed(123)
    x, y = torch.randn(24, 1, 10, 10), torch.randint(0, 10, (24,))
    seeds = (4, 9)
    ens = build_members(seeds, widths=(4, 8, 8), norm=norm, num_groups=2)
    steps = train_members(ens, x, y, seeds, batch_size=4, examples=40, lr=0.02)  # crosses a pass boundary
    assert steps == 10
    for s, seed in enumerate(seeds):
        ref = _independent_run(seed, norm, x, y, 4, steps, 0.02)
        for train in (True, False):  # batch statistics and running statistics
            a = copy.deepcopy(ref).train(train)(x)
            b = copy.deepcopy(ens).train(train)(member_input(x, 2))[:, s]
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=f"{norm} member {s} train={train}")


def test_member_accuracy_counts_per_member():
    model = build_members((0, 1), widths=(4, 8, 8), norm="none").eval()
    x = torch.randn(30, 1, 8, 8)
    with torch.no_grad():
        pred = model(member_input(x, 2)).argmax(-1)  # (N, 2)
    y = pred[:, 0]  # member 0 is right by construction
    acc = member_accuracy(model, x, y, batch_size=7)
    assert acc[0] == 1.0
    assert acc[1] == pytest.approx(float((pred[:, 1] == y).float().mean()))


def test_recalibrate_sets_first_layer_to_exact_population_statistics():
    model = build_members((0, 1), widths=(4, 8, 8), norm="batchnorm", norm_kwargs={"momentum": 0.001})
    x = torch.randn(250, 1, 8, 8) * 2 + 0.5
    recalibrate(model, x, chunk=64)  # uneven chunks: still the exact statistics of all 250 images
    with torch.no_grad():
        h = model.convs[0](member_input(x, 2)).double()  # (250, 2*4, 8, 8): the first norm's input
    bn = model.norms[0]
    torch.testing.assert_close(bn.running_mean.double(), h.mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), h.var((0, 2, 3), correction=1), atol=1e-4, rtol=1e-4)


def test_arms_are_registry_layers_and_layernorm_is_groupnorm_with_one_group():
    """The arms build exactly what the norm registry's names build (the CNN's numbers depend on it)."""
    import normlab.nn as N
    from normlab.models.cnn import ARM_NORMS

    assert set(ARM_NORMS) == set(CNN_NORMS) and ARM_NORMS["layernorm"] == "layernorm-chw"
    single = SmallCNN(norm="layernorm", widths=(4, 8, 8))
    assert [(type(m), m.num_groups, m.num_channels) for m in single.norms] == [(N.GroupNorm, 1, c) for c in (4, 8, 8)]
    stacked = SmallCNN(norm="layernorm", widths=(4, 8, 8), members=3)  # one group per member
    assert [(m.num_groups, m.num_channels) for m in stacked.norms] == [(3, 3 * c) for c in (4, 8, 8)]
    kinds = {"batchnorm": N.BatchNorm2d, "groupnorm": N.GroupNorm, "instancenorm": N.InstanceNorm2d,
             "none": torch.nn.Identity}
    for arm, cls in kinds.items():
        assert type(norm2d(arm, 8)) is cls and type(N.create_norm(ARM_NORMS[arm], 8)) is cls
    assert norm2d("instancenorm", 8).affine


def test_finite_members_flags_exactly_the_members_with_a_non_finite_parameter():
    from normlab.models.cnn import build_members, finite_members

    model = build_members((0, 1, 2), num_classes=10, widths=(4, 4, 4), norm="batchnorm")
    assert finite_members(model).tolist() == [True, True, True]
    with torch.no_grad():
        first = next(model.parameters())
        first.view(model.members, -1)[1, 0] = float("nan")
        list(model.parameters())[-1].view(model.members, -1)[2, -1] = float("inf")
    assert finite_members(model).tolist() == [True, False, False]


def test_recalibrated_copy_leaves_the_model_and_recalibrates_the_copy():
    from normlab.models.cnn import build_members, recalibrate, recalibrated_copy

    model = build_members((0, 1), num_classes=10, widths=(4, 4, 4), norm="batchnorm").train()
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = recalibrated_copy(model, x)
    assert model.training and not twin.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched
    oracle = build_members((0, 1), num_classes=10, widths=(4, 4, 4), norm="batchnorm")
    oracle.load_state_dict(before)
    recalibrate(oracle, x)
    for k, v in oracle.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[k], v)
    assert not torch.equal(twin.state_dict()[next(k for k in before if k.endswith("running_mean"))],
                           before[next(k for k in before if k.endswith("running_mean"))])
