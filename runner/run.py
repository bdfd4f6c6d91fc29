"""One run: build everything a config names, train it with `fit`, and write the run folder:
metrics.csv (a row per evaluation), summary.json, best.pt and last.pt. Every file is written
to a temporary name and renamed, so a reader never sees half a file."""

import csv
import io
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import runner
from runner import data as data_module
from runner import init as init_module
from runner.build import build
from runner.early_stopping import EarlyStoppingConfig
from runner.optimizer import Lookahead
from runner.regularizer import make_penalty
from runner.schedule import Plateau, make_lr_at
from runner.trainer import METRICS, TrainerConfig, evaluate, fit

log = logging.getLogger(__name__)


@dataclass
class PathsConfig:
    data_dir: str = "${oc.env:RUNNER_DATA_DIR,'~/.cache/runner'}"
    """Where generated datasets are cached (MNIST-1D takes seconds to generate, then milliseconds to read)."""


def write_atomic(path: Path, payload: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload.encode() if isinstance(payload, str) else payload)
    os.replace(tmp, path)


def save_atomic(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def write_csv(rows: list[dict], path: Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, out.getvalue())


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def schema(cls, node: DictConfig):
    """The node as a dataclass instance: unknown keys and wrong types fail here, naming the key."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node))


def run(cfg: DictConfig, run_dir: Path, on_eval=None, meta: dict | None = None) -> dict:
    """Train what cfg describes; write and return the summary (with `meta`, such as Hydra's
    group choices and overrides, added to it)."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = schema(TrainerConfig, cfg.trainer)
    stopping = schema(EarlyStoppingConfig, cfg.early_stopping)
    paths = schema(PathsConfig, cfg.paths)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    torch.manual_seed(trainer.seed)
    if trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    device = resolve_device(trainer.device)
    data = data_module.load(cfg.data, paths.data_dir).to(device)

    model = build(cfg.model)(data.input_shape, data.num_outputs, norm=build(cfg.norm),
                             dropout=cfg.regularizer.dropout, input_dropout=cfg.regularizer.input_dropout)
    init_module.apply(model, build(cfg.init.weight), build(cfg.init.bias))
    model.to(device)
    optimizer = build(cfg.optimizer)(model.parameters())
    if cfg.lookahead.k:
        optimizer = Lookahead(optimizer, cfg.lookahead.k, cfg.lookahead.alpha)
    base_lr = cfg.optimizer.lr
    steps_per_epoch = len(data.x_train) // min(trainer.batch_size, len(data.x_train))
    lr_at = make_lr_at(cfg.schedule, base_lr, steps_per_epoch, trainer.epochs * steps_per_epoch)
    plateau = Plateau(cfg.schedule, base_lr) if cfg.schedule.name == "plateau" else None

    def record(row):
        rows.append(row)
        write_csv(rows, run_dir / "metrics.csv")
        if on_eval:
            on_eval(row)

    rows: list[dict] = []
    result = fit(model, data, optimizer, lr_at, trainer, stopping, penalty=make_penalty(model, cfg.regularizer),
                 clip=build(cfg.clip), plateau=plateau, on_eval=record)

    save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": result["steps"],
                 "plateau": plateau.state_dict() if plateau else None}, run_dir / "last.pt")
    if result["best_state"] is not None:
        save_atomic(result["best_state"], run_dir / "best.pt")
        if stopping.restore_best:
            model.load_state_dict(result["best_state"])
    metric = METRICS[data.task]
    final = {f"{split}_{k}": v for split in ("train", "val", "test")
             for k, v in evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), data.task,
                                  trainer.precision).items()}
    diverged = result["stop_reason"].startswith("diverged")
    summary = {
        "status": "diverged" if diverged else "completed",
        "stop_reason": result["stop_reason"],
        "epochs": result["epochs"], "steps": result["steps"],
        "monitor": stopping.monitor, "best_epoch": result["best_epoch"],
        "best_value": result["best"] if math.isfinite(result["best"]) else None,
        "restored_best": bool(stopping.restore_best and result["best_state"] is not None),
        **final,
        "gap_loss": final["test_loss"] - final["train_loss"],  # generalization gap, test minus train
        f"gap_{metric}": final[f"train_{metric}"] - final[f"test_{metric}"],
        "train_seconds": round(result["seconds"], 3), "wall_seconds": round(time.perf_counter() - started, 3),
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device), "seed": trainer.seed, "task": data.task,
        "versions": {"runner": runner.__version__, "torch": torch.__version__, "python": platform.python_version()},
        **(meta or {}),
        "config": OmegaConf.to_container(cfg, resolve=True),  # = .hydra/config.yaml; `report` reads JSON faster
    }
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    log.info("%s after %s epochs: test_%s=%.4f", summary["status"], summary["epochs"], metric, final[f"test_{metric}"])
    return summary
