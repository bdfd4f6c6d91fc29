"""Initializers: sample variances against the lectures' formulas; the symmetry trap."""

import math

import pytest
import torch
from torch import nn

from runner.build import build
from runner.init import apply, he_, xavier_

N_IN, N_OUT = 800, 400


def sample(fn, **kw):
    torch.manual_seed(0)
    return fn(torch.empty(N_OUT, N_IN), **kw)  # torch's Linear layout: (fan_out, fan_in)


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_xavier_variance_is_2_over_fan_in_plus_fan_out(distribution):
    w = sample(xavier_, distribution=distribution)
    assert w.var().item() == pytest.approx(2 / (N_IN + N_OUT), rel=0.02)
    if distribution == "uniform":
        assert w.abs().max().item() <= math.sqrt(6 / (N_IN + N_OUT))


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
@pytest.mark.parametrize("mode,fan", [("fan_in", N_IN), ("fan_out", N_OUT)])
def test_he_variance_is_2_over_fan(distribution, mode, fan):
    w = sample(he_, distribution=distribution, mode=mode)
    assert w.var().item() == pytest.approx(2 / fan, rel=0.02)
    assert w.mean().item() == pytest.approx(0, abs=0.01 * math.sqrt(2 / fan))


def test_unknown_distribution_names_the_choices():
    with pytest.raises(ValueError, match=r"distribution='gamma'.*normal.*uniform"):
        sample(he_, distribution="gamma")


def test_lecun_file_gives_variance_1_over_fan_in(make_cfg):
    w = sample(build(make_cfg("init=lecun").init.weight))
    assert w.var().item() == pytest.approx(1 / N_IN, rel=0.02)


def test_orthogonal_file_gives_orthonormal_rows(make_cfg):
    w = sample(build(make_cfg("init=orthogonal").init.weight))
    torch.testing.assert_close(w @ w.T, torch.eye(N_OUT), atol=1e-4, rtol=0)


def test_apply_sets_linear_and_conv_but_not_norm_layers(make_cfg):
    cfg = make_cfg("init=constant", "init.weight.val=0.3", "init.bias.val=0.02")
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Conv1d(1, 2, 3))
    apply(model, build(cfg.init.weight), build(cfg.init.bias))
    assert torch.all(model[0].weight == 0.3) and torch.all(model[0].bias == 0.02)
    assert torch.all(model[2].weight == 0.3) and torch.all(model[2].bias == 0.02)
    assert torch.all(model[1].weight == 1) and torch.all(model[1].bias == 0)


def test_default_keeps_torchs_own_init(make_cfg):
    cfg = make_cfg("init=default")
    torch.manual_seed(0)
    model = nn.Linear(10, 10)
    before = model.weight.clone()
    apply(model, build(cfg.init.weight), build(cfg.init.bias))
    assert torch.equal(model.weight, before)


@pytest.mark.parametrize("init", ["zeros", "constant"])
def test_symmetric_init_leaves_hidden_units_identical_after_training(make_cfg, tmp_path, init):
    from runner.run import run

    cfg = make_cfg(f"init={init}", "regularizer=none", "optimizer=sgd", "model.depth=2", "model.width=16",
                   "trainer.epochs=3")
    run(cfg, tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    hidden = [k for k in state if k.endswith("weight")][:-1]  # every layer but the output layer
    assert hidden
    for key in hidden:
        w = state[key]
        assert torch.allclose(w, w[0].expand_as(w)), f"{key}: rows differ, symmetry broken"
    if init == "constant":  # the units did learn (they moved away from 0.01), all in the same way
        assert not torch.allclose(state[hidden[-1]], torch.full_like(state[hidden[-1]], 0.01))
