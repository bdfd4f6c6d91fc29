"""Models: an MLP, a 1-D CNN and a GRU. All take the norm layer factory (or None) and dropout p's at
construction; initialization is applied afterwards by runner.init."""

import math
from collections.abc import Callable

import torch
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


class CNN(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], out_features: int, *, channels: tuple[int, ...] = (32, 32, 32),
                 kernel_size: int = 5, stride: int = 2, residual: bool = False, activation: str = "relu",
                 negative_slope: float = 0.01, norm: NormFactory = None, dropout: float = 0.0,
                 input_dropout: float = 0.0):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size={kernel_size} must be odd")
        in_channels, length = (1, in_shape[0]) if len(in_shape) == 1 else in_shape

        def unit(c_in, c_out, s):  # conv -> norm -> activation, the pattern every block repeats
            conv = nn.Conv1d(c_in, c_out, kernel_size, stride=s, padding=kernel_size // 2)
            n = norm(c_out) if norm else None
            n = ChannelsLast(n) if isinstance(n, (nn.LayerNorm, nn.RMSNorm)) else n
            return [m for m in (conv, n, make_activation(activation, negative_slope)) if m is not None]

        layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout else []
        for c in channels:
            layers += unit(in_channels, c, stride)
            if residual:
                layers.append(Residual(nn.Sequential(*unit(c, c, 1), *unit(c, c, 1)[:-1])))
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_channels, length = c, (length - 1) // stride + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels * length, out_features)

    def forward(self, x):
        if x.dim() == 2:  # (N, L) signals get one channel
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))


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
