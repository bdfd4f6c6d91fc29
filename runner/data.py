"""Datasets generated or bundled locally, read from their standard distribution files
(runner.dataset_files, downloaded on first use) or from the user's npz/csv file, split with a
seed into train/val/test tensors that stay in memory, on the training device. Images stay
uint8 there; the model's first layer (runner.model.Normalize) converts each batch."""

import hashlib
import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from runner.check import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str  # classification | regression
    num_outputs: int  # classes, or regression targets
    kind: str = "tabular"  # tabular (N, F) | signal (N, L) or (N, C, L) | image (N, C, H, W): what augment fits
    mean: torch.Tensor | None = None  # uint8 images: per-channel mean and std of the training split, which
    std: torch.Tensor | None = None   # the model's Normalize layer applies to each batch

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device) -> "Splits":
        return Splits(**{f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                         for f in fields(self)})


def mnist1d(cfg: DictConfig, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D from the mnist1d package's generator, cached as .npz keyed by its arguments."""
    args = {"num_samples": cfg.n_samples, "seed": 42}  # the package's generator seed, as in the paper
    path = data_dir / f"mnist1d-{hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:10]}.npz"
    if path.exists():
        with np.load(path) as f:
            return f["x"], f["y"]
    from mnist1d.data import get_dataset_args, make_dataset

    full = get_dataset_args(as_dict=True) | args | {"train_split": 1.0}
    log.info("generating MNIST-1D (%d samples) into %s", cfg.n_samples, path)
    d = make_dataset(type("Args", (), full))
    x, y = d["x"].astype(np.float32), d["y"].astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{np.random.randint(1 << 30)}.npz")
    np.savez(tmp, x=x, y=y)
    tmp.replace(path)
    return x, y


def digits(cfg: DictConfig, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    if cfg.get("image"):  # 1x8x8 uint8 images of grey levels 0-16
        return d.images.astype(np.uint8)[:, None], d.target.astype(np.int64)
    return d.data.astype(np.float32), d.target.astype(np.int64)


def _root(cfg: DictConfig, data_dir: Path) -> Path:
    return Path(cfg.root).expanduser() if cfg.get("root") else data_dir / cfg.name


def mnist(cfg: DictConfig, data_dir: Path):
    from runner.dataset_files import idx_dataset

    return idx_dataset(cfg.name, _root(cfg, data_dir), cfg.download_timeout)


def cifar(cfg: DictConfig, data_dir: Path):
    from runner.dataset_files import cifar_dataset

    if cfg.label not in ("fine", "coarse") or (cfg.label == "coarse" and cfg.name == "cifar10"):
        raise ConfigError(f"data.label={cfg.label!r}: must be fine{' or coarse' * (cfg.name == 'cifar100')} "
                          f"for {cfg.name}")
    return cifar_dataset(cfg.name, _root(cfg, data_dir), cfg.download_timeout, coarse=cfg.label == "coarse")


def _user_file(cfg: DictConfig) -> Path:
    if not cfg.get("path"):
        raise ConfigError(f"data.path={cfg.get('path')!r}: give the {cfg.name} file to read (data.path=FILE)")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.path={cfg.path!r}: no such file")
    return path


def npz(cfg: DictConfig, data_dir: Path):
    """Arrays x and y of an .npz file, and x_test, y_test when it has them (never unpickled)."""
    path = _user_file(cfg)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, EOFError) as e:
        raise ConfigError(f"data.path={cfg.path!r}: not a readable .npz file of numeric arrays ({e})") from None
    if "x" not in arrays or "y" not in arrays or ("x_test" in arrays) != ("y_test" in arrays):
        raise ConfigError(f"data.path={cfg.path!r}: holds arrays {sorted(arrays)}; expected x and y, and "
                          f"optionally x_test with y_test")
    for k, v in arrays.items():
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool) or (k[0] == "x" and v.ndim < 2):
            raise ConfigError(f"data.path={cfg.path!r}: array {k} has dtype {v.dtype} and shape {v.shape}; "
                              f"expected numbers{', one row per sample (N, features...)' * (k[0] == 'x')}")
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise ConfigError(f"data.path={cfg.path!r}: array {k} has {(~np.isfinite(v)).sum()} NaN or infinite "
                              f"values; remove or fill them")
    for x, y in (("x", "y"), ("x_test", "y_test")):
        if x in arrays and len(arrays[x]) != len(arrays[y]):
            raise ConfigError(f"data.path={cfg.path!r}: {x} has {len(arrays[x])} rows but {y} {len(arrays[y])}")
    return tuple(arrays[k] for k in ("x", "y", "x_test", "y_test") if k in arrays)


def csv(cfg: DictConfig, data_dir: Path):
    """A table: data.target is the label (classification) or value (regression), every other
    column a numeric feature."""
    import pandas as pd

    path = _user_file(cfg)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ConfigError(f"data.path={cfg.path!r}: not a readable CSV file ({e})") from None
    if cfg.target not in table.columns:
        raise ConfigError(f"data.target={cfg.target!r}: {path.name} has no such column; its columns are "
                          f"{list(table.columns)}")
    features = table.drop(columns=cfg.target)
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text:
        raise ConfigError(f"data.path={cfg.path!r}: columns {text} are not numeric; encode or drop them "
                          f"(only data.target={cfg.target!r} may hold labels)")
    gaps = {c: int(n) for c, n in features.isna().sum().items() if n} | (
        {cfg.target: int(table[cfg.target].isna().sum())} if table[cfg.target].isna().any() else {})
    if gaps:
        raise ConfigError(f"data.path={cfg.path!r}: missing (NaN) values in columns {gaps} (column: count); "
                          f"fill or drop those rows")
    if features.shape[1] == 0:
        raise ConfigError(f"data.path={cfg.path!r}: no feature columns besides data.target={cfg.target!r}")
    y = table[cfg.target].to_numpy()
    return features.to_numpy(np.float32), y if pd.api.types.is_numeric_dtype(y) else y.astype(str)


def moons(cfg: DictConfig, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons

    x, y = make_moons(cfg.n_samples, noise=cfg.noise, random_state=cfg.seed)
    return x.astype(np.float32), y.astype(np.int64)


def spirals(cfg: DictConfig, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    y = np.arange(cfg.n_samples) % cfg.arms
    r = rng.uniform(0.05, 1.0, cfg.n_samples)
    theta = 2 * np.pi * (cfg.turns * r + y / cfg.arms)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) + cfg.noise * 0.1 * rng.standard_normal((cfg.n_samples, 2))
    return x.astype(np.float32), y.astype(np.int64)


def teacher(cfg: DictConfig, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    h = x = rng.standard_normal((cfg.n_samples, cfg.in_features))
    for width in [cfg.hidden] * cfg.depth:
        h = np.tanh(h @ rng.standard_normal((h.shape[1], width)) / math.sqrt(h.shape[1]))
    y = h @ rng.standard_normal((h.shape[1], cfg.out_features)) / math.sqrt(h.shape[1])
    y = y + cfg.noise * rng.standard_normal(y.shape)
    return x.astype(np.float32), y.astype(np.float32)


DATASETS = {"mnist1d": mnist1d, "digits": digits, "moons": moons, "spirals": spirals, "teacher": teacher,
            "mnist": mnist, "fashion_mnist": mnist, "cifar10": cifar, "cifar100": cifar, "npz": npz, "csv": csv}
REGRESSION = {"teacher"}
SIGNALS = {"mnist1d"}  # 1-D signals stored as (N, L): augment's shift and scale fit them
STANDARDIZE = ("feature", "global", "none")


def _count(size: float, n: int, key: str) -> int:
    from runner.check import ConfigError

    count = int(round(size * n)) if size < 1 else int(size)
    if not 0 < count < n:
        raise ConfigError(f"data.{key}={size}: leaves no samples for the other splits of {n}")
    return count


def _task(cfg: DictConfig, y: np.ndarray) -> str:
    """data.task when given, else from the targets' type: floating point is regression."""
    if cfg.get("task") not in (None, "classification", "regression"):
        raise ConfigError(f"data.task={cfg.task!r}: must be null (from the target's type), classification or "
                          f"regression")
    return cfg.get("task") or ("regression" if cfg.name in REGRESSION or np.issubdtype(y.dtype, np.floating)
                               else "classification")


def _targets(task: str, ys: list[np.ndarray], cfg: DictConfig) -> list[np.ndarray]:
    """Regression targets as float32 (N, k); class labels as int64 0..K-1 (the sorted distinct values)."""
    if task == "regression":
        if any(not np.issubdtype(y.dtype, np.number) for y in ys):
            raise ConfigError(f"data.task=regression: the targets of {cfg.name} are not numbers")
        return [y.astype(np.float32).reshape(len(y), -1) for y in ys]
    classes, labels = np.unique(np.concatenate(ys), return_inverse=True)
    if len(classes) < 2:
        raise ConfigError(f"data.name={cfg.name}: the target has one class ({classes.tolist()[0]!r}); "
                          f"classification needs two or more")
    return list(np.split(labels.astype(np.int64), np.cumsum([len(y) for y in ys])[:-1]))


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images (N, C, ...), in chunks (CIFAR-10 as float64 is 1.2 GB)."""
    axes = (0, *range(2, x.ndim))
    total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(0, len(x), 4096):
        chunk = x[i:i + 4096].astype(np.float64)
        total += chunk.sum(axes)
        squares += (chunk ** 2).sum(axes)
    count = x.size / x.shape[1]
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean ** 2, 0))


def load(cfg: DictConfig, data_dir: str | Path) -> Splits:
    """Generate or read the dataset, split it with data.seed (a file's own test split is kept as
    the test split), then subset, add label noise and standardize with statistics of the training
    split alone (uint8 images: per-channel statistics that the model applies to each batch)."""
    if cfg.name not in DATASETS:
        raise ValueError(f"data.name={cfg.name!r} is not known; choose one of {sorted(DATASETS)}")
    x, y, *own_test = DATASETS[cfg.name](cfg, Path(data_dir).expanduser())
    task = _task(cfg, y)
    if own_test and cfg.test_size is not None:
        raise ConfigError(f"data.test_size={cfg.test_size}: {cfg.name} has its own test split, which is used; "
                          f"leave data.test_size null")
    test_size = cfg.test_size if cfg.test_size is not None or cfg.name != "npz" else 0.15  # npz without x_test
    if not own_test and test_size is None:
        raise ConfigError(f"data.test_size=null: {cfg.name} has no test split of its own; give a count or a fraction")
    y, *own_test_y = _targets(task, [y, *own_test[1:]], cfg) if cfg.name in ("npz", "csv") else [y, *own_test[1:]]
    rng = np.random.default_rng(cfg.seed)
    n = len(x)
    order = rng.permutation(n)
    if own_test:  # the official test split; validation comes out of the training files
        x, y = np.concatenate([x, own_test[0]]), np.concatenate([y, own_test_y[0]])
        test, n_val = np.arange(n, len(x)), _count(cfg.val_size, n, "val_size")
        val, train = order[:n_val], order[n_val:]
    else:
        n_val, n_test = _count(cfg.val_size, n, "val_size"), _count(test_size, n, "test_size")
        if n_val + n_test >= n:
            raise ConfigError(f"data.val_size={cfg.val_size}, data.test_size={cfg.test_size}: {n_val} + {n_test} "
                              f"samples leave none of the {n} for training")
        test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    if cfg.train_size is not None:
        train = train[: _count(cfg.train_size, len(train) + 1, "train_size")]
    y_train = y[train].copy()
    num_outputs = y.shape[1] if task == "regression" else int(y.max()) + 1
    if cfg.label_noise and task == "classification":  # a different class, uniformly, for a label_noise fraction
        flip = rng.random(len(train)) < cfg.label_noise
        y_train[flip] = (y_train[flip] + rng.integers(1, num_outputs, flip.sum())) % num_outputs
    if cfg.standardize not in STANDARDIZE:
        raise ValueError(f"data.standardize={cfg.standardize!r} is not known; choose one of {list(STANDARDIZE)}")
    kind = "image" if x.ndim == 4 else "signal" if x.ndim == 3 or cfg.name in SIGNALS else "tabular"
    mean = std = None
    if x.dtype == np.uint8:  # stays uint8; Normalize converts each batch with the training split's statistics
        mean, std = _channel_stats(x[train]) if cfg.standardize != "none" else (np.zeros(x.shape[1]),
                                                                                np.full(x.shape[1], 255.0))
        mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(np.where(std > 0, std, 1.0),
                                                                          dtype=torch.float32)
    else:
        x = x.astype(np.float32)
        if cfg.standardize != "none":  # feature: a mean/std per input position; global: one over all of them
            axis = 0 if cfg.standardize == "feature" else None
            mean_, std_ = x[train].mean(axis), x[train].std(axis)
            x = ((x - mean_) / np.where(std_ > 0, std_, 1.0)).astype(np.float32)
    t = torch.from_numpy
    return Splits(t(x[train]), t(y_train), t(x[val]), t(y[val]), t(x[test]), t(y[test]), task, num_outputs,
                  kind, mean, std)
