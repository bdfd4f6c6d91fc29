"""One run: build everything a config names, train it with `fit`, and write the run folder
(metrics.csv, a row per evaluation; summary.json, best.pt and last.pt) through runner.runfolder."""

import contextlib
import io
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from runner import data as data_module
from runner import init as init_module
from runner.build import build
from runner.check import check_against_data, check_config, config_warnings
from runner.diagnostics import Diagnostics
from runner.diagnostics import flags as diagnostic_flags
from runner.optimizer import make_optimizer
from runner.regularizer import make_penalty
from runner.runfolder import _identity, load_checkpoint, save_atomic, write_atomic, write_csv, write_summary
from runner.schedule import Plateau, check_extension, make_lr_at
from runner.schema import EarlyStoppingConfig, PathsConfig, TrainerConfig
from runner.trainer import METRICS, evaluate, fit, predict

log = logging.getLogger(__name__)


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


def watch_parent(poll: float = 0.5) -> None:
    """In a launcher's worker process (joblib's loky workers): when the process that started it dies
    (kill -9 of the sweep), SIGTERM this one, so that training stops after the current step and saves
    last.pt (resumable) instead of running on as an orphan. The process exits once the job has
    ended (train.SweepOutcome.on_job_end), or a minute later whatever it does."""
    if getattr(watch_parent, "started", False):
        return
    watch_parent.started, parent = True, os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll)
        log.warning("the process that started this job (%d) is gone: stopping", parent)
        watch_parent.orphaned = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def prepare(cfg: DictConfig):
    """Check cfg, then set up torch and build the data, model and optimizer it describes."""
    if cfg.trainer.get("distributed") and "WORLD_SIZE" not in os.environ and "SUBMITIT_EXECUTOR" in os.environ:
        from submitit.helpers import TorchDistributedEnvironment  # a SLURM job of several tasks, via submitit

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # RANK, WORLD_SIZE, MASTER_ADDR, ...
    check_config(cfg)
    for line in config_warnings(cfg):
        log.warning(line)
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
        if ckpt.get("total_steps", trainer.epochs * steps_per_epoch) != trainer.epochs * steps_per_epoch:
            check_extension(cfg.schedule, base_lr, steps_per_epoch, ckpt["total_steps"],
                            trainer.epochs * steps_per_epoch, ckpt["step"])
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
                 "total_steps": trainer.epochs * steps_per_epoch,
                 "plateau": plateau.state_dict() if plateau else None, "loop": result["state"],
                 "diagnostics": diag.rows if diag else []}, run_dir / "last.pt")
    if hasattr(optimizer, "swap"):  # Lookahead's result is its slow weights: those are tested (last.pt keeps both)
        optimizer.swap()
    progress = {"stop_reason": result["stop_reason"], "epochs": result["epochs"], "steps": result["steps"]}
    if interrupted.is_set():
        log.warning("interrupted: last.pt saved in %s; the same command resumes it", run_dir)
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
        "warnings": config_warnings(cfg), **_identity(cfg, meta),
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
