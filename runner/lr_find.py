"""The LR range test (Smith, 2017; the lectures' "learning rate finder"): train the configured
model with an lr that grows exponentially over a few hundred minibatch steps and watch the
smoothed loss fall, bottom out and blow up.

The suggestion is half the lr at the smoothed loss's minimum. That minimum sits at the edge of
stability (on a quadratic, just below 2 / the largest curvature); half of it is about 1 / the
largest curvature, the fastest step the sharpest direction tolerates. The lr where the loss
falls fastest (`steepest_lr`, the other common rule) lags about a decade behind in a range test,
since the loss needs several steps at an lr to show its effect: on linear regression it lands
a decade below the best constant lr (tests/test_lr_find.py)."""

import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from runner.trainer import LOSSES

log = logging.getLogger(__name__)


def lr_range_test(model, data, optimizer, *, start: float, end: float, steps: int, batch_size: int,
                  smoothing: float = 0.9, diverge: float = 4.0) -> tuple[list[dict], dict]:
    """Rows of (step, lr, loss, smoothed loss) and the suggestions (suggest())."""
    n, loss_fn = len(data.x_train), LOSSES[data.task]
    rows, avg, best = [], 0.0, math.inf
    model.train()
    for i in range(steps):
        lr = start * (end / start) ** (i / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(n, (min(batch_size, n),), device=data.x_train.device)
        loss = loss_fn(model(data.x_train[idx]).float(), data.y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        avg = smoothing * avg + (1 - smoothing) * value
        smoothed = avg / (1 - smoothing ** (i + 1))
        rows.append({"step": i, "lr": lr, "loss": value, "smoothed_loss": smoothed})
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > diverge * best:
            break
    return rows, suggest(rows)


def suggest(rows: list[dict]) -> dict:
    """suggested_lr (half the lr of the smoothed loss's minimum), min_loss_lr, and steepest_lr (the
    fastest fall of the smoothed loss per decade of lr, over windows of a fifth of a decade)."""
    loss = np.array([r["smoothed_loss"] for r in rows])
    lrs = np.array([r["lr"] for r in rows])
    finite = np.isfinite(loss)
    loss, lrs = loss[finite], lrs[finite]
    low = int(np.argmin(loss))
    logs = np.log10(lrs)
    w = max(1, int(np.searchsorted(logs, logs[0] + 0.2)))  # steps in a fifth of a decade
    slopes = [(loss[i + w] - loss[i - w]) / (logs[i + w] - logs[i - w]) for i in range(w, low - w)]
    steepest = float(lrs[w + int(np.argmin(slopes))]) if slopes else float(lrs[low])
    return {"suggested_lr": float(lrs[low]) / 2, "min_loss_lr": float(lrs[low]), "steepest_lr": steepest}


def run_lr_find(cfg: DictConfig, run_dir: Path, meta: dict | None = None) -> dict:
    """Check cfg, run the range test, write lr_find.csv, lr_find.png and summary.json."""
    from runner.run import prepare
    from runner.runfolder import _identity, write_csv, write_summary

    trainer, _, device, data, model, optimizer = prepare(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    c = cfg.lr_find
    rows, found = lr_range_test(model, data, optimizer, start=c.start, end=c.end, steps=c.steps,
                                batch_size=trainer.batch_size, smoothing=c.smoothing, diverge=c.diverge)
    write_csv(rows, run_dir / "lr_find.csv")
    plot(rows, found, run_dir / "lr_find.png")
    log.info("lr range test: %s", found)
    return write_summary(run_dir, {"status": "completed", "mode": "lr_find", "stop_reason": "lr range test", **found,
                                   "steps": len(rows), "device": str(device), **_identity(cfg, meta)})


def plot(rows: list[dict], found: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["lr"] for r in rows], [r["loss"] for r in rows], alpha=0.3, label="loss")
    ax.plot([r["lr"] for r in rows], [r["smoothed_loss"] for r in rows], label="smoothed loss")
    ax.axvline(found["suggested_lr"], color="k", linestyle="--", label=f"suggested lr {found['suggested_lr']:.2g}")
    ax.axvline(found["steepest_lr"], color="grey", linestyle=":", label=f"steepest fall {found['steepest_lr']:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR range test")
    finite = [r["smoothed_loss"] for r in rows if math.isfinite(r["smoothed_loss"])]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
