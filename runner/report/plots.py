"""Plots: learning curves as small multiples (one panel per group), the pivot's heatmap, and a
metric against a swept numeric key (log or symlog axis when the values span decades)."""

import math
from pathlib import Path

import pandas as pd

from runner.report.load import finished, text
from runner.report.tables import header, mean_std
from runner.runfolder import read_metrics


def _read_curves(run_dirs, column: str) -> pd.DataFrame:
    rows = [(r["epoch"], r[column]) for d in run_dirs for r in read_metrics(Path(d) / "metrics.csv")
            if "epoch" in r and column in r]
    return pd.DataFrame(rows, columns=["epoch", column])


def _label(keys, values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{header(k, keys)}={v}" for k, v in zip(keys, values)) or "all runs"


def plot_curves(runs, keys, column, path: Path, rank_by: str, most: int = 12) -> bool:
    """Mean ± std of a metrics.csv column against epoch, one small panel per group on shared axes
    (9 lines on one axis cannot be told apart): the `most` best groups by rank_by's mean when
    there are more. A run cut off mid-write contributes the rows before the cut."""
    import matplotlib.pyplot as plt

    parts = list(runs.groupby([runs[k].map(text) for k in keys], sort=False)) if keys else [((), runs)]
    title = f"{column}: mean ± std over seeds"
    if len(parts) > most and rank_by in runs:
        higher_better = not rank_by.endswith("loss")
        parts.sort(key=lambda vp: pd.to_numeric(vp[1][rank_by], errors="coerce").mean(), reverse=higher_better)
        parts, title = parts[:most], f"{title} ({most} best of {len(parts)} groups by {rank_by})"
    curves = [(values, _read_curves(part["run"], column)) for values, part in parts]
    curves = [(v, c) for v, c in curves if not c.empty]
    if not curves:
        return False
    ncols = math.ceil(math.sqrt(len(curves)))
    nrows = math.ceil(len(curves) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols + 1, 2.2 * nrows + 0.8), sharex=True, sharey=True,
                             squeeze=False)
    for ax, (values, c) in zip(axes.flat, curves):
        stats = c.groupby("epoch")[column].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], color="C0")
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.25,
                        color="C0")
        ax.set_title(_label(keys, values), fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel(column)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_heatmap(means: pd.DataFrame, stds: pd.DataFrame, value: str, path: Path, scale: float = 1.0) -> None:
    """The pivot's means as colors, each cell written as the table writes it, in black or white
    after the cell color's luminance so that it reads on yellow and on purple alike."""
    import matplotlib.pyplot as plt
    import numpy as np

    grid = means.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(min(1.6 * len(means.columns) + 3, 14), min(0.6 * len(means.index) + 2, 9)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(means.columns)), [str(c) for c in means.columns])
    ax.set_yticks(range(len(means.index)), [str(r) for r in means.index])
    ax.set(xlabel=means.columns.name, ylabel=means.index.name, title=f"{value} (mean ± std over seeds)")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isnan(grid[i, j]):
                continue
            r, g, b, _ = image.cmap(image.norm(grid[i, j]))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, mean_std(grid[i, j], stds.iloc[i, j], scale), ha="center", va="center", color=color,
                    fontsize=8)
    fig.colorbar(image)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def axis_scale(values) -> str:
    """'log' when the positive values span a decade or more, 'symlog' when 0 is among them too
    (lambda = 0, 1e-4, 1e-3: on a linear axis 0 and 1e-4 fall on one point), else 'linear'."""
    values = pd.Series(values, dtype=float)
    positive = values[values > 0]
    if len(positive) < 2 or positive.max() / positive.min() < 10 or (values < 0).any():
        return "linear"
    return "symlog" if (values == 0).any() else "log"


def plot_against(runs, key, others, value, path: Path) -> bool:
    """Group means (± std) of value against one numeric key, one line per setting of the other keys."""
    import matplotlib.pyplot as plt

    done = finished(runs).copy()
    done[key] = pd.to_numeric(done[key], errors="coerce")
    if value in done:
        done[value] = pd.to_numeric(done[value], errors="coerce")
    done = done.dropna(subset=[key, value]) if value in done else done.iloc[0:0]
    if done.empty or done[key].nunique() < 2:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    parts = done.groupby([done[k].map(text) for k in others], sort=False) if others else [((), done)]
    for values, part in parts:
        stats = part.groupby(key)[value].agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3,
                    label=_label(others, values) if others else None)
    scale = axis_scale(done[key].unique())
    if scale == "symlog":  # linear between 0 and the smallest positive value, log above
        ax.set_xscale("symlog", linthresh=done[key][done[key] > 0].min())
    elif scale == "log":
        ax.set_xscale("log")
    ticks = sorted(done[key].unique())
    ax.set_xticks(ticks, [text(float(t)) for t in ticks])
    ax.set(xlabel=key, ylabel=value, title=f"{value} against {key}")
    if others:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
