"""Normalization layers that torch lacks in the `norm(num_features)` form the models call."""

from torch import nn


def group_norm(num_features: int, num_groups: int = 8, eps: float = 1e-5, affine: bool = True) -> nn.GroupNorm:
    """nn.GroupNorm with the feature count first, like BatchNorm1d and LayerNorm."""
    if num_features % num_groups:
        raise ValueError(
            f"norm.num_groups={num_groups} must divide the layer width {num_features}; "
            f"choose a divisor of {num_features}"
        )
    return nn.GroupNorm(num_groups, num_features, eps=eps, affine=affine)


class ChannelsLast(nn.Module):
    """Apply a feature-wise norm (LayerNorm, RMSNorm) over the channels of an (N, C, L) tensor."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return self.norm(x.transpose(1, -1)).transpose(1, -1)
