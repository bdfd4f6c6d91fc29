import pytest
import torch
from torch import nn

from runner.model import ACTIVATIONS, CNN, MLP, BasicBlock, Normalize, Residual, ResNet
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


@pytest.mark.parametrize("norm", [None, nn.BatchNorm1d, nn.LayerNorm, nn.RMSNorm, group_norm])
def test_cnn_on_images_uses_conv2d_with_every_norm(norm):
    m = CNN((3, 32, 32), 10, channels=(16, 16), kernel_size=3, stride=2, norm=norm, residual=True)
    assert count(m, nn.Conv2d) == 2 + 2 * 2 and count(m, nn.Conv1d) == 0
    assert m.head.in_features == 16 * 8 * 8  # 32 -> 16 -> 8 on both sides
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    if norm is nn.BatchNorm1d:
        assert count(m, nn.BatchNorm2d) == 6 and count(m, nn.BatchNorm1d) == 0


def resnet_params(n, classes=10, w=1):
    """He et al.'s CIFAR ResNet counted by hand: 3x3 convs without bias, BatchNorm scale and shift,
    parameter-free shortcuts (option A), a Linear head."""
    c1, c2, c3 = 16 * w, 32 * w, 64 * w
    convs = 9 * (3 * c1 + 2 * n * c1 * c1 + (c1 * c2 + (2 * n - 1) * c2 * c2) + (c2 * c3 + (2 * n - 1) * c3 * c3))
    norms = 2 * (c1 + 2 * n * (c1 + c2 + c3))
    return convs + norms + c3 * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_resnet_parameter_counts(depth):
    m = ResNet((3, 32, 32), 10, depth=depth, norm=nn.BatchNorm1d)
    assert sum(p.numel() for p in m.parameters()) == resnet_params((depth - 2) // 6)
    assert count(m, nn.Conv2d) == depth - 1 and count(m, nn.BatchNorm2d) == depth - 1
    assert resnet_params(3) == 269_722  # ResNet-20: "0.27M" in He et al.'s Table 6
    assert sum(p.numel() for p in ResNet((3, 32, 32), 10, depth=20, width=2, norm=nn.BatchNorm1d).parameters()) == \
        resnet_params(3, w=2)


@pytest.mark.parametrize("preact", [False, True])
def test_resnet_shapes_on_images_and_signals(preact):
    m = ResNet((3, 32, 32), 100, depth=20, preact=preact, norm=nn.BatchNorm1d, dropout=0.1, input_dropout=0.1)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    blocks = [b for b in m.modules() if isinstance(b, BasicBlock)]
    assert [b.stride for b in blocks] == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(blocks[3].shortcut(x)[:, 8:24], x[:, :, ::2, ::2])  # subsampled, zero-padded channels
    assert blocks[3].shortcut(x)[:, :8].abs().sum() == 0
    signal = ResNet((40,), 10, depth=8, preact=preact, norm=nn.LayerNorm)
    assert signal(torch.randn(2, 40)).shape == (2, 10) and count(signal, nn.Conv1d) == 7


def test_normalize_converts_uint8_batches_per_channel():
    x = torch.tensor([[[[0, 255]], [[10, 20]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    out = Normalize(torch.tensor([100.0, 10.0]), torch.tensor([50.0, 5.0]))(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor([-2.0, 3.1, 0.0, 2.0]))  # (255 - 100) / 50 = 3.1
