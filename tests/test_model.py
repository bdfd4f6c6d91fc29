import pytest
import torch
from torch import nn

from runner.model import ACTIVATIONS, CNN, MLP, Residual
from runner.norm import group_norm


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def test_mlp_depth_width_and_logistic_regression():
    m = MLP((40,), 10, depth=3, width=64)
    assert count(m, nn.Linear) == 4
    assert m(torch.randn(5, 40)).shape == (5, 10)
    logistic = MLP((40,), 10, depth=0)
    assert count(logistic, nn.Linear) == 1 and sum(p.numel() for p in logistic.parameters()) == 40 * 10 + 10


def test_mlp_residual_wraps_every_hidden_layer_after_the_first():
    m = MLP((8,), 2, depth=4, width=16, residual=True)
    assert count(m, Residual) == 3
    block = next(x for x in m.modules() if isinstance(x, Residual))
    x = torch.randn(3, 16)
    torch.testing.assert_close(block(x), x + block.body(x))


@pytest.mark.parametrize("position,order", [("before", [nn.Linear, nn.BatchNorm1d, nn.ReLU]),
                                            ("after", [nn.Linear, nn.ReLU, nn.BatchNorm1d])])
def test_norm_position(position, order):
    m = MLP((8,), 2, depth=1, width=16, norm=nn.BatchNorm1d, norm_position=position)
    assert [type(x) for x in m.net[1]] == order


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_builds(name):
    m = MLP((4,), 2, depth=1, width=8, activation=name, negative_slope=0.2)
    assert m(torch.randn(3, 4)).shape == (3, 2)


def test_leaky_relu_uses_the_slope():
    m = MLP((4,), 2, depth=1, width=8, activation="leaky_relu", negative_slope=0.2)
    assert next(x for x in m.modules() if isinstance(x, nn.LeakyReLU)).negative_slope == 0.2


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match=r"model.activation='swish'.*relu"):
        MLP((4,), 2, activation="swish")


@pytest.mark.parametrize("norm", [None, nn.BatchNorm1d, nn.LayerNorm, nn.RMSNorm, group_norm])
@pytest.mark.parametrize("residual", [False, True])
def test_cnn_shapes_with_every_norm(norm, residual):
    m = CNN((40,), 10, channels=(16, 16, 16), kernel_size=5, stride=2, norm=norm, residual=residual, dropout=0.1)
    assert m(torch.randn(4, 40)).shape == (4, 10)
    assert m.head.in_features == 16 * 5  # 40 -> 20 -> 10 -> 5
    assert count(m, Residual) == (3 if residual else 0)


def test_group_norm_needs_a_divisor():
    with pytest.raises(ValueError, match="num_groups=8 must divide the layer width 12"):
        group_norm(12, num_groups=8)
