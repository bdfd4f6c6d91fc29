"""Early stopping with patience and best-weight restoring, as in the lectures' algorithm:
evaluate every n updates (trainer.eval_every), reset the counter on improvement, stop after
`patience` evaluations without one, return the best parameters."""

import math

from runner.schema import EarlyStoppingConfig


class EarlyStopping:
    """Tracks the best monitored value; `update` says whether this evaluation is the new best."""

    def __init__(self, cfg: EarlyStoppingConfig):
        if cfg.mode not in ("min", "max"):
            raise ValueError(f"early_stopping.mode={cfg.mode!r} is not known; choose 'min' or 'max'")
        self.cfg = cfg
        self.best = math.inf if cfg.mode == "min" else -math.inf
        self.best_epoch: float | None = None
        self.wait = 0
        self.should_stop = False

    def update(self, value: float, epoch: float) -> bool:
        if epoch < self.cfg.start_from_epoch:
            return False
        sign = 1 if self.cfg.mode == "min" else -1
        improved = sign * (self.best - value) > self.cfg.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
            self.should_stop = self.cfg.patience is not None and self.wait >= self.cfg.patience
        return improved

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "should_stop": self.should_stop}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait, self.should_stop = (state[k] for k in ("best", "best_epoch", "wait",
                                                                                       "should_stop"))
