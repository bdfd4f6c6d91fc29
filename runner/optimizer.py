"""Optimizers come straight from torch.optim (conf/optimizer); this module adds the one torch
lacks: Lookahead, a wrapper around any of them."""

import torch


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

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "slow": self.slow, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        torch._foreach_copy_(self.slow, state["slow"])
        self.steps = state["steps"]
