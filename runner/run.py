"""One run: build everything a config names, train it with `fit`, and write the run folder:
metrics.csv (a row per evaluation), summary.json, best.pt and last.pt. Every file is written
to a temporary name and renamed, so a reader never sees half a file."""

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import pickle
import platform
import signal
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import runner
from runner import data as data_module
from runner import init as init_module
from runner.build import build
from runner.check import ConfigError, check_against_data, check_config
from runner.diagnostics import Diagnostics
from runner.diagnostics import flags as diagnostic_flags
from runner.optimizer import make_optimizer
from runner.regularizer import make_penalty
from runner.schedule import Plateau, make_lr_at
from runner.schema import EarlyStoppingConfig, PathsConfig, TrainerConfig
from runner.trainer import METRICS, evaluate, fit, predict

log = logging.getLogger(__name__)


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


def config_hash(cfg: DictConfig) -> str:
    """Identifies a run's experiment: the resolved config without where files go."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in ("paths", "print_config"):
        c.pop(key, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CheckpointError(RuntimeError):
    pass


def load_checkpoint(path: Path) -> dict:
    """A checkpoint of tensors and plain values; anything that needs unpickling code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load, it holds pickled Python objects besides tensors and plain "
                              f"values, and unpickling them could run code ({str(e).splitlines()[0][:200]})") from None


def previous_outcome(run_dir: Path, cfg: DictConfig) -> tuple[str, dict | None]:
    """What a run folder already holds for cfg: 'skip' (finished with this config), 'resume'
    (interrupted with this config, last.pt present) or 'fresh' (nothing, failed, or unreadable)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "fresh", None
    same = summary.get("config_hash") == config_hash(cfg)
    if summary.get("status") in FINISHED:
        if not same:
            raise ConfigError(f"hydra.run.dir={run_dir}: holds a finished run of another config; refusing to "
                              "overwrite it (choose another hydra.run.dir or hydra.sweep.dir)")
        return "skip", summary
    if summary.get("status") == "interrupted" and same and (run_dir / "last.pt").exists():
        return "resume", summary
    return "fresh", summary


FINISHED = ("completed", "diverged")


@contextlib.contextmanager
def trap_signals(event: threading.Event):
    """SIGINT (Ctrl-C) and SIGTERM (a cluster's preemption) set event: training stops after the
    current step and saves last.pt. A second signal stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()
        log.warning("%s: stopping after this step and saving last.pt", signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _plain(x):
    """JSON-safe: non-finite floats become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return [_plain(v) for v in x] if isinstance(x, list) else x


def write_summary(run_dir: Path, summary: dict) -> dict:
    """Write summary.json; return what was written (non-finite numbers as None)."""
    summary = _plain(summary)
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _identity(cfg: DictConfig, meta: dict | None) -> dict:
    """The summary fields that say which run this is."""
    return {"config_hash": config_hash(cfg),
            "versions": {"runner": runner.__version__, "torch": torch.__version__, "python": platform.python_version()},
            **(meta or {}), "config": OmegaConf.to_container(cfg, resolve=True)}  # = .hydra/config.yaml


def record_failure(run_dir: Path, cfg: DictConfig, status: str, error: BaseException, meta: dict | None = None) -> dict:
    """summary.json with status (failed, invalid, interrupted) and the error; the traceback in error.txt."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if status == "failed":
        write_atomic(run_dir / "error.txt", "".join(traceback.format_exception(error)))
    reason = str(error) if status == "invalid" else f"{type(error).__name__}: {error}"
    return write_summary(run_dir, {"status": status, "stop_reason": reason, **_identity(cfg, meta)})


def prepare(cfg: DictConfig):
    """Check cfg, then set up torch and build the data, model and optimizer it describes."""
    if cfg.trainer.get("distributed") and "WORLD_SIZE" not in os.environ and "SUBMITIT_EXECUTOR" in os.environ:
        from submitit.helpers import TorchDistributedEnvironment  # a SLURM job of several tasks, via submitit

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # RANK, WORLD_SIZE, MASTER_ADDR, ...
    check_config(cfg)
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
    if trainer.distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    data = data_module.load(cfg.data, paths.data_dir).to(device)
    check_against_data(cfg, len(data.x_train))
    model = build(cfg.model)(data.input_shape, data.num_outputs, norm=build(cfg.norm),
                             dropout=cfg.regularizer.dropout, input_dropout=cfg.regularizer.input_dropout)
    init_module.apply(model, build(cfg.init.weight), build(cfg.init.bias))
    model.to(device)
    if trainer.compile:
        model.compile()
    optimizer = make_optimizer(build(cfg.optimizer), model.parameters(), device, cfg.lookahead.k, cfg.lookahead.alpha)
    return trainer, stopping, device, data, model, optimizer


def run(cfg: DictConfig, run_dir: Path, on_eval=None, meta: dict | None = None, resume: bool = False) -> dict:
    """Check cfg, train what it describes (continuing run_dir/last.pt when resume), write and
    return the summary (with `meta`, such as Hydra's group choices and overrides, added)."""
    started = time.perf_counter()
    trainer, stopping, device, data, model, optimizer = prepare(cfg)
    base_lr = cfg.optimizer.lr
    steps_per_epoch = len(data.x_train) // min(trainer.batch_size, len(data.x_train))
    lr_at = make_lr_at(cfg.schedule, base_lr, steps_per_epoch, trainer.epochs * steps_per_epoch)
    plateau = Plateau(cfg.schedule, base_lr) if cfg.schedule.name == "plateau" else None
    diag = Diagnostics(model, data.x_val[:cfg.diagnostics.probe_size]) if cfg.diagnostics.enabled else None
    run_dir.mkdir(parents=True, exist_ok=True)
    state = None
    if resume:
        ckpt = load_checkpoint(run_dir / "last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if plateau:
            plateau.load_state_dict(ckpt["plateau"])
        state = {k: _to(v, device) if k != "rng" else v for k, v in ckpt["loop"].items()}
        if diag:
            diag.rows = ckpt["diagnostics"]
        log.info("resuming %s at step %d", run_dir, state["step"])
    rows: list[dict] = list(state["rows"]) if state else []

    def record(row):
        rows.append(row)
        write_csv(rows, run_dir / "metrics.csv")
        if diag:
            write_csv(diag.rows, run_dir / "diagnostics.csv")
        if on_eval:
            on_eval(row)

    rank = torch.distributed.get_rank() if trainer.distributed else 0  # only rank 0 writes the run folder
    interrupted = threading.Event()
    net = torch.nn.parallel.DistributedDataParallel(model) if trainer.distributed else model
    with trap_signals(interrupted) if not trainer.distributed else contextlib.nullcontext():
        result = fit(net, data, optimizer, lr_at, trainer, stopping, penalty=make_penalty(model, cfg.regularizer),
                     clip=build(cfg.clip), plateau=plateau, diagnostics=diag, on_eval=None if rank else record,
                     interrupted=interrupted,
                     resume=state)
    if trainer.distributed:
        in_sync = _ranks_agree(model)
        if rank:
            return {"status": "completed", "rank": rank, "ranks_in_sync": in_sync}
    save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": result["steps"],
                 "plateau": plateau.state_dict() if plateau else None, "loop": result["state"],
                 "diagnostics": diag.rows if diag else []}, run_dir / "last.pt")
    progress = {"stop_reason": result["stop_reason"], "epochs": result["epochs"], "steps": result["steps"]}
    if interrupted.is_set():
        log.warning("interrupted: last.pt saved; the same command with hydra.run.dir=%s resumes", run_dir)
        return write_summary(run_dir, {"status": "interrupted", **progress, **_identity(cfg, meta)})
    status = "diverged" if result["stop_reason"].startswith("diverged") else "completed"
    if result["best_state"] is not None:
        save_atomic(result["best_state"], run_dir / "best.pt")
        if stopping.restore_best or status == "diverged":  # diverged weights are no use to anyone
            model.load_state_dict(result["best_state"])
    metric = METRICS[data.task]
    final = {f"{split}_{k}": v for split in ("train", "val", "test")
             for k, v in evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), data.task,
                                  trainer.precision).items()}
    if status == "diverged" and result["best_state"] is None:  # diverged before any evaluation: no model to test
        final = dict.fromkeys(final, math.nan)
    else:  # kept for ensembles: `report` averages the predictions of a group's seeds
        buffer = io.BytesIO()
        np.savez(buffer, predictions=predict(model, data.x_test, data.task).cpu().numpy(),
                 targets=data.y_test.cpu().numpy())
        write_atomic(run_dir / "predictions.npz", buffer.getvalue())
    summary = {
        "status": status, **progress,
        "monitor": stopping.monitor, "best_epoch": result["best_epoch"], "best_value": result["best"],
        "restored_best": bool((stopping.restore_best or status == "diverged") and result["best_state"] is not None),
        **final,
        "gap_loss": final["test_loss"] - final["train_loss"],  # generalization gap, test minus train
        f"gap_{metric}": final[f"train_{metric}"] - final[f"test_{metric}"],
        "train_seconds": round(result["seconds"], 3), "wall_seconds": round(time.perf_counter() - started, 3),
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device), "seed": trainer.seed, "task": data.task,
        **({"world_size": torch.distributed.get_world_size(), "ranks_in_sync": in_sync} if trainer.distributed else {}),
        **(diagnostic_flags(diag.rows, **{k: v for k, v in cfg.diagnostics.items() if k.endswith(("_below", "_above"))})
           if diag else {}),
        **_identity(cfg, meta),
    }
    log.info("%s after %s epochs: test_%s=%.4f", status, summary["epochs"], metric, final[f"test_{metric}"])
    return write_summary(run_dir, summary)


def _ranks_agree(model) -> bool:
    """Whether every data-parallel process ends with exactly the same parameters."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, flat)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value
