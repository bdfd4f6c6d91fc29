"""Checks of a composed config before any training: each problem becomes one line naming the
key, the value given and what is allowed. Hydra and the dataclass schemas already refuse
unknown keys and wrong types; these are the value ranges and combinations they cannot see."""

import math
import os

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A user's config mistake: reported as its message alone, never as a traceback."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


RULES = {  # name: (predicate, what is allowed)
    "positive": (lambda v: _number(v) and v > 0, "a number > 0"),
    "non_negative": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "probability": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "fraction": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "open_unit": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "unit_interval": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "count0": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "size": (lambda v: _number(v) and (0 < v < 1 or (v >= 1 and float(v).is_integer())),
             "a count >= 1 or a fraction in (0, 1)"),
}


def _check(problems: list, cfg: DictConfig, key: str, rule: str, optional: bool = False) -> None:
    node, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, node) if node else cfg
    if parent is None or leaf not in parent:
        return
    value = parent[leaf]
    if value is None and optional:
        return
    ok, allowed = RULES[rule]
    if not ok(value):
        problems.append(f"{key}={value!r}: must be {allowed}")


def _one_of(problems: list, cfg: DictConfig, key: str, allowed) -> None:
    value = OmegaConf.select(cfg, key, default="<absent>")
    if value != "<absent>" and value not in allowed:
        problems.append(f"{key}={value!r}: must be one of {sorted(allowed)}")


def metric_columns(cfg: DictConfig) -> list[str]:
    """The columns metrics.csv will have for this config (what monitor keys may name)."""
    from runner.data import REGRESSION

    metric = "r2" if cfg.data.name in REGRESSION or cfg.data.get("task") == "regression" else "acc"
    return ["train_loss", f"train_{metric}", f"val_{metric}", "val_loss", "lr", "grad_norm"]


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem found in cfg."""
    import torch

    from runner.data import DATASETS, STANDARDIZE
    from runner.model import ACTIVATIONS
    from runner.regularizer import PENALTIES
    from runner.schedule import SCHEDULES, WARMUPS

    p: list[str] = []
    for key, rule in [("optimizer.lr", "positive"), ("optimizer.momentum", "probability"),
                      ("optimizer.weight_decay", "non_negative"), ("optimizer.eps", "positive"),
                      ("optimizer.alpha", "open_unit"), ("optimizer.dampening", "fraction"),
                      ("lookahead.k", "count0"), ("lookahead.alpha", "unit_interval"),
                      ("regularizer.lambda", "non_negative"), ("regularizer.dropout", "probability"),
                      ("regularizer.input_dropout", "probability"), ("regularizer.l1_ratio", "fraction"),
                      ("early_stopping.min_delta", "non_negative"), ("early_stopping.start_from_epoch", "count0"),
                      ("trainer.epochs", "count"), ("trainer.batch_size", "count"), ("trainer.eval_every", "count"),
                      ("clip.max_norm", "positive"), ("clip.clip_value", "positive"),
                      ("model.depth", "count0"), ("model.width", "count"), ("model.kernel_size", "count"),
                      ("model.stride", "count"), ("model.negative_slope", "non_negative"),
                      ("norm.eps", "positive"), ("norm.num_groups", "count"), ("norm.momentum", "fraction"),
                      ("init.weight.std", "positive"), ("init.weight.gain", "positive"),
                      ("schedule.warmup", "non_negative"), ("schedule.gamma", "unit_interval"),
                      ("schedule.step_size", "positive"), ("schedule.period", "positive"), ("schedule.mult", "count"),
                      ("schedule.pct_start", "open_unit"), ("schedule.factor", "open_unit"),
                      ("schedule.patience", "count0"), ("schedule.cooldown", "count0"),
                      ("schedule.min_lr", "non_negative"), ("schedule.min_ratio", "fraction"),
                      ("schedule.decay", "non_negative"), ("schedule.div_factor", "positive"),
                      ("schedule.final_div_factor", "positive"), ("schedule.threshold", "non_negative"),
                      ("data.val_size", "size"), ("data.label_noise", "probability"),
                      ("data.download_timeout", "positive"),
                      ("data.n_samples", "count"), ("data.noise", "non_negative"), ("data.arms", "count"),
                      ("data.in_features", "count"), ("data.out_features", "count"), ("data.hidden", "count")]:
        _check(p, cfg, key, rule)
    _check(p, cfg, "early_stopping.patience", "count0", optional=True)
    _check(p, cfg, "data.train_size", "size", optional=True)
    _check(p, cfg, "data.test_size", "size", optional=True)  # null: the dataset's own test split
    _check(p, cfg, "trainer.num_threads", "count", optional=True)
    for i, beta in enumerate(cfg.optimizer.get("betas") or []):
        if not RULES["probability"][0](beta):
            p.append(f"optimizer.betas[{i}]={beta!r}: must be a number in [0, 1)")
    for i, c in enumerate(cfg.model.get("channels") or []):
        if not RULES["count"][0](c):
            p.append(f"model.channels[{i}]={c!r}: must be an integer >= 1")
    if "kernel_size" in cfg.model and isinstance(cfg.model.kernel_size, int) and cfg.model.kernel_size % 2 == 0:
        p.append(f"model.kernel_size={cfg.model.kernel_size}: must be odd (the padding keeps the length)")
    depth = cfg.model.get("depth")
    if str(cfg.model.get("_target_")).endswith("ResNet") and isinstance(depth, int) and (depth < 8 or (depth - 2) % 6):
        p.append(f"model.depth={depth}: must be 6n + 2 (20, 32, 44, 56, 110: n blocks in each of 3 stages)")
    _one_of(p, cfg, "model.activation", ACTIVATIONS)
    _one_of(p, cfg, "model.norm_position", ["before", "after"])
    _one_of(p, cfg, "data.name", DATASETS)
    _one_of(p, cfg, "data.standardize", STANDARDIZE)
    _one_of(p, cfg, "regularizer.penalty", ["none", *PENALTIES])
    _one_of(p, cfg, "schedule.name", SCHEDULES)
    _one_of(p, cfg, "schedule.warmup_unit", ["steps", "epochs"])
    _one_of(p, cfg, "schedule.warmup_shape", WARMUPS)
    _one_of(p, cfg, "schedule.mode", ["min", "max"])
    _one_of(p, cfg, "early_stopping.mode", ["min", "max"])
    _one_of(p, cfg, "trainer.eval_unit", ["epoch", "step"])
    _one_of(p, cfg, "trainer.precision", ["fp32", "bf16"])
    _one_of(p, cfg, "init.weight.distribution", ["normal", "uniform"])
    _one_of(p, cfg, "init.weight.mode", ["fan_in", "fan_out"])
    if cfg.schedule.get("name") in SCHEDULES:
        import inspect

        from runner.schedule import hyperparameters

        takes = list(inspect.signature(SCHEDULES[cfg.schedule.name]).parameters)[2:]
        for key in hyperparameters(cfg.schedule):
            if key not in takes:
                p.append(f"schedule.{key}={cfg.schedule[key]!r}: schedule={cfg.schedule.name} has no such setting; "
                         f"it takes {takes or 'none'}")
    if cfg.data.get("name") in DATASETS:
        columns = metric_columns(cfg)
        _one_of(p, cfg, "early_stopping.monitor", columns)
        _one_of(p, cfg, "schedule.monitor", columns)
    if cfg.model.get("residual_init", "zero") != "zero" and not cfg.model.get("residual"):
        p.append(f"model.residual_init={cfg.model.residual_init!r}: changes nothing without model.residual=true")
    if str(cfg.model.get("_target_")).endswith(".GRU") and cfg.norm.get("_target_"):
        p.append(f"norm={cfg.norm._target_.rsplit('.', 1)[-1]}: model=gru takes no norm layer; choose norm=none")
    widths = [cfg.model.width] if "width" in cfg.model else list(cfg.model.get("channels") or [])
    groups = cfg.norm.get("num_groups")
    if isinstance(groups, int) and groups >= 1 and any(isinstance(w, int) and w % groups for w in widths):
        p.append(f"norm.num_groups={groups}: must divide every layer width ({widths})")
    device = str(cfg.trainer.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.append(f"trainer.device={device!r}: no CUDA GPU is available here; use auto or cpu")
    elif device.startswith("cuda:") and int(device.split(":")[1]) >= torch.cuda.device_count():
        p.append(f"trainer.device={device!r}: only {torch.cuda.device_count()} CUDA devices are available")
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        p.append("trainer.device='mps': no Apple GPU is available here; use auto or cpu")
    elif device not in ("auto", "cpu", "mps") and not device.startswith("cuda"):
        p.append(f"trainer.device={device!r}: must be auto, cpu, cuda, cuda:N or mps")
    if cfg.trainer.get("distributed") and "WORLD_SIZE" not in os.environ:
        p.append("trainer.distributed=true: start it with torchrun --nproc_per_node=N -m runner.train ...")
    world = int(os.environ.get("WORLD_SIZE", "1")) if cfg.trainer.get("distributed") else 1
    if isinstance(cfg.trainer.batch_size, int) and cfg.trainer.batch_size % world:
        p.append(f"trainer.batch_size={cfg.trainer.batch_size}: must be a multiple of the {world} processes")
    from runner.logger import problems as logger_problems

    p += logger_problems(cfg)  # conf/logger: a tracker whose extra is not installed
    if p:
        raise ConfigError("\n".join(p))


def check_against_data(cfg: DictConfig, n_train: int) -> None:
    """The checks that need the training set's size."""
    p = []
    batch = min(cfg.trainer.batch_size, n_train)
    if cfg.norm.get("_target_", "").endswith("BatchNorm1d") and batch < 2:
        p.append(f"trainer.batch_size={cfg.trainer.batch_size}: batchnorm needs batches of 2 or more "
                 f"(the training split has {n_train} samples)")
    steps_per_epoch = n_train // batch
    total = cfg.trainer.epochs * steps_per_epoch
    from runner.schedule import warmup_steps

    warm = warmup_steps(cfg.schedule, steps_per_epoch)
    if warm >= total:
        p.append(f"schedule.warmup={cfg.schedule.warmup} ({cfg.schedule.warmup_unit}): must be shorter than training "
                 f"({total} steps = {cfg.trainer.epochs} epochs x {steps_per_epoch} steps)")
    if p:
        raise ConfigError("\n".join(p))
