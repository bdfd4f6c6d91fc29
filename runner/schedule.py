"""Learning-rate schedules as pure functions. Each SCHEDULES entry maps (e, total) to a factor
of the base lr, where e is the (fractional) epoch counted from the end of warmup and total
the epochs after warmup. `make_lr_at` puts warmup in front and turns it into lr_at(step).
Plateau is the one schedule that depends on metrics rather than on time: `Plateau` tracks it
and multiplies whatever lr_at gives."""

import math
from collections.abc import Callable

from omegaconf import DictConfig


def constant(e, total):
    return 1.0


def step(e, total, step_size, gamma):
    return gamma ** math.floor(e / step_size)


def multistep(e, total, milestones, gamma):
    return gamma ** sum(e >= m for m in milestones)


def exponential(e, total, gamma):
    return gamma**e


def cosine(e, total, min_ratio=0.0):
    return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * min(e / total, 1.0))) / 2


def cosine_restarts(e, total, period, mult=1, min_ratio=0.0):
    """SGDR: cycle i lasts period * mult^i epochs and starts at the full lr. The cycle is found by
    adding lengths (exact in integers), not by a logarithm: floor(log(243, 3)) is 4 in floating
    point, which put the restart at 121 periods (mult 3) at the minimum lr instead."""
    if mult == 1:
        return cosine(e % period, period, min_ratio)
    start, length = 0, period
    while e >= start + length:
        start, length = start + length, length * mult
    return cosine(e - start, length, min_ratio)


def onecycle(e, total, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
    up = pct_start * total
    start, end = 1 / div_factor, 1 / (div_factor * final_div_factor)
    if e < up:
        return 1 + (start - 1) * (1 + math.cos(math.pi * e / up)) / 2
    return end + (1 - end) * (1 + math.cos(math.pi * min((e - up) / (total - up), 1.0))) / 2


def inverse_time(e, total, decay):
    return 1 / (1 + decay * e)


def plateau(e, total, **_):
    return 1.0  # the reductions come from Plateau


SCHEDULES: dict[str, Callable[..., float]] = {f.__name__: f for f in (
    constant, step, multistep, exponential, cosine, cosine_restarts, onecycle, inverse_time, plateau)}
WARMUPS = {
    "linear": lambda t: t,
    "cosine": lambda t: (1 + math.cos(math.pi * (1 - t))) / 2,
}
_NOT_HPARAMS = ("name", "warmup", "warmup_unit", "warmup_shape", "monitor", "mode", "factor", "patience",
                "threshold", "cooldown", "min_lr")


def hyperparameters(cfg: DictConfig) -> dict:
    """The schedule function's own settings: the node minus warmup and plateau's keys."""
    return {k: v for k, v in cfg.items() if k not in _NOT_HPARAMS}


def warmup_steps(cfg: DictConfig, steps_per_epoch: int) -> int:
    return int(round(cfg.warmup * (steps_per_epoch if cfg.warmup_unit == "epochs" else 1)))


def make_lr_at(cfg: DictConfig, base_lr: float, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """lr_at(step), for step = 0, 1, ... (the lr used by the step-th update)."""
    if cfg.name not in SCHEDULES:
        raise ValueError(f"schedule.name={cfg.name!r} is not known; choose one of {sorted(SCHEDULES)}")
    if cfg.warmup_shape not in WARMUPS:
        raise ValueError(f"schedule.warmup_shape={cfg.warmup_shape!r} is not known; choose one of {sorted(WARMUPS)}")
    fn, warm_fn = SCHEDULES[cfg.name], WARMUPS[cfg.warmup_shape]
    hparams = hyperparameters(cfg)
    warm = warmup_steps(cfg, steps_per_epoch)
    total = max(total_steps - warm, 1) / steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warm:  # (step + 1) so that the first update does not use lr = 0
            return base_lr * warm_fn((step + 1) / warm)
        return base_lr * fn((step - warm) / steps_per_epoch, total, **hparams)

    return lr_at


def check_extension(cfg: DictConfig, base_lr: float, steps_per_epoch: int, old_total: int, new_total: int,
                    done: int) -> None:
    """Resuming an interrupted run with another trainer.epochs gives exactly the run of the new
    length when every lr of the `done` steps is the same under both lengths (constant, step,
    multistep, exponential, inverse_time, cosine_restarts, plateau, any warmup); cosine and
    onecycle stretch with the length, so the steps done ran at lrs the longer run would not use:
    ConfigError, as the result would match neither run."""
    from runner.check import ConfigError

    if new_total <= done:
        raise ConfigError(f"trainer.epochs={new_total // steps_per_epoch}: the interrupted run already took {done} "
                          f"steps ({done / steps_per_epoch:g} epochs); give more epochs to extend it")
    old, new = (make_lr_at(cfg, base_lr, steps_per_epoch, t) for t in (old_total, new_total))
    first = next((s for s in range(done) if old(s) != new(s)), None)
    if first is not None:
        raise ConfigError(f"trainer.epochs={new_total // steps_per_epoch}: schedule={cfg.name} depends on the "
                          f"training length, so the {done} steps done (lr {old(first):.3g} at step {first}, where "
                          f"{new(first):.3g} would be) match no run of the new length; resume with the old "
                          "trainer.epochs, or start a new folder")


class Plateau:
    """torch's ReduceLROnPlateau rules (relative threshold) as a multiplier: `scale` drops by
    `factor` after more than `patience` evaluations without improvement, never below min_lr."""

    def __init__(self, cfg: DictConfig, base_lr: float):
        self.cfg, self.base_lr = cfg, base_lr
        self.scale, self.best, self.bad, self.cooldown = 1.0, None, 0, 0

    def update(self, value: float) -> None:
        c = self.cfg
        better = self.best is None or (
            value < self.best * (1 - c.threshold) if c.mode == "min" else value > self.best * (1 + c.threshold))
        self.best, self.bad = (value, 0) if better else (self.best, self.bad + 1)
        if self.cooldown > 0:
            self.cooldown, self.bad = self.cooldown - 1, 0
        if self.bad > c.patience:
            self.scale = max(self.scale * c.factor, c.min_lr / self.base_lr)
            self.bad, self.cooldown = 0, c.cooldown

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad, "cooldown": self.cooldown}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad, self.cooldown = (state[k] for k in ("scale", "best", "bad", "cooldown"))
