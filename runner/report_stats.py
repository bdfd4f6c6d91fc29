"""Statistics for comparing several arms against one baseline, and tuned arms (pure functions on
lists and on the runs table that `report` builds; to be moved into the report package).

- holm: Holm-Bonferroni adjusted p-values, for several arms tested against one baseline.
- effect: the difference of two groups' means with its 95% Welch confidence interval.
- best_of: the DeepOBS / AlgoPerf protocol for tuned arms: per arm, the setting of one key (the
  learning rate, say) with the best mean validation metric, and that setting's test metrics."""

import math

import pandas as pd

SEED_KEYS = ("trainer.seed", "data.seed")
"""Config keys that only re-draw randomness (as in runner.report)."""
FINISHED = ("completed", "diverged")


def _finite(values) -> list[float]:
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out.append(x)
    return out


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order: with the m finite p-values sorted
    ascending, the i-th (from 0) becomes max over j <= i of min(1, (m - j) p_(j)). Rejecting where the
    adjusted p < alpha keeps the family-wise error rate at alpha. NaN stays NaN and does not count in m."""
    p = [float(x) if x is not None else math.nan for x in pvalues]
    order = sorted((i for i, x in enumerate(p) if math.isfinite(x)), key=lambda i: p[i])
    adjusted, running = [math.nan] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def effect(a, b, level: float = 0.95) -> dict:
    """mean(a) - mean(b) with its Welch confidence interval: diff -/+ t(df, (1 + level) / 2) * se, where
    se^2 = var(a)/n_a + var(b)/n_b (variances with n - 1) and df is Welch-Satterthwaite's. Non-finite
    values are left out; with fewer than 2 values on a side the interval is NaN."""
    from scipy.special import stdtrit  # Student t quantile (scipy.stats costs 1.7 s to import)

    a, b = _finite(a), _finite(b)
    if not a or not b:
        return {"diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan}
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    diff = ma - mb
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "diff_ci_low": math.nan, "diff_ci_high": math.nan}
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb == 0:
        return {"diff": diff, "diff_ci_low": diff, "diff_ci_high": diff}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stdtrit(df, (1 + level) / 2)) * math.sqrt(va + vb)
    return {"diff": diff, "diff_ci_low": diff - half, "diff_ci_high": diff + half}


def _summary(values) -> dict:
    """mean, std (n - 1), n and the 95% Student-t interval of the finite values."""
    from scipy.special import stdtrit

    v = _finite(values)
    n = len(v)
    mean = sum(v) / n if n else math.nan
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else math.nan
    half = float(stdtrit(n - 1, 0.975)) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def _text(v) -> str:
    """The value as grouping sees it: NaN and None alike, 0 and 0.0 alike (as in runner.report)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


def best_of(runs: pd.DataFrame, key: str, select_metric: str = "val_acc", *, keys: list[str] | None = None,
            metrics=("test_acc",), mode: str = "max") -> pd.DataFrame:
    """Tuned arms (DeepOBS, AlgoPerf): the arms are the groups over every varying config key (`keys`;
    default: every column named like a config key, with a dot or a group's choice, that varies) except
    `key` and the seeds. For each arm, the setting of `key` whose runs have the best mean `select_metric`
    (max or min by `mode`; a setting with a non-finite value on any seed, a diverged one say, is never
    chosen over one without) is kept, and its runs' `metrics` are summarized over their seeds.
    One row per arm: the arm's keys, `key` (the chosen setting), `settings` (how many were tried),
    `<select_metric>_mean` (the winning score), then per metric mean, std, n, ci_low, ci_high."""
    if mode not in ("max", "min"):
        raise ValueError(f"best_of: mode={mode!r} must be 'max' or 'min'")
    for column in (key, select_metric, *metrics):
        if column not in runs.columns:
            raise ValueError(f"--best-of: {column!r} is not a column of the runs table; "
                             f"columns: {sorted(runs.columns)}")
    done = runs[runs["status"].isin(FINISHED)] if "status" in runs else runs
    if keys is None:
        keys = [c for c in runs.columns if ("." in c or c in _CHOICE_COLUMNS) and runs[c].map(_text).nunique() > 1]
    arms = [k for k in keys if k != key and k not in SEED_KEYS]
    out = []
    parts = done.groupby([done[k].map(_text) for k in arms], sort=False) if arms else [((), done)]
    for _, arm in parts:
        scores = {}
        for setting, runs_at in arm.groupby(arm[key].map(_text), sort=False):
            values = [float(v) if v is not None else math.nan for v in runs_at[select_metric]]
            finite = all(math.isfinite(v) for v in values)
            mean = sum(values) / len(values) if finite else math.nan
            scores[setting] = (finite, mean if mode == "max" or not finite else -mean, runs_at)
        setting, (_, score, chosen) = max(scores.items(), key=lambda s: (s[1][0], s[1][1] if s[1][0] else 0.0))
        row = {k: arm[k].iloc[0] for k in arms} | {key: chosen[key].iloc[0], "settings": len(scores),
                                                    f"{select_metric}_mean": score if mode == "max" else -score}
        for m in metrics:
            row |= {f"{m}_{s}": v for s, v in _summary(chosen[m]).items()}
        out.append(row)
    return pd.DataFrame(out)


_CHOICE_COLUMNS = ("data", "model", "init", "norm", "regularizer", "optimizer", "schedule", "early_stopping", "clip",
                   "diagnostics", "lr_find", "preset")
"""Group-choice columns of the runs table (config keys without a dot)."""


def mixed_threads(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The groups (runs differing only in seeds) whose runs used different torch thread counts
    (summary.json's `threads`): their spread mixes the seeds' with the threads' (a schedule run gave 0.714 on
    1 thread and 0.690 on 2). One row per such group: its keys and the thread counts seen, e.g. "1, 2"."""
    if "threads" not in runs.columns:
        return pd.DataFrame(columns=[*keys, "threads"])
    out = []
    parts = runs.groupby([runs[k].map(_text) for k in keys], sort=False) if keys else [((), runs)]
    for _, part in parts:
        seen = sorted({int(t) for t in part["threads"] if t is not None and not pd.isna(t)})
        if len(seen) > 1:
            out.append({k: part[k].iloc[0] for k in keys} | {"threads": ", ".join(map(str, seen))})
    return pd.DataFrame(out, columns=[*keys, "threads"])
