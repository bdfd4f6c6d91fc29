"""Models: an MLP, a CNN (Conv1d on signals, Conv2d on images), the CIFAR ResNet and a GRU. Each
takes the norm layer factory (or None) and dropout p's at construction; initialization is applied
afterwards by runner.init. uint8 images enter through Normalize."""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from runner.norm import ChannelsLast

ACTIVATIONS: dict[str, Callable[[float], nn.Module]] = {
    "sigmoid": lambda slope: nn.Sigmoid(),
    "tanh": lambda slope: nn.Tanh(),
    "relu": lambda slope: nn.ReLU(),
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "elu": lambda slope: nn.ELU(),
    "gelu": lambda slope: nn.GELU(),
    "softsign": lambda slope: nn.Softsign(),
}

NormFactory = Callable[[int], nn.Module] | None


def make_activation(name: str, negative_slope: float = 0.01) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"model.activation={name!r} is not known; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](negative_slope)


class Residual(nn.Module):
    """x + f(x)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class ResidualBlock(Residual):
    """The standard residual block of an MLP: x + W2 f(W1 x), the branch ending in a Linear layer (f: norm,
    activation and dropout in the model's order). `init_last` re-initializes W2 after runner.init has set
    every layer: zero (the block starts as the identity), scaled (W2 times 1/sqrt(2 blocks): with He init and ReLU
    each block then multiplies the variance by 1 + 1/blocks, by e in all) or default (as the init group set it:
    with He and ReLU each block triples the variance)."""

    def __init__(self, body: nn.Module, residual_init: str, blocks: int):
        super().__init__(body)
        self.residual_init, self.blocks = residual_init, blocks

    @torch.no_grad()
    def init_last(self) -> None:
        last = self.body[-1]
        if self.residual_init == "zero":
            last.weight.zero_()
        elif self.residual_init == "scaled":
            last.weight.mul_((2 * self.blocks) ** -0.5)
        if self.residual_init != "default" and last.bias is not None:
            last.bias.zero_()


RESIDUAL_INITS = ("zero", "scaled", "default")


class MLP(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], out_features: int, *, depth: int = 3, width: int = 256,
                 activation: str = "relu", negative_slope: float = 0.01, residual: bool = False,
                 residual_init: str = "zero", norm_position: str = "before", norm: NormFactory = None,
                 dropout: float = 0.0, input_dropout: float = 0.0):
        super().__init__()
        if norm_position not in ("before", "after"):
            raise ValueError(f"model.norm_position={norm_position!r} is not known; choose 'before' or 'after'")
        if residual_init not in RESIDUAL_INITS:
            raise ValueError(f"model.residual_init={residual_init!r} is not known; choose one of {RESIDUAL_INITS}")
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            layers.append(nn.Dropout(input_dropout))
        fan_in = math.prod(in_shape)
        for i in range(depth):
            block: list[nn.Module] = [nn.Linear(fan_in, width)]
            a = make_activation(activation, negative_slope)
            n = norm(width) if norm else None
            block += [n, a] if norm_position == "before" else [a, n]
            if dropout:
                block.append(nn.Dropout(dropout))
            if residual and i > 0:  # x + W2 f(W1 x): the branch ends in a Linear layer, not an activation
                block.append(nn.Linear(width, width))
                layers.append(ResidualBlock(nn.Sequential(*[m for m in block if m is not None]), residual_init,
                                            depth - 1))
            else:
                layers.append(nn.Sequential(*[m for m in block if m is not None]))
            fan_in = width
        layers.append(nn.Linear(fan_in, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Normalize(nn.Module):
    """(x - mean) / std per channel, in float: uint8 images stay uint8 on the device and each batch
    is converted here. mean and std (C,) come from the training split (runner.data)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.to(torch.get_default_dtype()).clone())  # float32 unless a test asks float64
        self.register_buffer("std", std.to(torch.get_default_dtype()).clone())

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x = (x.to(self.mean.dtype) - self.mean.view(shape)) / self.std.view(shape)
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda and x.dim() == 4 else x


def with_input_norm(model: nn.Module, mean: torch.Tensor | None, std: torch.Tensor | None) -> nn.Module:
    """model behind a Normalize layer when the data come with per-channel statistics (uint8 images)."""
    return model if mean is None else nn.Sequential(Normalize(mean, std), model)


def channel_norm(norm: NormFactory, channels: int, dims: int) -> nn.Module | None:
    """The norm layer for (N, C, L) or (N, C, H, W) feature maps: BatchNorm1d becomes BatchNorm2d
    on images (same settings), feature-wise norms (LayerNorm, RMSNorm) act over the channels."""
    n = norm(channels) if norm else None
    if isinstance(n, nn.BatchNorm1d) and dims == 2:
        n = nn.BatchNorm2d(channels, eps=n.eps, momentum=n.momentum, affine=n.affine,
                           track_running_stats=n.track_running_stats)
    return ChannelsLast(n) if isinstance(n, (nn.LayerNorm, nn.RMSNorm)) else n


def _spatial(in_shape: tuple[int, ...]) -> tuple[int, list[int], type[nn.Module]]:
    """(channels, spatial size, Conv1d or Conv2d) of an input shape: (L,) and (C, L) are signals, (C, H, W) images."""
    channels, *size = (1, in_shape[0]) if len(in_shape) == 1 else in_shape
    if len(size) not in (1, 2):
        raise ValueError(f"input shape {in_shape}: convolutional models take (L,), (C, L) or (C, H, W)")
    return channels, size, (nn.Conv1d, nn.Conv2d)[len(size) - 1]


class CNN(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], out_features: int, *, channels: tuple[int, ...] = (32, 32, 32),
                 kernel_size: int = 5, stride: int = 2, residual: bool = False, activation: str = "relu",
                 negative_slope: float = 0.01, norm: NormFactory = None, dropout: float = 0.0,
                 input_dropout: float = 0.0):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size={kernel_size} must be odd")
        in_channels, size, conv_type = _spatial(in_shape)

        def unit(c_in, c_out, s):  # conv -> norm -> activation, the pattern every block repeats
            conv = conv_type(c_in, c_out, kernel_size, stride=s, padding=kernel_size // 2)
            n = channel_norm(norm, c_out, len(size))
            return [m for m in (conv, n, make_activation(activation, negative_slope)) if m is not None]

        layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout else []
        for c in channels:
            layers += unit(in_channels, c, stride)
            if residual:
                layers.append(Residual(nn.Sequential(*unit(c, c, 1), *unit(c, c, 1)[:-1])))
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_channels, size = c, [(s - 1) // stride + 1 for s in size]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels * math.prod(size), out_features)

    def forward(self, x):
        if x.dim() == 2:  # (N, L) signals get one channel
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """Two 3x3 convs and an identity shortcut, subsampled and zero-padded in channels where the
    shape changes (He et al.'s option A, no parameters). preact: norm -> act -> conv twice, then
    the sum (He et al., 2016b); else conv -> norm -> act, conv -> norm, act after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int, conv_type, dims: int, norm: NormFactory, act, dropout: float,
                 preact: bool):
        super().__init__()
        self.preact, self.stride, self.pad = preact, stride, c_out - c_in
        self.conv1 = conv_type(c_in, c_out, 3, stride=stride, padding=1, bias=norm is None)
        self.conv2 = conv_type(c_out, c_out, 3, padding=1, bias=norm is None)
        self.norm1 = channel_norm(norm, c_in if preact else c_out, dims) or nn.Identity()
        self.norm2 = channel_norm(norm, c_out, dims) or nn.Identity()
        self.act1, self.act2 = act(), act()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def shortcut(self, x):
        if self.stride > 1:
            x = x[(..., *[slice(None, None, self.stride)] * (x.dim() - 2))]
        if self.pad:
            x = F.pad(x, (0, 0) * (x.dim() - 2) + (self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x):
        if self.preact:
            out = self.conv1(self.act1(self.norm1(x)))
            return self.conv2(self.drop(self.act2(self.norm2(out)))) + self.shortcut(x)
        out = self.drop(self.act1(self.norm1(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016, section 4.2): a 3x3 conv of 16 x width channels, three
    stages of n basic blocks (16, 32, 64 channels x width; stride 2 entering stages 2 and 3),
    global average pooling and a Linear head; depth = 6n + 2 (ResNet-20: 0.27 M parameters).
    Conv2d on images, Conv1d on signals."""

    def __init__(self, in_shape: tuple[int, ...], out_features: int, *, depth: int = 20, width: int = 1,
                 preact: bool = False, activation: str = "relu", negative_slope: float = 0.01,
                 norm: NormFactory = None, dropout: float = 0.0, input_dropout: float = 0.0):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"model.depth={depth} must be 6n + 2 (20, 32, 44, 56, 110)")
        in_channels, size, conv_type = _spatial(in_shape)
        dims, c = len(size), 16 * width

        def act():
            return make_activation(activation, negative_slope)

        layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout else []
        layers.append(conv_type(in_channels, c, 3, padding=1, bias=norm is None))
        if not preact:
            layers += [m for m in (channel_norm(norm, c, dims), act()) if m is not None]
        for stage, channels in enumerate((16 * width, 32 * width, 64 * width)):
            for i in range((depth - 2) // 6):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(c, channels, stride, conv_type, dims, norm, act, dropout, preact))
                c = channels
        if preact:  # the last block's sum is not normalized yet
            layers += [m for m in (channel_norm(norm, c, dims), act()) if m is not None]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, out_features)

    def forward(self, x):
        if x.dim() == 2:  # (N, L) signals get one channel
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(2).mean(2))
class GRU(nn.Module):
    """The MNIST-1D paper's recurrent baseline: a GRU reads the signal one sample per step (both directions when
    bidirectional) and a Linear head classifies its outputs at every step, flattened; dropout (if any) acts on
    those outputs."""

    def __init__(self, in_shape: tuple[int, ...], out_features: int, *, hidden_size: int = 6,
                 bidirectional: bool = True, norm: NormFactory = None, dropout: float = 0.0,
                 input_dropout: float = 0.0):
        super().__init__()
        if norm is not None:
            raise ValueError("model=gru takes no norm layer; choose norm=none")
        in_channels, length = (1, in_shape[0]) if len(in_shape) == 1 else in_shape
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout else nn.Identity()
        self.rnn = nn.GRU(in_channels, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1) * length, out_features)

    def forward(self, x):
        x = self.input_dropout(x)
        x = x.unsqueeze(-1) if x.dim() == 2 else x.transpose(1, 2)  # (N, L) or (N, C, L) -> (N, L, C)
        return self.head(self.dropout(self.rnn(x)[0].flatten(1)))
