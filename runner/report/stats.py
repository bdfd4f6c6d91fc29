"""Seed statistics: mean, std and Student-t interval per group, differences to a baseline with
an exact permutation test or Welch's t-test, Holm-adjusted over the groups, and the difference's Welch
interval; ensembles of a group's predictions; tuned arms (best_of); groups mixing thread counts; pivots."""

import math
import statistics
from itertools import combinations
from pathlib import Path

import pandas as pd

from runner.report.load import SEED_KEYS, finished, is_number, select, text, varying_keys

EXACT_SPLITS = 100_000
"""The permutation test enumerates every split up to this many (1 run against 20 is 21 splits)."""


def mean_ci(values) -> dict:
    """mean, std (n - 1), n and the 95% Student-t confidence interval of the finite values."""
    from scipy.special import stdtrit  # Student t quantile (scipy.stats costs 1.7 s to import)

    v = [float(x) for x in values if is_number(x) and math.isfinite(float(x))]
    n = len(v)
    mean = statistics.mean(v) if n else math.nan  # exact sums: three seeds at 0.95 give 0.95 ± 0, not ± 1e-16
    std = statistics.stdev(v) if n > 1 else math.nan
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
    from scipy.special import stdtrit

    a = [float(x) for x in a if is_number(x) and math.isfinite(float(x))]
    b = [float(x) for x in b if is_number(x) and math.isfinite(float(x))]
    if not a or not b:
        return {"diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan}
    diff = statistics.mean(a) - statistics.mean(b)  # exact sums, as mean_ci: a group's diff is its mean's
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "diff_ci_low": math.nan, "diff_ci_high": math.nan}
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return {"diff": diff, "diff_ci_low": diff, "diff_ci_high": diff}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stdtrit(df, (1 + level) / 2)) * math.sqrt(va + vb)
    return {"diff": diff, "diff_ci_low": diff - half, "diff_ci_high": diff + half}


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
    and with a baseline the comparison columns of `compare` (diff with its Welch interval, p, test, p_holm).
    Unfinished, failed and unreadable runs count in `runs` but not in the statistics."""
    done_all = finished(runs)
    base = baseline_runs(runs, keys, baseline) if baseline else None
    groups, done_parts = [], []
    for _, part in _parts(runs, keys):
        row = {k: part[k].iloc[0] for k in keys} | {"runs": len(part)}
        if "status" in part:  # what did not complete, e.g. "2 diverged"
            other = part["status"][part["status"] != "completed"].value_counts()
            row["not_completed"] = ", ".join(f"{n} {s}" for s, n in other.items())
        done = done_all.loc[done_all.index.intersection(part.index)]
        for m in metrics:
            row |= {f"{m}_{s}": v for s, v in mean_ci(_values(done, m)).items()}
        groups.append(row | ensemble(done["run"]))
        done_parts.append(done)
    if base is not None:
        compare(groups, done_parts, next(i for i, d in enumerate(done_parts) if base.index.isin(d.index).all()),
                metrics)
    return pd.DataFrame(groups)


def _values(runs: pd.DataFrame, metric: str) -> list[float]:
    return [float(x) for x in pd.to_numeric(runs[metric], errors="coerce").dropna()] if metric in runs else []


def compare(rows: list[dict], done: list[pd.DataFrame], base: int, metrics) -> None:
    """Add to each row, per metric m, its finished runs (`done`) against the baseline row's (row number `base`):
    m_diff (its mean - the baseline's) with the 95% Welch interval m_diff_ci_low, m_diff_ci_high; m_p, two-sided,
    and m_test, the test that gave it (see p_value); m_p_holm, p Holm-adjusted over the family of every row but the
    baseline's. The baseline's own row keeps diff 0 and p 1, with no interval and no p_holm; `baseline` marks it."""
    for m in metrics:
        base_values = _values(done[base], m)
        for i, (row, runs) in enumerate(zip(rows, done)):
            values = _values(runs, m)
            p, test = p_value(values, base_values)
            e = effect(values, base_values)
            low, high = (math.nan, math.nan) if i == base else (e["diff_ci_low"], e["diff_ci_high"])
            row |= {f"{m}_diff": e["diff"], f"{m}_diff_ci_low": low, f"{m}_diff_ci_high": high, f"{m}_p": p,
                    f"{m}_test": test}
        adjusted = holm([math.nan if i == base else row[f"{m}_p"] for i, row in enumerate(rows)])
        for row, p in zip(rows, adjusted):
            row[f"{m}_p_holm"] = p
    for i, row in enumerate(rows):
        row["baseline"] = i == base


def best_of(runs: pd.DataFrame, key: str, select_metric: str = "val_acc", *, keys: list[str] | None = None,
            metrics=("test_acc",), mode: str = "max", baseline: dict | None = None) -> pd.DataFrame:
    """Tuned arms (DeepOBS, AlgoPerf): the arms are the groups over the varying config keys (`keys`, default
    varying_keys(runs)) but `key` and the seeds. For each arm, the setting of `key` whose finished runs have the best
    mean `select_metric` (max or min by `mode`; a setting with a non-finite value on any seed, a diverged one say,
    is never chosen over one without) is kept, and its runs' `metrics` are summarized over their seeds.
    One row per arm: the arm's keys, `key` (the chosen setting), `settings` (how many were tried),
    `<select_metric>_mean` (the winning score), then per metric mean, std, n, ci_low, ci_high. With a baseline
    (key=value pairs naming one arm; a value for `key` itself plays no part here), each arm's chosen runs are
    compared with the baseline arm's chosen runs as `compare` does (diff and its interval, p, test, p_holm)."""
    if mode not in ("max", "min"):
        raise ValueError(f"best_of: mode={mode!r} must be 'max' or 'min'")
    for column in (key, select_metric, *metrics):
        if column not in runs.columns:
            raise ValueError(f"--best-of: {column!r} is not a column of the runs table; "
                             f"columns: {sorted(runs.columns)}")
    arms = [k for k in (varying_keys(runs) if keys is None else keys) if k != key and k not in SEED_KEYS]
    rows, chosen_runs, labels = [], [], []
    for _, arm in _parts(finished(runs), arms):
        settings = []  # (finite on every seed, mean, runs)
        for _, at in arm.groupby(arm[key].map(text), sort=False):
            values = pd.to_numeric(at[select_metric], errors="coerce").astype(float)
            finite = bool(values.map(math.isfinite).all())
            settings.append((finite, float(values.mean()) if finite else math.nan, at))
        candidates = [s for s in settings if s[0]] or settings[:1]
        _, score, chosen = (max if mode == "max" else min)(candidates, key=lambda s: s[1] if s[0] else 0.0)
        row = {k: arm[k].iloc[0] for k in arms} | {key: chosen[key].iloc[0], "settings": len(settings),
                                                    f"{select_metric}_mean": score}
        for m in metrics:
            row |= {f"{m}_{s}": v for s, v in mean_ci(_values(chosen, m)).items()}
        rows.append(row)
        chosen_runs.append(chosen)
        labels.append(tuple(text(arm[k].iloc[0]) for k in arms))
    if baseline:
        compare(rows, chosen_runs, labels.index(_baseline_arm(runs, key, arms, baseline)), metrics)
    return pd.DataFrame(rows)


def _baseline_arm(runs: pd.DataFrame, key: str, arms: list[str], baseline: dict) -> tuple:
    """The arm (its keys' values as text) that baseline names, leaving out a value for key."""
    where = {k: v for k, v in baseline.items() if k != key}
    unknown = [k for k in where if k not in runs.columns]
    if unknown:
        raise ValueError(f"--baseline key {unknown[0]!r} is not a config key; arms of --best-of {key}: {arms}")
    matched = {tuple(text(v) for v in r) for r in select(finished(runs), where)[arms].itertuples(index=False)}
    if len(matched) != 1:
        found = f"matches {len(matched)} arms of --best-of {key}" if matched else "matches no finished run"
        raise ValueError(f"--baseline {_pairs(baseline)} {found}; an arm is one value for each of {', '.join(arms)}")
    return matched.pop()


def mixed_threads(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The groups (runs differing only in seeds) whose runs used different torch thread counts
    (summary.json's `threads`): their spread mixes the seeds' with the threads' (a schedule run gave 0.714 on
    1 thread and 0.690 on 2). One row per such group: its keys and the thread counts seen, e.g. "1, 2"."""
    if "threads" not in runs.columns:
        return pd.DataFrame(columns=[*keys, "threads"])
    out = []
    for _, part in _parts(runs, keys):
        seen = sorted({int(t) for t in pd.to_numeric(part["threads"], errors="coerce").dropna()})
        if len(seen) > 1:
            out.append({k: part[k].iloc[0] for k in keys} | {"threads": ", ".join(map(str, seen))})
    return pd.DataFrame(out, columns=[*keys, "threads"])


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
