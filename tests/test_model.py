import pytest
import torch
from torch import nn

from runner.model import ACTIVATIONS, CNN, GRU, MLP, BasicBlock, Normalize, Residual, ResidualBlock, ResNet
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
    assert count(m, ResidualBlock) == 3
    assert count(m, nn.Linear) == 1 + 3 * 2 + 1  # each block: W1 and W2


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
def logits_std(residual_init, seeds=range(3), depth=32):
    """The logits' std at init, averaged over seeds, of a He-initialized depth-32 ReLU MLP (plain when None)."""
    from runner import init

    stds = []
    for seed in seeds:
        torch.manual_seed(seed)
        m = MLP((40,), 10, depth=depth, width=256, residual=residual_init is not None,
                residual_init=residual_init or "zero")
        init.apply(m, init.he_, nn.init.zeros_)
        with torch.no_grad():
            stds.append(m.eval()(torch.randn(512, 40)).std().item())
    return sum(stds) / len(stds)


@pytest.mark.parametrize("residual_init", ["zero", "scaled"])
def test_residual_mlp_at_init_keeps_the_plain_nets_scale(residual_init):
    plain, residual = logits_std(None), logits_std(residual_init)
    assert plain / 3 < residual < 3 * plain


def test_residual_init_default_lets_the_signal_explode():
    # x + W2 relu(W1 x) with He init on both: Var triples per block, so 31 blocks give std ~ 3^15.5 ~ 2.5e7
    assert logits_std("default") > 1e5 * logits_std(None)


def test_residual_block_is_x_plus_a_linear_branch():
    m = MLP((8,), 2, depth=3, width=16, residual=True, residual_init="default")
    block = next(x for x in m.modules() if isinstance(x, ResidualBlock))
    w1, w2 = block.body[0], block.body[-1]
    assert isinstance(w2, nn.Linear) and w2.in_features == w2.out_features == 16
    x = torch.randn(5, 16)
    torch.testing.assert_close(block(x), x + (torch.relu(x @ w1.weight.T + w1.bias) @ w2.weight.T + w2.bias))


def test_residual_init_zero_and_scaled_set_the_last_layer_after_init():
    from runner import init

    torch.manual_seed(0)
    zero = init.apply(MLP((8,), 2, depth=5, width=16, residual=True, residual_init="zero"), init.he_, None)
    assert all(b.body[-1].weight.abs().sum() == 0 for b in zero.modules() if isinstance(b, ResidualBlock))
    torch.manual_seed(0)
    default = init.apply(MLP((8,), 2, depth=5, width=16, residual=True, residual_init="default"), init.he_, None)
    torch.manual_seed(0)
    scaled = init.apply(MLP((8,), 2, depth=5, width=16, residual=True, residual_init="scaled"), init.he_, None)
    pairs = [(s.body[-1].weight, d.body[-1].weight) for s, d in zip(scaled.modules(), default.modules())
             if isinstance(s, ResidualBlock)]
    assert len(pairs) == 4
    for s, d in pairs:  # 4 blocks: 1/sqrt(8)
        torch.testing.assert_close(s, d / 8 ** 0.5)


def test_residual_init_without_residual_is_refused(make_cfg):
    from runner.check import ConfigError, check_config

    with pytest.raises(ConfigError, match="model.residual_init='scaled': changes nothing without model.residual=true"):
        check_config(make_cfg("model.residual_init=scaled"))
    check_config(make_cfg("model.residual_init=scaled", "model.residual=true"))


def test_unknown_residual_init_names_the_choices():
    with pytest.raises(ValueError, match=r"model.residual_init='fixup'.*scaled"):
        MLP((4,), 2, residual=True, residual_init="fixup")


def test_gru_reads_the_signal_step_by_step():
    m = GRU((40,), 10, hidden_size=6, bidirectional=True)
    assert m(torch.randn(3, 40)).shape == (3, 10)
    assert m.head.in_features == 6 * 2 * 40
    gru = 3 * (6 * 1 + 6 * 6 + 2 * 6)  # 3 gates: input and hidden weights, two biases; per direction
    assert sum(p.numel() for p in m.parameters()) == 2 * gru + 480 * 10 + 10
    one_way = GRU((40,), 10, hidden_size=6, bidirectional=False)
    x = torch.randn(2, 40)
    x2 = x.clone()
    x2[:, -1] += 1.0  # a one-way GRU's first 39 outputs cannot see the last sample
    h, h2 = one_way.rnn(x.unsqueeze(-1))[0], one_way.rnn(x2.unsqueeze(-1))[0]
    torch.testing.assert_close(h[:, :39], h2[:, :39])
    h, h2 = m.rnn(x.unsqueeze(-1))[0], m.rnn(x2.unsqueeze(-1))[0]
    assert not torch.allclose(h[:, 38, 6:], h2[:, 38, 6:])  # the backward direction carries it to earlier steps


def test_gru_refuses_a_norm_layer():
    with pytest.raises(ValueError, match="model=gru takes no norm"):
        GRU((40,), 10, norm=nn.BatchNorm1d)


def test_gru_norm_is_refused_before_training(make_cfg):
    from runner.check import ConfigError, check_config

    with pytest.raises(ConfigError, match="norm=BatchNorm1d: model=gru takes no norm layer; choose norm=none"):
        check_config(make_cfg("model=gru", "norm=batchnorm"))


@pytest.mark.parametrize("model", ["cnn", "gru", "mlp model.depth=32 model.residual=true norm=batchnorm"])
def test_readme_model_commands_run(tmp_path, model):
    """README's `train model=cnn`, `train model=gru` and the residual MLP, with a 1-epoch budget on 256 samples."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    train = str(Path(sys.executable).with_name("train"))
    proc = subprocess.run([train, *f"model={model}".split(), "trainer.epochs=1", "data.train_size=256",
                           "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    if not model.startswith("mlp"):
        assert summary["config"]["optimizer"]["lr"] == 1e-2  # the preset's lr for the pair with adamw
