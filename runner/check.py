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
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{key}={value!r}: must be finite, {allowed}")
    elif not ok(value):
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
                      ("norm.eps", "positive"), ("norm.num_groups", "count"),
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
                      ("data.in_features", "count"), ("data.out_features", "count"), ("data.hidden", "count"),
                      ("data.seed", "count0")]:
        _check(p, cfg, key, rule)
    _check(p, cfg, "norm.momentum", "fraction", optional=True)  # null: a plain cumulative average (torch's)
    _check(p, cfg, "early_stopping.patience", "count0", optional=True)
    _check(p, cfg, "data.train_size", "size", optional=True)
    _check(p, cfg, "data.test_size", "size", optional=True)  # null: the dataset's own test split
    _check(p, cfg, "trainer.num_threads", "count", optional=True)
    betas = cfg.optimizer.get("betas")
    if betas is not None and (not OmegaConf.is_list(betas) or len(betas) != 2):
        p.append(f"optimizer.betas={betas!r}: must be a list of 2 numbers in [0, 1), e.g. [0.9,0.999]")
    for i, beta in enumerate(betas if OmegaConf.is_list(betas) else []):
        if not RULES["probability"][0](beta):
            p.append(f"optimizer.betas[{i}]={beta!r}: must be a number in [0, 1)")
    _unknown_keys(p, cfg)
    _unknown_arguments(p, cfg)
    if cfg.regularizer.get("penalty") == "none" and _number(cfg.regularizer.get("lambda")) and cfg.regularizer["lambda"]:
        p.append(f"regularizer.lambda={cfg.regularizer['lambda']!r}: regularizer has no weight penalty (penalty: none), "
                 "so lambda would change nothing; choose regularizer=l2, l1 or elastic_net")
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


def _top_level_keys() -> set[str]:
    """What a top-level key may be: a config group of conf/ or a key of conf/train.yaml."""
    from importlib.resources import files

    import yaml

    conf = files("runner.conf")
    groups = {p.name for p in conf.iterdir() if p.is_dir() and not p.name.startswith("_")}
    return groups | set(yaml.safe_load((conf / "train.yaml").read_text())) | {"trainer", "paths", "hydra"}


def _unknown_keys(problems: list, cfg: DictConfig) -> None:
    """`+optimiser=adam` (Hydra's suggestion for a misspelt group) adds a key nothing reads: refused. Keys
    starting with _ are an experiment's own helper nodes (read through interpolations) and pass."""
    import difflib

    known = _top_level_keys()
    for key in cfg:
        if key not in known and not str(key).startswith("_"):
            near = difflib.get_close_matches(str(key), sorted(known), n=1)
            problems.append(f"{key}={OmegaConf.select(cfg, str(key))!r}: not a config key, nothing would read it"
                            + (f"; did you mean {near[0]}?" if near else f"; config keys: {sorted(known)}"))


def _unknown_arguments(problems: list, cfg: DictConfig) -> None:
    """A key added under a torch-built node (`+optimizer.foo=1`) that its _target_ does not take."""
    import inspect

    from hydra.utils import get_object

    nodes = [(k, cfg[k]) for k in ("optimizer", "norm", "clip", "model")] + \
            [(f"init.{k}", cfg.init[k]) for k in ("weight", "bias") if k in cfg.get("init", {})]
    for name, node in nodes:
        if not OmegaConf.is_dict(node) or "_target_" not in node:
            continue
        try:
            target = get_object(node._target_)
            params = inspect.signature(target).parameters
        except Exception:  # noqa: BLE001 - an unknown target fails where it is built, with Hydra's message
            continue
        if any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values()):
            continue
        for key in node:
            if not str(key).startswith("_") and key not in params:
                problems.append(f"{name}.{key}={node[key]!r}: {node._target_} takes no such argument; "
                                f"it takes {[q for q in params if q not in ('self', 'params')]}")


def config_warnings(cfg: DictConfig) -> list[str]:
    """Legal combinations that confound an ablation: each a line in the log and in summary.json."""
    out = []
    decay = cfg.optimizer.get("weight_decay")
    if cfg.regularizer.get("penalty") not in (None, "none") and _number(decay) and decay > 0:
        out.append(f"two weight penalties at once: regularizer={cfg.regularizer.penalty} (lambda="
                   f"{cfg.regularizer['lambda']}) and optimizer.weight_decay={decay}; set optimizer.weight_decay=0 "
                   "to ablate the penalty alone")
    return out


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
