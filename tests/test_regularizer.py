"""Penalties: gradients against lambda * w, lambda * sign(w); biases and norms left alone; dropout."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from runner.model import MLP
from runner.regularizer import make_penalty, make_stack_penalty


def model():
    torch.manual_seed(0)
    return MLP((6,), 3, depth=2, width=8, norm=nn.LayerNorm)


def penalty_grads(penalty, lam, **extra):
    m = model()
    cfg = OmegaConf.create({"penalty": penalty, "lambda": lam, "include_bias": False, "include_norm": False, **extra})
    make_penalty(m, cfg)().backward()
    return m


def test_l2_gradient_is_lambda_w_on_weights_only():
    lam = 0.3
    m = penalty_grads("l2", lam)
    for name, p in m.named_parameters():
        is_linear_weight = name.endswith("weight") and p.dim() == 2
        if is_linear_weight:
            torch.testing.assert_close(p.grad, lam * p.detach())
        else:  # biases and LayerNorm's scale and shift
            assert p.grad is None, name


def test_l1_gradient_is_lambda_sign_w():
    m = penalty_grads("l1", 0.2)
    w = m.net[1][0].weight
    torch.testing.assert_close(w.grad, 0.2 * torch.sign(w.detach()))


def test_elastic_net_mixes_l1_and_l2():
    lam, r = 0.5, 0.25
    m = penalty_grads("elastic_net", lam, l1_ratio=r)
    w = m.net[1][0].weight.detach()
    torch.testing.assert_close(m.net[1][0].weight.grad, lam * (r * torch.sign(w) + (1 - r) * w))


def test_include_bias_and_norm_extend_the_penalty():
    m = model()
    cfg = OmegaConf.create({"penalty": "l2", "lambda": 1.0, "include_bias": True, "include_norm": True})
    value = make_penalty(m, cfg)().item()
    assert value == pytest.approx(sum(p.pow(2).sum().item() for p in m.parameters()) / 2, rel=1e-6)


def test_zero_lambda_or_none_builds_no_penalty():
    assert make_penalty(model(), OmegaConf.create({"penalty": "l2", "lambda": 0.0})) is None
    assert make_penalty(model(), OmegaConf.create({"penalty": "none", "lambda": 1.0})) is None


def test_unknown_penalty_names_the_choices():
    with pytest.raises(ValueError, match=r"regularizer.penalty='l3'.*elastic_net"):
        make_penalty(model(), OmegaConf.create({"penalty": "l3", "lambda": 1.0}))


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_inverted_dropout_keeps_the_expectation_and_is_off_in_eval(p):
    torch.manual_seed(0)
    m = MLP((4,), 2, depth=1, width=4, dropout=p)
    drop = next(x for x in m.modules() if isinstance(x, nn.Dropout))
    x = torch.ones(200_000)
    y = drop(x)
    assert ((y == 0).float().mean().item()) == pytest.approx(p, abs=0.01)
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)))  # survivors scaled by 1/(1-p)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    m.eval()
    assert torch.equal(drop(x), x)


def _train(make_cfg, tmp_path, *overrides):
    from runner.run import run

    cfg = make_cfg("regularizer=none", "model.depth=1", "model.width=16", "init.bias.val=0.1", *overrides)
    run(cfg, tmp_path)
    return torch.load(tmp_path / "last.pt", weights_only=True)["model"]


def test_adam_with_l2_is_not_adamw(make_cfg, tmp_path):
    lam = 0.05
    l2 = _train(make_cfg, tmp_path / "a", "optimizer=adam", "regularizer=l2", f"regularizer.lambda={lam}",
                "regularizer.include_bias=true")
    wd = _train(make_cfg, tmp_path / "b", "optimizer=adamw", f"optimizer.weight_decay={lam}")
    none = _train(make_cfg, tmp_path / "c", "optimizer=adam")
    diff = max((l2[k] - wd[k]).abs().max().item() for k in l2)
    assert diff > 1e-3
    assert all(l2[k].norm() < none[k].norm() for k in l2 if k.endswith("weight"))  # both still shrink weights
    assert all(wd[k].norm() < none[k].norm() for k in wd if k.endswith("weight"))


def test_sgd_with_l2_is_sgd_weight_decay(make_cfg, tmp_path):
    """For plain gradient descent the two coincide (the lectures' point)."""
    lam = 0.05
    l2 = _train(make_cfg, tmp_path / "a", "optimizer=sgd", "regularizer=l2", f"regularizer.lambda={lam}",
                "regularizer.include_bias=true")
    wd = _train(make_cfg, tmp_path / "b", "optimizer=sgd", f"optimizer.weight_decay={lam}")
    for k in l2:
        torch.testing.assert_close(l2[k], wd[k], rtol=1e-4, atol=1e-5)


def test_zero_fraction_counts_small_weights_only():
    from runner.regularizer import zero_fraction

    m = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2), nn.Linear(2, 3))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[0.0, 5e-4, -2e-4, 1.0], [0.5, -1e-3, 2e-3, -0.3]]))  # 3 of 8 below 1e-3
        m[2].weight.fill_(1e-5)  # 6 of 6
        m[0].bias.zero_()  # biases and the norm's weights do not count
    assert zero_fraction(m) == pytest.approx((3 + 6) / (8 + 6))


def test_a_stacks_penalty_adds_each_members_lambda_times_dP_dw():
    """Members with l2, l1, elastic net (biases included), no penalty and a frozen member: each slice of the
    stacked gradients gains that member's lambda * dP/dw, written out here, and nothing else."""
    cfgs = [OmegaConf.create({"penalty": k, "lambda": lam, "include_bias": bias, "include_norm": False, "l1_ratio": 0.25})
            for k, lam, bias in (("l2", 0.3, False), ("l1", 0.2, False), ("elastic_net", 0.5, True),
                                 ("none", 1.0, False), ("l2", 0.7, False))]
    models = [model() for _ in cfgs]
    add = make_stack_penalty(models, cfgs)
    torch.manual_seed(1)
    stacked = {n: torch.randn(len(cfgs), *p.shape) for n, p in models[0].named_parameters()}
    before = {n: torch.randn_like(w) for n, w in stacked.items()}
    for n, w in stacked.items():
        w.grad = before[n].clone()
    add(stacked, torch.tensor([True, True, True, True, False]))
    linear = {f"{name}.{kind}" for name, m in models[0].named_modules() if isinstance(m, nn.Linear)
              for kind in ("weight", "bias")}
    assert len(linear) == 6 and len(stacked) == 10  # 3 Linear layers; 2 LayerNorms' scale and shift are never penalized
    for n, w in stacked.items():
        weight, bias = n in linear and n.endswith("weight"), n in linear and n.endswith("bias")
        zero = torch.zeros_like(w[0])
        expected = [0.3 * w[0] if weight else zero,
                    0.2 * torch.sign(w[1]) if weight else zero,
                    0.5 * (0.25 * torch.sign(w[2]) + 0.75 * w[2]) if weight or bias else zero,
                    zero, zero]  # no penalty; frozen
        for k in range(len(cfgs)):
            torch.testing.assert_close(w.grad[k] - before[n][k], expected[k], msg=f"{n} member {k}")
    assert make_stack_penalty(models[3:4], cfgs[3:4]) is None
