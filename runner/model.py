"""Models: an MLP and a 1-D CNN. Both take the norm layer factory (or None) and dropout p's at
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


class MLP(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], out_features: int, *, depth: int = 3, width: int = 256,
                 activation: str = "relu", negative_slope: float = 0.01, residual: bool = False,
                 norm_position: str = "before", norm: NormFactory = None, dropout: float = 0.0,
                 input_dropout: float = 0.0):
        super().__init__()
        if norm_position not in ("before", "after"):
            raise ValueError(f"model.norm_position={norm_position!r} is not known; choose 'before' or 'after'")
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
            body = nn.Sequential(*[m for m in block if m is not None])
            layers.append(Residual(body) if residual and i > 0 else body)
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
