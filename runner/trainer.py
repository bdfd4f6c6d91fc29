"""The training loop: one function, `fit`, reading top to bottom."""

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runner.data import Splits
from runner.early_stopping import EarlyStopping, EarlyStoppingConfig


@dataclass
class TrainerConfig:
    epochs: int = 30
    """Passes over the training split (the run may stop earlier: early_stopping)."""
    batch_size: int = 128
    """Samples per update; the last incomplete batch of an epoch is dropped (shuffled away next epoch)."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps."""
    seed: int = 0
    """Seeds torch's RNGs: weight init, batch order, dropout. The dataset has its own data.seed."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms: bitwise-repeatable GPU runs, at some speed cost."""
    precision: str = "fp32"
    """fp32 | bf16 (autocast: matrix products in bfloat16; losses, metrics and weights stay fp32)."""
    eval_every: int = 1
    """Evaluate on the validation split (a metrics.csv row, an early-stopping check) every this many eval_unit."""
    eval_unit: str = "epoch"
    """epoch | step."""
    num_threads: int | None = 1
    """torch CPU threads; 1 because parallel jobs beat threads on small models. null = torch's default."""


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


def _is_due(step: int, steps_per_epoch: int, total: int, cfg: TrainerConfig) -> bool:
    per = cfg.eval_every * (steps_per_epoch if cfg.eval_unit == "epoch" else 1)
    return step % per == 0 or step == total


def fit(model, data: Splits, optimizer, lr_at, cfg: TrainerConfig, stopping: EarlyStoppingConfig, *,
        penalty=None, clip=None, plateau=None, on_eval=None) -> dict:
    """Train model in place for cfg.epochs or until early stopping; the last weights stay in
    model. Returns the metrics rows, the best evaluation's state dict and why training ended."""
    n = len(data.x_train)
    bs = min(cfg.batch_size, n)
    spe = n // bs
    total = cfg.epochs * spe
    loss_fn, metric, clf = LOSSES[data.task], METRICS[data.task], data.task == "classification"
    params = [p for p in model.parameters() if p.requires_grad]
    var_y = data.y_train.float().var(0, unbiased=False).mean().item() if not clf else 1.0
    amp = torch.autocast(data.x_train.device.type, torch.bfloat16, enabled=cfg.precision == "bf16")
    stop, rows, best_state = EarlyStopping(stopping), [], None
    run_loss, run_hits, seen = torch.zeros((), device=data.x_train.device), 0, 0
    reason, start = f"reached trainer.epochs={cfg.epochs}", time.perf_counter()
    model.train()
    for step in range(total):
        if step % spe == 0:  # a new epoch: a new shuffle
            perm = torch.randperm(n, device=data.x_train.device)
        idx = perm[step % spe * bs:(step % spe + 1) * bs]
        xb, yb = data.x_train[idx], data.y_train[idx]
        lr = lr_at(step) * (plateau.scale if plateau else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with amp:
            out = model(xb).float()
        loss = loss_fn(out, yb)
        optimizer.zero_grad(set_to_none=True)
        (loss + penalty() if penalty else loss).backward()
        due = _is_due(step + 1, spe, total, cfg)
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])) \
            if due else None  # before clipping: the raw gradient's size
        if clip:
            clip(params)
        optimizer.step()
        run_loss += loss.detach() * len(idx)
        run_hits += (out.argmax(1) == yb).sum() if clf else 0
        seen += len(idx)
        if not due:
            continue
        train_loss = run_loss.item() / seen
        val = evaluate(model, data.x_val, data.y_val, data.task, cfg.precision)
        row = {"epoch": round((step + 1) / spe, 4), "step": step + 1, "lr": lr, "train_loss": train_loss,
               f"train_{metric}": float(run_hits) / seen if clf else 1 - train_loss / var_y,
               **{f"val_{k}": v for k, v in val.items()}, "grad_norm": grad_norm.item(),
               "seconds": round(time.perf_counter() - start, 4)}
        run_loss.zero_()
        run_hits, seen = 0, 0
        model.train()
        if stopping.monitor not in row:
            raise ValueError(f"early_stopping.monitor={stopping.monitor!r} is never logged; choose one of {list(row)}")
        if stop.update(row[stopping.monitor], row["epoch"]):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if plateau:
            plateau.update(row[plateau.cfg.monitor])
        rows.append(row)
        if on_eval:
            on_eval(row)
        if not math.isfinite(train_loss):
            reason = f"diverged: train_loss={train_loss} at step {step + 1}"
            break
        if stop.should_stop:
            reason = (f"early stopping: {stopping.monitor} did not improve by more than {stopping.min_delta} "
                      f"for {stopping.patience} evaluations")
            break
    return {"rows": rows, "best_state": best_state, "best_epoch": stop.best_epoch, "best": stop.best,
            "stop_reason": reason, "steps": step + 1, "epochs": round((step + 1) / spe, 4),
            "seconds": time.perf_counter() - start}
