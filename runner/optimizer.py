"""Optimizers come straight from torch.optim (conf/optimizer); this module picks torch's fastest
implementation for the device and adds the wrapper torch lacks: Lookahead."""

import functools

import torch

FUSED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad)
"""torch.optim classes with a fused kernel (one kernel for all parameters) on CPU and CUDA."""


def make_optimizer(factory: functools.partial, params, device: torch.device, lookahead_k: int = 0,
                   lookahead_alpha: float = 0.5):
    """The configured optimizer with fused=True where torch has the kernel, else foreach=True
    (same update rule, fewer and larger kernels: a quarter off a small MLP's step on CPU),
    unless the config sets either; wrapped in Lookahead when lookahead_k > 0."""
    fast = {}
    if not {"fused", "foreach"} & set(factory.keywords):
        fast = {"fused": True} if factory.func in FUSED and device.type in ("cpu", "cuda") else {"foreach": True}
    optimizer = factory(params, **fast)
    return Lookahead(optimizer, lookahead_k, lookahead_alpha) if lookahead_k else optimizer


class Lookahead:
    """Lookahead (Zhang et al., 2019): the wrapped optimizer takes k fast steps, then the slow
    weights move alpha of the way towards the fast ones, phi <- phi + alpha * (theta - phi),
    and the fast weights restart from the slow ones, theta <- phi."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if k < 1 or not 0 < alpha <= 1:
            raise ValueError(f"lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.optimizer, self.k, self.alpha, self.steps = optimizer, k, alpha, 0
        self.fast = [p for g in self.param_groups for p in g["params"]]
        self.slow = [p.detach().clone() for p in self.fast]

    @property
    def param_groups(self) -> list[dict]:  # the wrapped optimizer's own list (load_state_dict replaces it)
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.optimizer.step()
        self.steps += 1
        if self.steps % self.k == 0:
            torch._foreach_lerp_(self.slow, [p.detach() for p in self.fast], self.alpha)
            torch._foreach_copy_(self.fast, self.slow)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's (fast) weights and the slow ones: evaluation and best.pt see the slow
        weights, Lookahead's result (Zhang et al. evaluate them); a second swap restores training."""
        for fast, slow in zip(self.fast, self.slow):
            held = fast.detach().clone()
            fast.copy_(slow)
            slow.copy_(held)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "slow": self.slow, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        torch._foreach_copy_(self.slow, state["slow"])
        self.steps = state["steps"]
