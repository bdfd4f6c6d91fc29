import csv
import json

import pytest
import torch
from torch import nn

from runner.diagnostics import Diagnostics, flags
from runner.model import MLP


def grads_of(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()


def test_deep_sigmoid_mlp_first_layer_gradient_is_far_below_the_last():
    torch.manual_seed(0)
    model = MLP((20,), 5, depth=10, width=64, activation="sigmoid")
    x, y = torch.randn(256, 20), torch.randint(0, 5, (256,))
    grads_of(model, x, y)
    rows = Diagnostics(model, x).collect(epoch=1, step=1)
    assert len(rows) == 11
    assert rows[0]["grad_norm"] < 1e-3 * rows[-1]["grad_norm"]  # sigmoid' <= 1/4 per layer: (1/4)^10 ~ 1e-6
    assert flags(rows, 1e-2, 1e2, 0.5, 0.5)["diag_flags"] == "vanishing gradients"
    torch.manual_seed(0)
    relu = MLP((20,), 5, depth=10, width=64, activation="relu")
    nn.init.kaiming_normal_(relu.net[1][0].weight)
    grads_of(relu, x, y)
    relu_rows = Diagnostics(relu, x).collect(1, 1)
    assert relu_rows[0]["grad_norm"] / relu_rows[-1]["grad_norm"] > rows[0]["grad_norm"] / rows[-1]["grad_norm"] * 100


def test_relu_layer_with_large_negative_bias_is_all_dead():
    model = MLP((8,), 2, depth=2, width=16)
    with torch.no_grad():
        model.net[2][0].bias.fill_(-100.0)
    x = torch.randn(128, 8)
    rows = Diagnostics(model, x).collect(1, 1)
    assert rows[1]["dead_frac"] == 1.0
    assert rows[0]["dead_frac"] < 0.5
    assert "dead units" in flags(rows, 1e-2, 1e2, 0.5, 0.5)["diag_flags"]


def test_saturated_tanh_and_update_ratio():
    model = MLP((4,), 2, depth=1, width=32, activation="tanh")
    with torch.no_grad():
        model.net[1][0].weight.mul_(100)
    x = torch.randn(64, 4)
    diag = Diagnostics(model, x)
    grads_of(model, x, torch.randint(0, 2, (64,)))
    diag.before_step()
    w = model.net[1][0].weight
    before = w.detach().clone()
    with torch.no_grad():
        w.add_(0.01 * torch.ones_like(w))
    rows = diag.collect(1, 1)
    assert rows[0]["saturated_frac"] > 0.8
    assert rows[0]["update_ratio"] == pytest.approx((0.01 * torch.ones_like(w)).norm().item() / before.norm().item(),
                                                    rel=1e-4)  # float32 rounding of w + 0.01


def test_hooks_exist_only_during_the_probe():
    model = MLP((4,), 2, depth=2, width=8)
    Diagnostics(model, torch.randn(8, 4)).collect(1, 1)
    assert all(not m._forward_hooks for m in model.modules())


def test_diagnostics_csv_and_off_switch(make_cfg, tmp_path):
    from runner.run import run

    summary = run(make_cfg("data=digits", "model.depth=2"), tmp_path / "on")
    rows = list(csv.DictReader(open(tmp_path / "on" / "diagnostics.csv")))
    assert len(rows) == 2 * 3 and {r["layer"] for r in rows} == {"0", "1", "2"}
    assert 0 < float(rows[0]["update_ratio"]) < 1 and float(rows[0]["grad_norm"]) > 0
    assert "diag_grad_ratio" in summary and summary["diag_flags"] == ""
    off = run(make_cfg("data=digits", "model.depth=2", "diagnostics=off"), tmp_path / "off")
    assert not (tmp_path / "off" / "diagnostics.csv").exists() and "diag_grad_ratio" not in off
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["test_acc"] == summary["test_acc"]
