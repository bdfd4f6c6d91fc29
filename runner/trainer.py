"""The training loop: one function, `fit`, reading top to bottom."""

import contextlib
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from runner.data import Splits
from runner.early_stopping import EarlyStopping
from runner.schema import EarlyStoppingConfig, TrainerConfig

LOSSES = {"classification": F.cross_entropy, "regression": F.mse_loss}
METRICS = {"classification": "acc", "regression": "r2"}


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, precision: str = "fp32",
             batch_size: int = 8192) -> dict[str, float]:
    """Loss and metric (accuracy, or R^2 = 1 - SSE/SST) over a whole split, in eval mode."""
    model.eval()
    loss, hits = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    with torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16"):
        for i in range(0, len(x), batch_size):
            out, target = model(x[i:i + batch_size]).float(), y[i:i + batch_size]
            loss += LOSSES[task](out, target, reduction="sum")
            if task == "classification":
                hits += (out.argmax(1) == target).sum()
    if task == "classification":
        return {"loss": loss.item() / len(x), "acc": hits.item() / len(x)}
    sst = ((y - y.mean(0)) ** 2).sum().item()
    return {"loss": loss.item() / y.numel(), "r2": 1 - loss.item() / sst}


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, task: str, batch_size: int = 8192) -> torch.Tensor:
    """Class probabilities (classification) or outputs (regression), in eval mode."""
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])
    return out.softmax(1) if task == "classification" else out


def _is_due(step: int, steps_per_epoch: int, total: int, cfg: TrainerConfig) -> bool:
    per = cfg.eval_every * (steps_per_epoch if cfg.eval_unit == "epoch" else 1)
    return step % per == 0 or step == total


def fit(model, data: Splits, optimizer, lr_at, cfg: TrainerConfig, stopping: EarlyStoppingConfig, *,
        penalty=None, clip=None, plateau=None, diagnostics=None, on_eval=None, interrupted=None,
        augment=None, resume: dict | None = None) -> dict:
    """Train model in place for cfg.epochs, until early stopping, divergence (a non-finite loss)
    or until the `interrupted` event is set; the last weights stay in model. Returns the metrics
    rows, the best evaluation's state dict, why training ended, and the loop's `state`, from
    which `resume` continues exactly where it stopped. `augment(x, y) -> (x, y)` transforms each
    training batch (runner.augment; its targets may be mixed class probabilities)."""
    n, rank, world = len(data.x_train), *_ranks()
    spe = n // min(cfg.batch_size, n)
    bs = min(cfg.batch_size, n) // world  # this process's share: every world-th sample of each global batch
    total = cfg.epochs * spe
    loss_fn, metric, clf = LOSSES[data.task], METRICS[data.task], data.task == "classification"
    params = [p for p in model.parameters() if p.requires_grad]
    var_y = data.y_train.float().var(0, unbiased=False).mean().item() if not clf else 1.0
    device = data.x_train.device
    amp = torch.autocast(device.type, torch.bfloat16) if cfg.precision == "bf16" else contextlib.nullcontext()
    check_every = 1 if device.type == "cpu" and world == 1 else 32  # the check syncs with an accelerator or ranks
    stop = EarlyStopping(stopping)
    shuffle = torch.Generator(device).manual_seed(cfg.seed)  # batch order: its own stream, apart from dropout's
    state = resume or {"step": 0, "rows": [], "best_state": None, "seconds": 0.0, "perm": None,
                       "run_loss": torch.zeros((), device=device), "run_hits": torch.zeros((), device=device),
                       "seen": 0}
    if resume:
        stop.load_state_dict(resume["early_stopping"])
        _set_rng_state(resume["rng"])
        shuffle.set_state(resume["shuffle"])
    rows, perm, run_loss, run_hits = (state[k] for k in ("rows", "perm", "run_loss", "run_hits"))
    reason, start, step = f"reached trainer.epochs={cfg.epochs}", time.perf_counter() - state["seconds"], state["step"]
    model.train()
    while step < total:
        if interrupted is not None and interrupted.is_set():
            reason = f"interrupted at step {step}"
            break
        if step % spe == 0 or perm is None:  # a new epoch: a new shuffle
            perm = torch.randperm(n, generator=shuffle, device=device)[rank::world]  # one permutation on every rank, then its share
        idx = perm[step % spe * bs:(step % spe + 1) * bs]
        lr = lr_at(step) * (plateau.scale if plateau else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = augment(data.x_train[idx], data.y_train[idx]) if augment else (data.x_train[idx], data.y_train[idx])
        with amp:
            out = model(x).float()
        loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        (loss + penalty() if penalty else loss).backward()
        due = _is_due(step + 1, spe, total, cfg)
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])) \
            if due else None  # before clipping: the raw gradient's size
        if clip:
            clip(params)
        if due and diagnostics:
            diagnostics.before_step()
        optimizer.step()
        step += 1
        run_loss += loss.detach()  # full batches only: the period's mean is the sum over its steps
        if clf:
            run_hits += (out.argmax(1) == data.y_train[idx]).sum()
        state["seen"] += 1
        if (step % check_every == 0 or due) and not math.isfinite(_sum_over_ranks(run_loss).item()):  # NaN stays
            reason = (f"diverged: non-finite loss at step {step}" if check_every == 1 else
                      f"diverged: non-finite loss between steps {step - (step - 1) % check_every} and {step}")
            break
        if not due:
            continue
        train_loss = _sum_over_ranks(run_loss).item() / world / state["seen"]
        if hasattr(optimizer, "swap"):  # Lookahead: evaluate and keep the slow weights, until the swap back
            optimizer.swap()
        val = evaluate(model, data.x_val, data.y_val, data.task, cfg.precision)
        row = {"epoch": round(step / spe, 4), "step": step, "lr": lr, "train_loss": train_loss,
               f"train_{metric}": _sum_over_ranks(run_hits).item() / (state["seen"] * bs * world) if clf
               else 1 - train_loss / var_y,
               **{f"val_{k}": v for k, v in val.items()}, "grad_norm": grad_norm.item(),
               "seconds": round(time.perf_counter() - start, 4)}
        run_loss.zero_()
        run_hits.zero_()
        state["seen"] = 0
        if diagnostics:
            diagnostics.collect(row["epoch"], step)
        model.train()
        if stop.update(row[stopping.monitor], row["epoch"]):
            state["best_state"] = {k: v.detach().clone() for k, v in getattr(model, "module", model).state_dict().items()}
        if hasattr(optimizer, "swap"):
            optimizer.swap()
        if plateau:
            plateau.update(row[plateau.cfg.monitor])
        rows.append(row)
        if on_eval:
            on_eval(row)
        if stop.should_stop:
            reason = (f"early stopping: {stopping.monitor} did not improve by more than {stopping.min_delta} "
                      f"for {stopping.patience} evaluations")
            break
    state |= {"step": step, "perm": perm, "seconds": time.perf_counter() - start,
              "rng": _rng_state(), "shuffle": shuffle.get_state(), "early_stopping": stop.state_dict()}
    return {"rows": rows, "best_state": state["best_state"], "best_epoch": stop.best_epoch, "best": stop.best,
            "stop_reason": reason, "steps": step, "epochs": round(step / spe, 4), "seconds": state["seconds"],
            "state": state}


def _ranks() -> tuple[int, int]:
    """(rank, world size) of data-parallel training; (0, 1) in a single process."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """t summed over the data-parallel processes (a copy), or t itself in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def _rng_state() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
