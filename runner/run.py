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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from runner import data as data_module
from runner import init as init_module
from runner.augment import make_augment
from runner.build import build
from runner.check import check_against_data, check_config, config_warnings
from runner.diagnostics import Diagnostics
from runner.diagnostics import flags as diagnostic_flags
from runner.logger import Trackers
from runner.model import with_input_norm
from runner.optimizer import make_optimizer
from runner.regularizer import make_penalty, zero_fraction
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


def setup(cfg: DictConfig):
    """Check cfg, set up torch and load the data: what every run of a vectorized stack shares."""
    if cfg.trainer.get("distributed") and "WORLD_SIZE" not in os.environ and "SUBMITIT_EXECUTOR" in os.environ:
        from submitit.helpers import TorchDistributedEnvironment  # a SLURM job of several tasks, via submitit

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # RANK, WORLD_SIZE, MASTER_ADDR, ...
    check_config(cfg)
    for line in config_warnings(cfg):
        log.warning(line)
    trainer = schema(TrainerConfig, cfg.trainer)
    paths = schema(PathsConfig, cfg.paths)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
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
    return trainer, device, data


def build_model(cfg: DictConfig, data, device: torch.device, seed: int):
    """The model (initialized from torch's RNG seeded with `seed`) and its optimizer."""
    torch.manual_seed(seed)
    model = build(cfg.model)(data.input_shape, data.num_outputs, norm=build(cfg.norm),
                             dropout=cfg.regularizer.dropout, input_dropout=cfg.regularizer.input_dropout)
    init_module.apply(model, build(cfg.init.weight), build(cfg.init.bias))
    model = with_input_norm(model, data.mean, data.std)  # uint8 images: converted per batch on the device
    model.to(device, memory_format=torch.channels_last if device.type == "cuda" and data.kind == "image"
             else torch.preserve_format)
    optimizer = make_optimizer(build(cfg.optimizer), model.parameters(), device, cfg.lookahead.k, cfg.lookahead.alpha)
    return model, optimizer


def prepare(cfg: DictConfig):
    """Check cfg, then set up torch and build the data, model and optimizer it describes."""
    trainer, device, data = setup(cfg)
    model, optimizer = build_model(cfg, data, device, trainer.seed)
    if trainer.compile:
        model.compile()
    return trainer, schema(EarlyStoppingConfig, cfg.early_stopping), device, data, model, optimizer


@dataclass
class Job:
    """One run's config, folder and everything it trains with, as `fit` (or a vectorized stack) takes them."""
    cfg: DictConfig
    run_dir: Path
    meta: dict | None
    trainer: TrainerConfig
    stopping: EarlyStoppingConfig
    device: torch.device
    data: data_module.Splits
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    plateau: Plateau | None
    diag: Diagnostics | None
    penalty: Callable[[], torch.Tensor] | None
    clip: Callable | None


def make_job(cfg: DictConfig, run_dir: Path, meta: dict | None, trainer, stopping, device, data, model,
             optimizer) -> Job:
    spe = len(data.x_train) // min(trainer.batch_size, len(data.x_train))
    lr_at = make_lr_at(cfg.schedule, cfg.optimizer.lr, spe, trainer.epochs * spe)
    plateau = Plateau(cfg.schedule, cfg.optimizer.lr) if cfg.schedule.name == "plateau" else None
    diag = Diagnostics(model, data.x_val[:cfg.diagnostics.probe_size]) if cfg.diagnostics.enabled else None
    return Job(cfg, run_dir, meta, trainer, stopping, device, data, model, optimizer, lr_at, plateau, diag,
               make_penalty(model, cfg.regularizer), build(cfg.clip))


def _total_steps(job: Job) -> int:
    return job.trainer.epochs * (len(job.data.x_train) // min(job.trainer.batch_size, len(job.data.x_train)))


def restore(job: Job) -> dict:
    """Load run_dir/last.pt into the job's model, optimizer, plateau and diagnostics; return fit's loop state.
    A run resumed with more (or fewer) epochs is refused where the lrs already used depend on the length."""
    ckpt = load_checkpoint(job.run_dir / "last.pt")
    total = _total_steps(job)
    if ckpt.get("total_steps", total) != total:
        spe = total // job.trainer.epochs
        check_extension(job.cfg.schedule, job.cfg.optimizer.lr, spe, ckpt["total_steps"], total, ckpt["step"])
    job.model.load_state_dict(ckpt["model"])
    job.optimizer.load_state_dict(ckpt["optimizer"])
    if job.plateau:
        job.plateau.load_state_dict(ckpt["plateau"])
    if job.diag:
        job.diag.rows = ckpt["diagnostics"]
    state = {k: _to(v, job.device) if k not in ("rng", "shuffle") else v for k, v in ckpt["loop"].items()}
    log.info("resuming %s at step %d", job.run_dir, state["step"])
    return state


def record_row(job: Job, rows: list[dict], row: dict) -> None:
    """Append an evaluation's row to metrics.csv (and the diagnostics so far to diagnostics.csv)."""
    rows.append(row)
    write_csv(rows, job.run_dir / "metrics.csv")
    if job.diag:
        write_csv(job.diag.rows, job.run_dir / "diagnostics.csv")


def run(cfg: DictConfig, run_dir: Path, on_eval=None, meta: dict | None = None, resume: bool = False) -> dict:
    """Check cfg, train what it describes (continuing run_dir/last.pt when resume), write and
    return the summary (with `meta`, such as Hydra's group choices and overrides, added)."""
    started = time.perf_counter()
    job = make_job(cfg, run_dir, meta, *prepare(cfg))
    run_dir.mkdir(parents=True, exist_ok=True)
    state = restore(job) if resume else None
    rows: list[dict] = list(state["rows"]) if state else []
    trackers = Trackers(cfg, run_dir, meta, resume)  # conf/logger: TensorBoard, MLflow, W&B (none by default)

    def record(row):
        record_row(job, rows, row)
        trackers.log(row, job.diag.rows if job.diag else None)
        if on_eval:
            on_eval(row)

    distributed = job.trainer.distributed
    rank = torch.distributed.get_rank() if distributed else 0  # only rank 0 writes the run folder
    interrupted = threading.Event()
    net = torch.nn.parallel.DistributedDataParallel(job.model) if distributed else job.model
    with trap_signals(interrupted) if not distributed else contextlib.nullcontext():
        result = fit(net, job.data, job.optimizer, job.lr_at, job.trainer, job.stopping, penalty=job.penalty,
                     clip=job.clip, plateau=job.plateau, diagnostics=job.diag, on_eval=None if rank else record,
                     interrupted=interrupted, augment=make_augment(job.cfg.augment, job.data), resume=state)
    extra = {}
    if distributed:
        extra = {"world_size": torch.distributed.get_world_size(), "ranks_in_sync": _ranks_agree(job.model)}
        if rank:
            return {"status": "completed", "rank": rank, "ranks_in_sync": extra["ranks_in_sync"]}
    return trackers.close(finish(job, result, interrupted.is_set(), started, extra))


def finish(job: Job, result: dict, interrupted: bool, started: float, extra: dict | None = None) -> dict:
    """Write what a run leaves after training (last.pt; then best.pt, predictions.npz and the final
    evaluation unless interrupted) and return its summary."""
    cfg, run_dir, model, data, stopping, optimizer = job.cfg, job.run_dir, job.model, job.data, job.stopping, job.optimizer
    save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": result["steps"],
                 "total_steps": _total_steps(job), "plateau": job.plateau.state_dict() if job.plateau else None,
                 "loop": result["state"], "diagnostics": job.diag.rows if job.diag else []}, run_dir / "last.pt")
    if hasattr(optimizer, "swap"):  # Lookahead's result is its slow weights: those are tested (last.pt keeps both)
        optimizer.swap()
    progress = {"stop_reason": result["stop_reason"], "epochs": result["epochs"], "steps": result["steps"]}
    if interrupted:
        log.warning("interrupted: last.pt saved in %s; the same command resumes it", run_dir)
        return write_summary(run_dir, {"status": "interrupted", **progress, **_identity(cfg, job.meta)})
    status = "diverged" if result["stop_reason"].startswith("diverged") else "completed"
    if result["best_state"] is not None:
        save_atomic(result["best_state"], run_dir / "best.pt")
        if stopping.restore_best or status == "diverged":  # diverged weights are no use to anyone
            model.load_state_dict(result["best_state"])
    metric = METRICS[data.task]
    final = {f"{split}_{k}": v for split in ("train", "val", "test")
             for k, v in evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), data.task,
                                  job.trainer.precision).items()}
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
        "weight_zero_frac": zero_fraction(model),  # |w| < 1e-3: the sparsity an L1 penalty brings
        "device": str(job.device), "seed": job.trainer.seed, "task": data.task, **(extra or {}),
        **(diagnostic_flags(job.diag.rows, **{k: v for k, v in cfg.diagnostics.items()
                                              if k.endswith(("_below", "_above"))}) if job.diag else {}),
        "warnings": config_warnings(cfg), **_identity(cfg, job.meta),
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
