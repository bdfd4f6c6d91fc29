"""Per-layer training diagnostics, taken at each evaluation, to see why a technique works: the
gradient and weight norms of every Linear/Conv layer, the size of its last update relative to
its weights, and the statistics of the activation that follows it on a fixed probe batch
(mean, std, dead ReLU units, saturated sigmoid/tanh units). Forward hooks exist only during
that probe pass; with diagnostics=off nothing here runs at all."""

import math

import torch
from torch import nn

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Softsign)
SATURATED = {nn.Sigmoid: lambda a: (a < 0.01) | (a > 0.99), nn.Tanh: lambda a: a.abs() > 0.99,
             nn.Softsign: lambda a: a.abs() > 0.99}
"""Where each saturating activation's derivative is below about 1% of its maximum."""


class Diagnostics:
    def __init__(self, model: nn.Module, probe: torch.Tensor):
        self.model, self.probe, self.rows, self._before = model, probe, [], None
        self.layers: list[tuple[str, nn.Module]] = []
        self.activation_of: dict[nn.Module, int] = {}  # activation module -> index of the layer it follows
        for name, m in model.named_modules():
            if isinstance(m, LAYERS):
                self.layers.append((name, m))
            elif isinstance(m, ACTIVATIONS) and self.layers:
                self.activation_of[m] = len(self.layers) - 1

    @torch.no_grad()
    def before_step(self) -> None:
        """Remember the weights before the optimizer step that precedes an evaluation."""
        self._before = [m.weight.detach().clone() for _, m in self.layers]

    @torch.no_grad()
    def collect(self, epoch: float, step: int) -> list[dict]:
        """One row per layer for this evaluation (appended to self.rows)."""
        acts: dict[int, dict] = {}

        def hook(module, inputs, output):
            a = output.float()
            units = a.transpose(0, 1).reshape(a.shape[1], -1) if a.dim() > 2 else a.T  # (units, samples...)
            stats = {"act_mean": a.mean().item(), "act_std": a.std().item()}
            if isinstance(module, nn.ReLU):
                stats["dead_frac"] = (units.amax(1) <= 0).float().mean().item()  # zero for every probe sample
            if type(module) in SATURATED:
                stats["saturated_frac"] = SATURATED[type(module)](a).float().mean().item()
            acts[self.activation_of[module]] = stats

        handles = [m.register_forward_hook(hook) for m in self.activation_of]
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.inference_mode():
                self.model(self.probe)
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        rows = []
        for i, (name, m) in enumerate(self.layers):
            grads = [p.grad for p in m.parameters(recurse=False) if p.grad is not None]
            w = m.weight.detach()
            row = {"epoch": epoch, "step": step, "layer": i, "name": name,
                   "grad_norm": torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
                   if grads else math.nan,
                   "weight_norm": w.norm().item(),
                   "update_ratio": ((w - self._before[i]).norm() / self._before[i].norm().clamp_min(1e-12)).item()
                   if self._before else math.nan,
                   "act_mean": math.nan, "act_std": math.nan, "dead_frac": math.nan, "saturated_frac": math.nan}
            rows.append(row | acts.get(i, {}))
        self.rows += rows
        return rows


def flags(rows: list[dict], vanishing_below: float, exploding_above: float, dead_above: float,
          saturated_above: float) -> dict:
    """Summary fields: the median over evaluations of first-layer over last-layer gradient norm,
    the worst dead and saturated fractions of the last evaluation, and the flags they raise."""
    if not rows:
        return {}
    steps = sorted({r["step"] for r in rows})
    ratios = []
    for s in steps:
        layer = [r for r in rows if r["step"] == s]
        first, last = layer[0]["grad_norm"], layer[-1]["grad_norm"]
        if last > 0 and math.isfinite(first) and math.isfinite(last):
            ratios.append(first / last)
    ratio = sorted(ratios)[len(ratios) // 2] if ratios else math.nan
    final = [r for r in rows if r["step"] == steps[-1]]
    dead = max((r["dead_frac"] for r in final if not math.isnan(r["dead_frac"])), default=math.nan)
    saturated = max((r["saturated_frac"] for r in final if not math.isnan(r["saturated_frac"])), default=math.nan)
    raised = [name for name, on in [("vanishing gradients", ratio < vanishing_below),
                                    ("exploding gradients", ratio > exploding_above),
                                    ("dead units", dead > dead_above),
                                    ("saturated units", saturated > saturated_above)] if on]
    return {"diag_grad_ratio": ratio, "diag_dead_max": dead, "diag_saturated_max": saturated,
            "diag_flags": ", ".join(raised)}
