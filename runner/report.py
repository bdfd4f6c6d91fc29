"""`report`: turn run folders into ablation tables (CSV, Markdown, LaTeX) with seed statistics
and plots. `load_runs(path)` gives the runs table as a pandas DataFrame for notebooks.

A run is a folder holding .hydra/config.yaml. Runs whose configs differ only in a seed key
form a group; each group gets mean, std, n and a 95% confidence interval per metric."""

import argparse
import csv
import json
import logging
import math
import os
import sys
from itertools import combinations
from pathlib import Path

import pandas as pd
import yaml

log = logging.getLogger(__name__)

SEED_KEYS = ("trainer.seed", "data.seed")
"""Config keys that only re-draw randomness: runs differing in these alone are one group."""
IGNORED_PREFIXES = ("paths.", "print_config")
"""Config keys that never describe the experiment."""
METRICS = ["test_acc", "test_r2", "test_loss", "val_acc", "val_r2", "val_loss", "best_value", "gap_acc", "gap_r2",
           "gap_loss", "epochs", "train_seconds", "diag_grad_ratio", "diag_dead_max", "diag_saturated_max"]
"""Summary fields summarized per group, when present."""
RUN_COLUMNS = ["status", "stop_reason", "best_value", "val_acc", "val_r2", "test_loss", "test_acc", "test_r2",
               "gap_acc", "gap_r2", "epochs", "wall_seconds", "diag_grad_ratio", "diag_dead_max",
               "diag_saturated_max", "diag_flags", "suggested_lr"]
"""Summary fields shown in the runs table, when present."""
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def find_runs(paths) -> list[Path]:
    """Every folder below the paths (or a path itself) that holds .hydra/config.yaml."""
    found = set()
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"report: no such folder {root}")
        found.update(p.parent.parent for p in root.glob("**/.hydra/config.yaml"))
    return sorted(found, key=lambda p: [int(part) if part.isdigit() else part for part in p.parts])


def _flatten(node, prefix="") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else node}


def _last_row(path: Path) -> dict:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {"epochs": float(rows[-1]["epoch"])} if rows else {}


def read_run(run_dir: Path, warn=log.warning) -> dict | None:
    """One row of the runs table: the flattened config, the group choices and the summary.
    A run without summary.json is `unfinished`; an unreadable file is named once and skipped."""
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except (ValueError, OSError) as e:
            warn(f"skipped unreadable {summary_path}: {e}")
            summary = {"status": "unreadable"}
    else:
        summary = {"status": "unfinished"}
        try:
            summary |= _last_row(run_dir / "metrics.csv")
        except (OSError, KeyError, ValueError):
            pass  # not started yet, or no evaluation so far
    config = summary.pop("config", None)  # `train` copies the resolved config here: JSON reads 20x faster
    if config is None:
        try:
            config = yaml.load((run_dir / ".hydra/config.yaml").read_text(), Loader=_Loader)
        except Exception as e:  # noqa: BLE001 - any unreadable config only skips this run
            warn(f"skipped unreadable {run_dir / '.hydra/config.yaml'}: {e}")
            return None
    row = {k: v for k, v in _flatten(config).items() if not k.startswith(IGNORED_PREFIXES)}
    row |= {k: v for k, v in summary.pop("choices", {}).items() if k not in ("trainer", "paths")}
    summary.pop("versions", None)
    summary.pop("overrides", None)
    return {"run": str(run_dir), **row, **summary}


def load_runs(*paths) -> pd.DataFrame:
    """The runs table: one row per run folder found below the paths."""
    rows = [r for r in map(read_run, find_runs(paths)) if r is not None]
    return pd.DataFrame(rows)


def varying_keys(runs: pd.DataFrame, include_seeds: bool = False) -> list[str]:
    """Config keys (dotted, plus group choices) whose value differs between runs."""
    summary_cols = set(RUN_COLUMNS) | set(METRICS) | {"run"}
    groups = config_groups()
    out = []
    for col in runs.columns:
        if col in summary_cols or ("." not in col and col not in groups):
            continue
        if col.endswith(("._target_", "._partial_")) or (not include_seeds and col in SEED_KEYS):
            continue
        if runs[col].map(_text).nunique() > 1:
            out.append(col)
    return sorted(out, key=lambda c: "." in c)  # group choices (optimizer=sgd) before their fields


def label_keys(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """The keys that name a group: without a group choice's fields that vary only along with the choice
    (optimizer.lr differs between optimizer=sgd and adamw, and adds nothing to their names), but with
    those swept within a choice (schedule.warmup=0,100 under each schedule)."""
    def follows_choice(k):
        choice = k.split(".")[0]
        return choice in keys and (runs.groupby(runs[choice].map(_text))[k].agg(lambda c: c.map(_text).nunique())
                                   <= 1).all()

    return [k for k in keys if "." not in k or not follows_choice(k)]


def config_groups() -> set[str]:
    """The config groups of conf/ (optimizer, init, ..., diagnostics): their choices are config keys too."""
    from importlib.resources import files

    return {p.name for p in files("runner.conf").iterdir() if p.is_dir() and not p.name.startswith("_")}


def mean_ci(values) -> dict:
    """mean, std (n - 1), n and the 95% Student-t confidence interval of the finite values."""
    from scipy.special import stdtrit  # Student t quantile (scipy.stats costs 1.7 s to import)

    v = [float(x) for x in values if x is not None and not pd.isna(x) and math.isfinite(float(x))]
    n = len(v)
    mean = sum(v) / n if n else math.nan
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else math.nan
    half = stdtrit(n - 1, 0.975) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def p_value(a, b) -> tuple[float, str]:
    """Two-sided p-value for a difference in means: an exact permutation test when there are
    12 runs or fewer in all (every split enumerated; Welch's t-test leans on normality that
    3 seeds cannot show), Welch's t-test above that."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        return math.nan, ""
    if len(a) + len(b) > 12:
        return welch(a, b), "welch"
    pooled, observed = a + b, abs(sum(a) / len(a) - sum(b) / len(b))
    total = sum(pooled)
    extreme = count = 0
    for idx in combinations(range(len(pooled)), len(a)):
        sa = sum(pooled[i] for i in idx)
        count += 1
        extreme += abs(sa / len(a) - (total - sa) / len(b)) >= observed - 1e-12
    return extreme / count, "permutation"


def _text(v) -> str:
    """The value as grouping and matching see it: NaN and None alike, 0 and 0.0 alike."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _value(v):
    """A command-line value as the config holds it: null, true/false, numbers."""
    if isinstance(v, str):
        if v.lower() in ("null", "none", "~"):
            return None
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        if _is_number(v):
            return float(v)
    return v


def _select(runs: pd.DataFrame, where: dict) -> pd.DataFrame:
    mask = pd.Series(True, runs.index)
    for k, v in where.items():
        mask &= runs[k].map(_text) == _text(_value(v))
    return runs[mask]


def _is_number(v) -> bool:
    try:
        float(v)
        return not isinstance(v, bool)
    except (TypeError, ValueError):
        return False


def welch(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom)."""
    from scipy.special import stdtr

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
        except (OSError, KeyError, ValueError):
            continue
    if not preds:
        return {}
    mean = np.mean(preds, axis=0)
    if targets.ndim == 1:  # class labels
        return {"ensemble_test_acc": float((mean.argmax(1) == targets).mean()), "ensemble_n": len(preds)}
    sse, sst = ((mean - targets) ** 2).sum(), ((targets - targets.mean(0)) ** 2).sum()
    return {"ensemble_test_r2": float(1 - sse / sst), "ensemble_n": len(preds)}


def group_runs(runs: pd.DataFrame, keys: list[str], metrics: list[str], baseline: dict | None = None) -> pd.DataFrame:
    """One row per combination of keys: runs (all), then per metric mean, std, n, ci_low, ci_high,
    and with a baseline, diff (group mean - baseline mean), p (two-sided) and the test used.
    Unfinished, failed and unreadable runs count in `runs` but not in the statistics."""
    finished = runs[runs["status"].isin(["completed", "diverged"])] if "status" in runs else runs.iloc[0:0]
    if baseline:
        unknown = [k for k in baseline if k not in runs.columns]
        if unknown:
            raise ValueError(f"--baseline key {unknown[0]!r} is not a config key; varying keys: {keys}")
        base = _select(finished, baseline)
        if base.empty:
            raise ValueError(f"--baseline {baseline} matches no finished run")
    groups = []
    parts = runs.groupby([runs[k].map(_text) for k in keys], sort=False) if keys else [((), runs)]
    for _, part in parts:
        row = {k: part[k].iloc[0] for k in keys} | {"runs": len(part)}
        if "status" in part:  # what did not complete, e.g. "2 diverged"
            other = part["status"][part["status"] != "completed"].value_counts()
            row["not_completed"] = ", ".join(f"{n} {s}" for s, n in other.items())
        done = finished.loc[finished.index.intersection(part.index)]
        for m in metrics:
            row |= {f"{m}_{s}": v for s, v in mean_ci(done[m] if m in done else []).items()}
            if baseline:
                base_values = [float(x) for x in base[m].dropna()]
                p, test = p_value([float(x) for x in done[m].dropna()], base_values)
                row |= {f"{m}_diff": row[f"{m}_mean"] - (sum(base_values) / len(base_values) if base_values
                                                          else math.nan), f"{m}_p": p, f"{m}_test": test}
        groups.append(row | ensemble(done["run"]))
    return pd.DataFrame(groups)


def pivot(runs: pd.DataFrame, rows: str, cols: str, value: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two-way table of value over the finished runs: (means, "mean ± std" strings)."""
    for key in (rows, cols, value):
        if key not in runs.columns:
            raise ValueError(f"report: {key!r} is not a column of the runs table; columns: {sorted(runs.columns)}")
    done = runs[runs["status"].isin(["completed", "diverged"])]
    table = done.pivot_table(index=rows, columns=cols, values=value, aggfunc=["mean", "std", "count"])
    means = table["mean"]
    text = means.copy().astype(object)
    for r in means.index:
        for c in means.columns:
            m, s = means.loc[r, c], table["std"].loc[r, c]
            text.loc[r, c] = "" if pd.isna(m) else (f"{m:.4g} ± {s:.2g}" if not pd.isna(s) else f"{m:.4g}")
    return means, text


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def to_markdown(df: pd.DataFrame) -> str:
    head = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(False)]
    return "\n".join(lines)


_TEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
        ("±", r"$\pm$")]


def _tex(s: str) -> str:
    for a, b in _TEX:  # backslash first, ± last: its $ must survive
        s = s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame, caption: str) -> str:
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{_tex(caption)}}}",
             r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\hline",
             " & ".join(_tex(str(c)) for c in df.columns) + r" \\", r"\hline"]
    lines += [" & ".join(_tex(_fmt(v)) for v in row) + r" \\" for row in df.itertuples(False)]
    return "\n".join([*lines, r"\hline", r"\end{tabular}", r"\end{table}"])


def _display_groups(groups: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Groups as text for one metric: `mean ± std`, n and the 95% CI, plus diff and p with a baseline."""
    out = groups[keys + ["runs"]].copy()
    if "not_completed" in groups and groups["not_completed"].astype(bool).any():
        out["not completed"] = groups["not_completed"]
    out[metric] = [f"{a:.4g} ± {s:.2g}" if not math.isnan(s) else _fmt(a)
                   for a, s in zip(groups[f"{metric}_mean"], groups[f"{metric}_std"])]
    out["n"] = groups[f"{metric}_n"]
    out["95% CI"] = [f"[{lo:.4g}, {hi:.4g}]" if not math.isnan(lo) else ""
                     for lo, hi in zip(groups[f"{metric}_ci_low"], groups[f"{metric}_ci_high"])]
    if f"{metric}_diff" in groups:
        out["diff"] = [_fmt(v) for v in groups[f"{metric}_diff"]]
        out["p"] = [_fmt(v) for v in groups[f"{metric}_p"]]
    if f"ensemble_{metric}" in groups and (groups["ensemble_n"] > 1).any():
        out["ensemble"] = [_fmt(v) for v in groups[f"ensemble_{metric}"]]
    for flag in ("diag_grad_ratio", "diag_dead_max"):
        if f"{flag}_mean" in groups and groups[f"{flag}_n"].sum():
            out[flag] = [_fmt(v) for v in groups[f"{flag}_mean"]]
    return out


def _read_curves(run_dirs, column: str) -> pd.DataFrame:
    frames = []
    for d in run_dirs:
        try:
            with open(Path(d) / "metrics.csv") as f:
                rows = [(float(r["epoch"]), float(r[column])) for r in csv.DictReader(f) if r.get(column)]
        except (OSError, KeyError, ValueError):
            continue
        frames.append(pd.DataFrame(rows, columns=["epoch", column]))
    return pd.concat(frames) if frames else pd.DataFrame(columns=["epoch", column])


def plot_curves(runs, keys, column, path: Path, rank_by: str, most: int = 10) -> bool:
    """Mean +- std of a metrics.csv column against epoch, one line per group: the `most` best
    groups by rank_by's mean when there are more (a legend of 100 lines helps nobody)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    parts = list(runs.groupby([runs[k].map(_text) for k in keys], sort=False)) if keys else [((), runs)]
    title = f"{column}: mean ± std over seeds"
    if len(parts) > most and rank_by in runs:
        higher_better = not rank_by.endswith("loss")
        parts.sort(key=lambda vp: pd.to_numeric(vp[1][rank_by], errors="coerce").mean(), reverse=higher_better)
        parts, title = parts[:most], f"{title} ({most} best of {len(parts)} groups by {rank_by})"
    for values, part in parts:
        curves = _read_curves(part["run"], column)
        if curves.empty:
            continue
        stats = curves.groupby("epoch")[column].agg(["mean", "std"]).fillna(0.0)
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, values if isinstance(values, tuple) else (values,)))
        ax.plot(stats.index, stats["mean"], label=label or "all runs")
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
        drawn = True
    if drawn:
        ax.set(xlabel="epoch", ylabel=column, title=title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def plot_heatmap(means: pd.DataFrame, value: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(min(1.2 * len(means.columns) + 3, 12), min(0.6 * len(means.index) + 2, 8)))
    image = ax.imshow(means.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(means.columns)), [str(c) for c in means.columns])
    ax.set_yticks(range(len(means.index)), [str(r) for r in means.index])
    ax.set(xlabel=means.columns.name, ylabel=means.index.name, title=f"{value} (mean over seeds)")
    for (i, j), v in pd.DataFrame(means.to_numpy(dtype=float)).stack().items():
        ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="w")
    fig.colorbar(image)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_against(runs, key, others, value, path: Path) -> bool:
    """Group means (+- std) of value against one numeric key, one line per setting of the other keys.
    A log axis (symlog when 0 is among the values) when the positive values span 2 decades or more."""
    import matplotlib.pyplot as plt

    done = runs[runs["status"].isin(["completed", "diverged"])].copy()
    done[key] = pd.to_numeric(done[key], errors="coerce")
    done = done.dropna(subset=[key, value]) if value in done else done.iloc[0:0]
    if done.empty or done[key].nunique() < 2:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    parts = done.groupby([done[k].map(_text) for k in others], sort=False) if others else [((), done)]
    for values, part in parts:
        stats = part.groupby(key)[value].agg(["mean", "std"]).fillna(0.0)
        label = ", ".join(f"{k}={v}" for k, v in zip(others, values if isinstance(values, tuple) else (values,)))
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label or None)
    positive = done[key][done[key] > 0]
    if len(positive) and positive.max() / positive.min() >= 100:
        if (done[key] <= 0).any():
            ax.set_xscale("symlog", linthresh=positive.min())
        else:
            ax.set_xscale("log")
    ax.set(xlabel=key, ylabel=value, title=f"{value} against {key}")
    if others:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def report(paths, out: Path | None = None, baseline: dict | None = None, rows: str | None = None,
           cols: str | None = None, value: str | None = None, plots: bool = True, warn=log.warning) -> dict:
    """Write runs.csv, groups.csv, report.md, report.tex and the plots; return the tables."""
    found = find_runs(paths)
    if not found:
        raise ValueError(f"report: no run folders (with .hydra/config.yaml) below {', '.join(map(str, paths))}")
    runs = pd.DataFrame([r for r in (read_run(d, warn) for d in found) if r is not None])
    keys = varying_keys(runs)
    metrics = [m for m in METRICS if m in runs.columns]
    value = value or next((m for m in ("test_acc", "test_r2", "test_loss") if m in runs.columns), metrics[0])
    out = Path(out) if out else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)

    seeds = [k for k in SEED_KEYS if k in runs.columns and runs[k].nunique() > 1]
    run_table = runs[["run", *keys, *seeds, *[c for c in RUN_COLUMNS if c in runs.columns]]].copy()
    common = found[0].parent if len(found) == 1 else os.path.commonpath(found)
    run_table["run"] = [os.path.relpath(r, common) for r in run_table["run"]]
    groups = group_runs(runs, keys, metrics, baseline)
    shown = _display_groups(groups, label_keys(runs, keys), value)  # groups.csv keeps every varying key
    run_table.to_csv(out / "runs.csv", index=False)
    groups.to_csv(out / "groups.csv", index=False)

    md = [f"# Report: {len(runs)} runs, {len(groups)} groups", "",
          f"Varying keys: {', '.join(keys) or '(none)'}; seeds: {', '.join(seeds) or '(one run per group)'}.", "",
          "## Groups (mean ± std over seeds, 95% CI)", "", to_markdown(shown), "", "## Runs", "",
          to_markdown(run_table), ""]
    tex = [to_latex(shown, f"Groups: {value} mean ± std over seeds")]
    result = {"runs": run_table, "groups": groups, "shown": shown, "out": out, "keys": keys, "value": value}
    if rows or cols:
        if not (rows and cols):
            raise ValueError("report: --rows and --cols go together (with --value, default test_acc)")
        means, text = pivot(runs, rows, cols, value)
        flat = text.reset_index()
        flat.columns = [f"{rows} \\ {cols}"] + [str(c) for c in text.columns]
        md += [f"## {value}: {rows} x {cols}", "", to_markdown(flat), ""]
        tex.append(to_latex(flat, f"{value}: {rows} by {cols}"))
        means.to_csv(out / "pivot.csv")
        result["pivot"] = text
        if plots:
            plot_heatmap(means, value, out / "pivot.png")
    (out / "report.md").write_text("\n".join(md))
    (out / "report.tex").write_text("\n\n".join(tex) + "\n")
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        curve = value.replace("test_", "val_") if value.startswith("test_") else "val_loss"
        names = label_keys(runs, keys)
        plot_curves(runs, names, curve, out / "curves.png", rank_by=value)
        for key in [k for k in names if pd.to_numeric(runs[k], errors="coerce").notna().all()][:3]:
            plot_against(runs, key, [k for k in names if k != key], value, out / f"{value}_vs_{key}.png")
    return result


def _parse_baseline(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--baseline {item!r} must be key=value, e.g. optimizer=adamw")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders, or folders holding them")
    parser.add_argument("--out", help="where to write the tables and plots (default: <first path>/report)")
    parser.add_argument("--baseline", nargs="+", metavar="KEY=VALUE", help="the group others are compared to")
    parser.add_argument("--rows", help="config key for the pivot table's rows")
    parser.add_argument("--cols", help="config key for the pivot table's columns")
    parser.add_argument("--value", help="metric of the pivot, the plots and the terminal table (default test_acc)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console, err = Console(), Console(stderr=True)
    try:
        res = report(args.paths, args.out, _parse_baseline(args.baseline), args.rows, args.cols, args.value,
                     plots=not args.no_plots, warn=lambda msg: err.print(f"[yellow]warning:[/] {msg}", soft_wrap=True))
    except (ValueError, FileNotFoundError) as e:
        err.print(f"[red]error:[/] {e}", soft_wrap=True)
        return 2
    table = Table(title=f"{len(res['runs'])} runs in {len(res['groups'])} groups", title_justify="left")
    shown = res["shown"]
    for col in shown.columns:
        table.add_column(str(col), justify="right" if col not in res["keys"] else "left")
    for row in shown.itertuples(False):
        table.add_row(*(_fmt(v) for v in row))
    console.print(table)
    statuses = res["runs"]["status"].value_counts().to_dict() if "status" in res["runs"] else {}
    console.print(f"status: {statuses}\nwritten to {res['out']}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
