"""Explicit weight penalties added to the training loss. Dropout, the other half of the
regularizer group, is built into the models (runner.model)."""

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

PENALTIES: dict[str, Callable[[torch.Tensor, DictConfig], torch.Tensor]] = {
    "l2": lambda w, cfg: w.pow(2).sum() / 2,
    "l1": lambda w, cfg: w.abs().sum(),
    "elastic_net": lambda w, cfg: cfg.l1_ratio * w.abs().sum() + (1 - cfg.l1_ratio) * w.pow(2).sum() / 2,
}

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def penalized(model: nn.Module, include_bias: bool = False, include_norm: bool = False) -> list[torch.Tensor]:
    """The parameters a penalty applies to: weights of Linear/Conv layers, plus biases and
    normalization parameters when asked."""
    out = []
    for m in model.modules():
        if isinstance(m, _NORMS):
            out += [p for p in m.parameters(recurse=False)] if include_norm else []
        else:
            for name, p in m.named_parameters(recurse=False):
                if name != "bias" or include_bias:
                    out.append(p)
    return out


def make_penalty(model: nn.Module, cfg: DictConfig) -> Callable[[], torch.Tensor] | None:
    """A function returning lambda * P(w) for the current weights, or None when there is no penalty."""
    if cfg.penalty == "none" or cfg["lambda"] == 0:
        return None
    if cfg.penalty not in PENALTIES:
        raise ValueError(f"regularizer.penalty={cfg.penalty!r} is not known; choose one of {['none', *PENALTIES]}")
    fn, lam, params = PENALTIES[cfg.penalty], float(cfg["lambda"]), penalized(model, cfg.include_bias, cfg.include_norm)
    return lambda: lam * sum(fn(p, cfg) for p in params)


@torch.no_grad()
def zero_fraction(model: nn.Module, tol: float = 1e-3) -> float:
    """The fraction of the weights (those a penalty applies to by default: no biases, no norm layers) with
    |w| < tol: how sparse an L1 penalty left the model (summary.json's weight_zero_frac)."""
    weights = penalized(model)
    total = sum(w.numel() for w in weights)
    return sum((w.abs() < tol).sum().item() for w in weights) / total if total else 0.0
