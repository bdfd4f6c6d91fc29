"""Weight and bias initialization of every Linear and Conv layer (normalization layers keep
their ones-and-zeros). The config's `weight` and `bias` nodes are torch.nn.init functions
or the two below, which only add a `distribution` switch to torch's pair of functions."""

from collections.abc import Callable

import torch
from torch import nn

from runner.model import ResidualBlock

InitFn = Callable[[torch.Tensor], torch.Tensor] | None


def _pick(distribution: str, normal: Callable, uniform: Callable) -> Callable:
    choices = {"normal": normal, "uniform": uniform}
    if distribution not in choices:
        raise ValueError(f"init.weight.distribution={distribution!r} is not known; choose one of {sorted(choices)}")
    return choices[distribution]


def xavier_(tensor: torch.Tensor, distribution: str = "normal", gain: float = 1.0) -> torch.Tensor:
    """Xavier/Glorot: Var(w) = gain^2 * 2 / (fan_in + fan_out)."""
    return _pick(distribution, nn.init.xavier_normal_, nn.init.xavier_uniform_)(tensor, gain=gain)


def he_(tensor: torch.Tensor, distribution: str = "normal", mode: str = "fan_in", nonlinearity: str = "relu",
        a: float = 0.0) -> torch.Tensor:
    """He/Kaiming: Var(w) = gain^2 / fan, gain^2 = 2 for ReLU."""
    fn = _pick(distribution, nn.init.kaiming_normal_, nn.init.kaiming_uniform_)
    return fn(tensor, a=a, mode=mode, nonlinearity=nonlinearity)


@torch.no_grad()
def apply(model: nn.Module, weight: InitFn, bias: InitFn) -> nn.Module:
    """Re-initialize the weights and biases of model's Linear and Conv layers; None keeps torch's."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if weight is not None:
                weight(m.weight)
            if bias is not None and m.bias is not None:
                bias(m.bias)
    for m in model.modules():  # residual branches' last layers: zeroed or scaled after the init (model.residual_init)
        if isinstance(m, ResidualBlock):
            m.init_last()
    return model
