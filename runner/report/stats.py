"""Seed statistics: mean, std and Student-t interval per group, differences to a baseline with
an exact permutation test or Welch's t-test, ensembles of a group's predictions, pivots."""

import math
from itertools import combinations
from pathlib import Path

import pandas as pd

from runner.report.load import finished, is_number, select, text

EXACT_SPLITS = 100_000
"""The permutation test enumerates every split up to this many (1 run against 20 is 21 splits)."""


def mean_ci(values) -> dict:
    """mean, std (n - 1), n and the 95% Student-t confidence interval of the finite values."""
    from scipy.special import stdtrit  # Student t quantile (scipy.stats costs 1.7 s to import)

    v = [float(x) for x in values if is_number(x) and math.isfinite(float(x))]
    n = len(v)
    mean = sum(v) / n if n else math.nan
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else math.nan
    half = stdtrit(n - 1, 0.975) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def p_value(a, b) -> tuple[float, str]:
    """Two-sided p-value for a difference in means: an exact permutation test when there are
    12 runs or fewer in all (every split enumerated; Welch's t-test leans on normality that
    3 seeds cannot show), Welch's t-test above that. A side of one run has no variance for
    Welch: the permutation test then (1 run against m has m + 1 splits); nan when neither fits."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        return math.nan, ""
    if len(a) + len(b) > 12 and min(len(a), len(b)) >= 2:
        return welch(a, b), "welch"
    if math.comb(len(a) + len(b), len(a)) > EXACT_SPLITS:
        return math.nan, ""
    pooled, observed = a + b, abs(sum(a) / len(a) - sum(b) / len(b))
    total = sum(pooled)
    extreme = count = 0
    for idx in combinations(range(len(pooled)), len(a)):
        sa = sum(pooled[i] for i in idx)
        count += 1
        extreme += abs(sa / len(a) - (total - sa) / len(b)) >= observed - 1e-12
    return extreme / count, "permutation"


def welch(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances, Welch-Satterthwaite degrees of
    freedom); nan when a side has fewer than 2 values (no variance to estimate)."""
    from scipy.special import stdtr

    if min(len(a), len(b)) < 2:
        return math.nan
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb == 0:
        return 1.0 if ma == mb else 0.0
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stdtr(df, -abs(t)))


def ensemble(run_dirs) -> dict:
    """The lectures' model averaging: the test metric of the mean of the runs' test predictions
    (class probabilities, or regression outputs) from their predictions.npz."""
    import numpy as np

    preds, targets = [], None
    for d in run_dirs:
        try:
            with np.load(Path(d) / "predictions.npz") as f:
                preds.append(f["predictions"])
                targets = f["targets"]
        except (OSError, KeyError, ValueError, EOFError):
            continue
    if not preds or len({p.shape for p in preds}) > 1:
        return {}
    mean = np.mean(preds, axis=0)
    if targets.ndim == 1:  # class labels
        return {"ensemble_test_acc": float((mean.argmax(1) == targets).mean()), "ensemble_n": len(preds)}
    sse, sst = ((mean - targets) ** 2).sum(), ((targets - targets.mean(0)) ** 2).sum()
    return {"ensemble_test_r2": float(1 - sse / sst), "ensemble_n": len(preds)}


def _parts(runs: pd.DataFrame, keys: list[str]):
    return list(runs.groupby([runs[k].map(text) for k in keys], sort=False)) if keys else [((), runs)]


def baseline_runs(runs: pd.DataFrame, keys: list[str], baseline: dict) -> pd.DataFrame:
    """The finished runs of the one group that baseline names; ValueError when it names no
    column, no finished run, or several groups (their pooled runs would make no baseline)."""
    unknown = [k for k in baseline if k not in runs.columns]
    if unknown:
        raise ValueError(f"--baseline key {unknown[0]!r} is not a config key; varying keys: {keys}")
    base = select(finished(runs), baseline)
    if base.empty:
        raise ValueError(f"--baseline {_pairs(baseline)} matches no finished run")
    matched = _parts(base, keys)
    if len(matched) > 1:
        free = [k for k in keys if k not in baseline and base[k].map(text).nunique() > 1]
        names = "; ".join(_pairs(dict(zip(keys, v if isinstance(v, tuple) else (v,)))) for v, _ in matched[:5])
        raise ValueError(f"--baseline {_pairs(baseline)} matches {len(matched)} groups ({names}); "
                         f"add a value for {', '.join(free)} to name one")
    return base


def _pairs(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def group_runs(runs: pd.DataFrame, keys: list[str], metrics: list[str], baseline: dict | None = None) -> pd.DataFrame:
    """One row per combination of keys: runs (all), then per metric mean, std, n, ci_low, ci_high,
    and with a baseline, diff (group mean - baseline mean), p (two-sided) and the test used.
    Unfinished, failed and unreadable runs count in `runs` but not in the statistics."""
    done_all = finished(runs)
    base = baseline_runs(runs, keys, baseline) if baseline else None
    groups = []
    for _, part in _parts(runs, keys):
        row = {k: part[k].iloc[0] for k in keys} | {"runs": len(part)}
        if "status" in part:  # what did not complete, e.g. "2 diverged"
            other = part["status"][part["status"] != "completed"].value_counts()
            row["not_completed"] = ", ".join(f"{n} {s}" for s, n in other.items())
        done = done_all.loc[done_all.index.intersection(part.index)]
        for m in metrics:
            values = pd.to_numeric(done[m], errors="coerce").dropna() if m in done else pd.Series(dtype=float)
            row |= {f"{m}_{s}": v for s, v in mean_ci(values).items()}
            if base is not None:
                base_values = [float(x) for x in pd.to_numeric(base[m], errors="coerce").dropna()] if m in base else []
                p, test = p_value(list(values), base_values)
                row |= {f"{m}_diff": row[f"{m}_mean"] - (sum(base_values) / len(base_values) if base_values
                                                          else math.nan), f"{m}_p": p, f"{m}_test": test}
        groups.append(row | ensemble(done["run"]))
    return pd.DataFrame(groups)


def _order(labels) -> list:
    """Labels in numeric order where they are numbers, then the others alphabetically."""
    return sorted(labels, key=lambda s: (0, float(s), "") if is_number(s) else (1, 0.0, s))


def pivot(runs: pd.DataFrame, rows: str, cols: str, value: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two-way table of value over the finished runs: (means, stds), labelled as `text` writes the
    keys' values (0 and 1e-4 alike on both axes), in numeric order. A cell of one run has std nan."""
    for key in (rows, cols, value):
        if key not in runs.columns:
            raise ValueError(f"report: {key!r} is not a column of the runs table; columns: {sorted(runs.columns)}")
    done = finished(runs)
    frame = pd.DataFrame({"r": done[rows].map(text), "c": done[cols].map(text),
                          "v": pd.to_numeric(done[value], errors="coerce")})
    stats = frame.groupby(["r", "c"])["v"].agg(["mean", "std"])
    index, columns = _order(frame["r"].unique()), _order(frame["c"].unique())
    means = stats["mean"].unstack().reindex(index=index, columns=columns)
    stds = stats["std"].unstack().reindex(index=index, columns=columns)
    means.index.name, means.columns.name = rows, cols
    stds.index.name, stds.columns.name = rows, cols
    return means, stds
