"""Datasets generated or bundled locally (nothing is downloaded), split with a seed into
train/val/test tensors that stay in memory, on the training device."""

import hashlib
import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

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
    return d.data.astype(np.float32), d.target.astype(np.int64)


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


DATASETS = {"mnist1d": mnist1d, "digits": digits, "moons": moons, "spirals": spirals, "teacher": teacher}
REGRESSION = {"teacher"}


def _count(size: float, n: int, key: str) -> int:
    from runner.check import ConfigError

    count = int(round(size * n)) if size < 1 else int(size)
    if not 0 < count < n:
        raise ConfigError(f"data.{key}={size}: leaves no samples for the other splits of {n}")
    return count


def load(cfg: DictConfig, data_dir: str | Path) -> Splits:
    """Generate or read the dataset, split it with data.seed, then subset, add label noise and
    standardize with statistics of the training split alone."""
    if cfg.name not in DATASETS:
        raise ValueError(f"data.name={cfg.name!r} is not known; choose one of {sorted(DATASETS)}")
    x, y = DATASETS[cfg.name](cfg, Path(data_dir).expanduser())
    task = "regression" if cfg.name in REGRESSION else "classification"
    rng = np.random.default_rng(cfg.seed)
    n = len(x)
    order = rng.permutation(n)
    n_val, n_test = _count(cfg.val_size, n, "val_size"), _count(cfg.test_size, n, "test_size")
    if n_val + n_test >= n:
        from runner.check import ConfigError

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
    if cfg.standardize:
        mean, std = x[train].mean(0), x[train].std(0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    t = torch.from_numpy
    return Splits(t(x[train]), t(y_train), t(x[val]), t(y[val]), t(x[test]), t(y[test]), task, num_outputs)

