"""Data augmentation of training batches (conf/augment): each option a batched function of
(x, y) on the device, drawing from torch's seeded generators (trainer.seed), composed in the
order chosen (`augment=[crop_flip,cutout]`). Evaluation never sees them: fit() alone calls them.
Images are (N, C, H, W), uint8 or float; signals (N, L) or (N, C, L)."""

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from runner.check import ConfigError


def crop(x: torch.Tensor, pad: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Each image zero-padded by pad pixels on every side, then cropped back to its size at
    (top, left) of the padded image: offsets in [0, 2 * pad]; pad, pad is the original."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    return padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def flip(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """The images where `which` is true mirrored left-right."""
    return torch.where(which.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


def cut(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """A size x size square centred at (cy, cx) (rows cy - size // 2 ...) set to fill (per channel),
    clipped at the borders (DeVries and Taylor, 2017)."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device)[None, :] - (cy - size // 2)[:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] - (cx - size // 2)[:, None]
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return torch.where(inside[:, None], fill.to(x.dtype).view(1, -1, 1, 1), x)


def mix(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor, num_classes: int | None):
    """Mixup (Zhang et al., 2018): lam x + (1 - lam) x[perm], and the same mix of the targets (one-hot
    for classes), against which cross-entropy is lam CE(y) + (1 - lam) CE(y[perm])."""
    if num_classes:
        y = F.one_hot(y, num_classes).float()
    return lam * x.float() + (1 - lam) * x[perm].float(), lam * y + (1 - lam) * y[perm]


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each signal moved right by shift[i] samples (left when negative), zero-filled (the mean, once standardized)."""
    length = x.shape[-1]
    src = torch.arange(length, device=x.device)[None, :] - shift[:, None]  # (N, L): where each output sample comes from
    src = src.view(len(x), *[1] * (x.dim() - 2), length)
    taken = x.gather(-1, src.clamp(0, length - 1).expand_as(x))
    return torch.where((src >= 0) & (src < length), taken, torch.zeros((), dtype=x.dtype, device=x.device))


def stretch(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each signal stretched in time by factor[i] about its centre (linear interpolation, zero outside)."""
    length = x.shape[-1]
    centre = (length - 1) / 2
    pos = centre + (torch.arange(length, device=x.device)[None, :] - centre) / factor[:, None]  # (N, L)
    pos = pos.view(len(x), *[1] * (x.dim() - 2), length).expand_as(x)
    lo = pos.floor().long()
    frac = pos - lo
    padded = F.pad(x.float(), (1, 1))  # index -1 and L read zeros
    left = padded.gather(-1, (lo + 1).clamp(0, length + 1))
    right = padded.gather(-1, (lo + 2).clamp(0, length + 1))
    return torch.where((pos > -1) & (pos < length), (1 - frac) * left + frac * right, 0.0)


class Augment:
    """The chosen options in order: __call__(x, y) -> (x, y) for one training batch."""

    def __init__(self, ops: list[tuple[str, dict]], fill: torch.Tensor, scale: torch.Tensor, num_classes: int | None):
        self.ops, self.fill, self.scale, self.num_classes = ops, fill, scale, num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, dev = len(x), x.device
        for name, p in self.ops:
            if name == "crop_flip":
                if p["pad"]:
                    x = crop(x, p["pad"], *torch.randint(0, 2 * p["pad"] + 1, (2, n), device=dev))
                if p["flip"]:
                    x = flip(x, torch.rand(n, device=dev) < 0.5)
            elif name == "cutout":
                x = cut(x, p["size"], torch.randint(0, x.shape[-2], (n,), device=dev),
                        torch.randint(0, x.shape[-1], (n,), device=dev), self.fill.to(dev))
            elif name == "mixup":
                lam = torch.distributions.Beta(float(p["alpha"]), float(p["alpha"])).sample().item()
                x, y = mix(x, y, lam, torch.randperm(n, device=dev), self.num_classes)
            elif name == "noise":
                shape = (1, -1) + (1,) * (x.dim() - 2) if self.scale.numel() > 1 else ()
                x = x.float() + p["std"] * self.scale.to(dev).view(shape) * torch.randn(x.shape, device=dev)
            elif name == "shift":
                x = translate(x, torch.randint(-p["max"], p["max"] + 1, (n,), device=dev))
            elif name == "scale":
                x = stretch(x, 1 + p["max"] * (2 * torch.rand(n, device=dev) - 1))
        return x, y


# name: (the data kinds it fits, its settings and the rule each must satisfy)
OPTIONS = {
    "crop_flip": ({"image"}, {"pad": "count0", "flip": "bool"}),
    "cutout": ({"image"}, {"size": "count"}),
    "mixup": ({"tabular", "signal", "image"}, {"alpha": "positive"}),
    "noise": ({"tabular", "signal", "image"}, {"std": "positive"}),
    "shift": ({"signal"}, {"max": "count"}),
    "scale": ({"signal"}, {"max": "open_unit"}),
}
_RULES = {
    "count0": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "positive": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
                 "a number > 0"),
    "open_unit": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
                  "a number in (0, 1)"),
}


def make_augment(cfg: DictConfig | None, data) -> Augment | None:
    """The Augment of the chosen options (None for augment=none), after checking each fits the data
    (runner.data.Splits: kind, shape, task); every problem becomes a line of one ConfigError."""
    if not cfg:
        return None
    problems, ops = [], []
    shape = tuple(data.x_train.shape[1:])
    for name, params in cfg.items():
        if name not in OPTIONS:
            problems.append(f"augment.{name}: not an augmentation; choose from {sorted(OPTIONS)}")
            continue
        kinds, rules = OPTIONS[name]
        params = dict(params or {})
        if data.kind not in kinds:
            problems.append(f"augment={name}: does not fit {data.kind} data of shape {shape}; it takes "
                            f"{' or '.join(sorted(kinds))} data (images: data=digits data.image=true, mnist, "
                            f"cifar10...)")
            continue
        for key in sorted(set(params) ^ set(rules)):
            problems.append(f"augment.{name}.{key}: " + ("not a setting of " + name if key in params else "missing")
                            + f"; {name} takes {sorted(rules)}")
        for key, rule in rules.items():
            if key in params and not _RULES[rule][0](params[key]):
                problems.append(f"augment.{name}.{key}={params[key]!r}: must be {_RULES[rule][1]}")
        size, length = min(shape[-2:]), shape[-1]  # pad=0 flip=false is allowed: the zero point of a sweep over pad
        if name == "cutout" and isinstance(params.get("size"), int) and params["size"] > size:
            problems.append(f"augment.cutout.size={params['size']}: must be at most the image side {size}")
        if name == "shift" and isinstance(params.get("max"), int) and params["max"] >= length:
            problems.append(f"augment.shift.max={params['max']}: must be below the signal length {length}")
        ops.append((name, params))
    if problems:
        raise ConfigError("\n".join(problems))
    if data.mean is not None:  # uint8 images: cutout fills with the training mean, noise is in units of its std
        fill, scale = data.mean.round().to(torch.uint8), data.std
    else:  # standardized data: the mean is 0 and the std 1
        fill, scale = torch.zeros(shape[0] if data.kind == "image" else 1), torch.ones(())
    return Augment(ops, fill, scale, data.num_outputs if data.task == "classification" else None)
