"""`report`: turn run folders into ablation tables (CSV, Markdown, LaTeX) with seed statistics
and plots. `load_runs(path)` gives the runs table as a pandas DataFrame for notebooks.

A run is a folder holding .hydra/config.yaml. Runs whose configs differ only in a seed key
form a group; each group gets mean, std, n and a 95% confidence interval per metric; with a
baseline, the difference with its Welch interval and p-values (raw and Holm-adjusted). --best-of
KEY adds the tuned arms: per arm, the setting of KEY with the best mean validation metric."""

import argparse
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from runner.report.load import (METRICS, RUN_COLUMNS, SEED_KEYS, find_runs, finished, is_number, label_keys,
                                load_runs, read_run, text, varying_keys)
from runner.report.stats import best_of, effect, group_runs, holm, mean_ci, mixed_threads, p_value, pivot, welch
from runner.report.tables import (display_diagnostics, display_groups, display_tuned, fmt, header, is_percent,
                                  pivot_text, to_latex, to_markdown)

__all__ = ["load_runs", "report", "main", "p_value", "welch", "mean_ci", "group_runs", "pivot", "read_run", "holm",
           "effect", "best_of", "mixed_threads"]
TEST_METRICS = ("test_acc", "test_r2", "test_loss")
"""The test metrics a tuned arm reports, when present (beside --value)."""
log = logging.getLogger(__name__)


def report(paths, out: Path | None = None, baseline: dict | None = None, rows: str | None = None,
           cols: str | None = None, value: str | None = None, plots: bool = True, percent: bool = False,
           warn=log.warning, best_of_key: str | None = None, select_metric: str | None = None,
           mode: str | None = None) -> dict:
    """Write runs.csv, groups.csv (best_of.csv with best_of_key), report.md, report.tex and the plots; return the
    tables. Everything is computed before the first file is written: a refusal leaves no half report."""
    found = find_runs(paths)
    if not found:
        raise ValueError(f"report: no run folders (with .hydra/config.yaml) below {', '.join(map(str, paths))}")
    runs = pd.DataFrame([r for r in (read_run(d, warn) for d in found) if r is not None])
    if runs.empty:
        raise ValueError("report: no readable run folders")
    keys = varying_keys(runs)
    numeric = [c for c in runs.columns if c not in keys and c != "run" and "." not in c
               and pd.to_numeric(runs[c], errors="coerce").notna().any() and runs[c].map(_numeric_or_empty).all()]
    given, value = value, value or next((m for m in ("test_acc", "test_r2", "test_loss") if m in runs.columns), None)
    if value is None and not given and not rows:  # a live sweep with no summary yet: statuses only
        value = "epochs"
        runs[value] = pd.to_numeric(runs.get(value, pd.Series(float("nan"), runs.index)), errors="coerce")
        numeric.append(value)
    if value not in numeric:
        raise ValueError(f"report: --value {value!r} is not a numeric summary field of these runs; "
                         f"choose one of {sorted(numeric)}")
    metrics = [m for m in METRICS if m in runs.columns] + ([value] if value not in METRICS else [])
    if (rows or cols) and not (rows and cols):
        raise ValueError("report: --rows and --cols go together (with --value, default test_acc)")
    out = Path(out) if out else Path(paths[0]) / "report"
    scale = 100.0 if percent and is_percent(value) else 1.0

    seeds = [k for k in SEED_KEYS if k in runs.columns and runs[k].nunique() > 1]
    run_table = runs[["run", *keys, *seeds, *[c for c in RUN_COLUMNS if c in runs.columns]]].copy()
    common = found[0].parent if len(found) == 1 else os.path.commonpath(found)
    run_table["run"] = [os.path.relpath(r, common) for r in run_table["run"]]
    names = label_keys(runs, keys)
    tuned = None
    if best_of_key:  # before the groups: a baseline that leaves out best_of_key means its arm's tuned setting
        tuned, select_metric, mode = _tune(runs, keys, numeric, value, best_of_key, select_metric, mode, baseline)
        if baseline and best_of_key not in baseline:
            baseline = baseline | {best_of_key: text(tuned.loc[tuned["baseline"], best_of_key].iloc[0])}
    groups = group_runs(runs, keys, metrics, baseline)
    shown = display_groups(groups, names, value, percent)  # groups.csv keeps every varying key
    mixed = _mixed_threads(runs, keys, names, groups, shown, warn)
    diagnostics = display_diagnostics(groups, names)
    runs_shown = run_table.rename(columns={c: header(c, [*keys, *seeds]) for c in run_table.columns})
    left, runs_left = _text_columns(shown), _text_columns(runs_shown)
    against = f"; diff [95% Welch CI], p and Holm's p against {_pairs(baseline)}" if baseline else ""

    md = [f"# Report: {len(runs)} runs, {len(groups)} groups", "",
          f"Varying keys: {', '.join(keys) or '(none)'}; seeds: {', '.join(seeds) or '(one run per group)'}.", "",
          f"## Groups: {value} (mean ± std over seeds, n finished runs, 95% CI{against})", "",
          to_markdown(shown, left), ""]
    if not mixed.empty:
        md += ["threads: the torch thread counts of the groups whose runs used several (summary.json's `threads`): "
               "their spread mixes the seeds' with the threads'.", ""]
    tex = [to_latex(shown, f"{header(value)}: mean ± std over seeds{against}", left)]
    result = {"runs": run_table, "groups": groups, "shown": shown, "diagnostics": diagnostics, "out": out,
              "keys": keys, "value": value, "left": left, "mixed_threads": mixed, "tuned": tuned}
    if tuned is not None:
        result |= _tuned_tables(tuned, names, best_of_key, select_metric, mode, value, percent, baseline)
        md += result["tuned_md"]
        tex.append(result["tuned_tex"])
    if diagnostics is not None:
        md += ["## Diagnostics (group means)", "", to_markdown(diagnostics, _text_columns(diagnostics)), ""]
        tex.append(to_latex(diagnostics, "Diagnostics (group means)", _text_columns(diagnostics)))
    if rows:
        means, stds = pivot(runs, rows, cols, value)
        cells = pivot_text(means, stds, percent, value)
        flat = cells.reset_index()
        corner = f"{header(rows)} \\ {header(cols)}"
        flat.columns = [corner] + [str(c) for c in cells.columns]
        md += [f"## {value}: {rows} x {cols}", "", to_markdown(flat, [corner]), ""]
        tex.append(to_latex(flat, f"{header(value)}: {rows} by {cols}", [corner]))
        result |= {"pivot": cells, "pivot_means": means}
    md += ["## Runs", "", to_markdown(runs_shown, runs_left), ""]
    tex.append(to_latex(runs_shown, "Runs", runs_left))

    out.mkdir(parents=True, exist_ok=True)
    run_table.to_csv(out / "runs.csv", index=False, float_format="%.12g")  # 0.10425, not 0.10425000000000001
    groups.to_csv(out / "groups.csv", index=False, float_format="%.12g")
    if tuned is not None:
        tuned.to_csv(out / "best_of.csv", index=False, float_format="%.12g")
    if rows:
        means.to_csv(out / "pivot.csv", float_format="%.12g")
    (out / "report.md").write_text("\n".join(md))
    (out / "report.tex").write_text("% needs \\usepackage{booktabs}\n" + "\n\n".join(tex) + "\n")
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        from runner.report.plots import plot_against, plot_curves, plot_heatmap

        if rows:
            plot_heatmap(means, stds, value, out / "pivot.png", scale)
        curve = value.replace("test_", "val_") if value.startswith("test_") else "val_loss"
        plot_curves(runs, names, curve, out / "curves.png", rank_by=value)
        for key in [k for k in names if pd.to_numeric(runs[k], errors="coerce").notna().all()][:3]:
            plot_against(runs, key, [k for k in names if k != key], value, out / f"{value}_vs_{key}.png")
    return result


def _tune(runs, keys, numeric, value, key, select_metric, mode, baseline) -> tuple[pd.DataFrame, str, str]:
    """best_of for --best-of KEY, checked: (the tuned arms, the select metric, the mode). The select metric
    defaults to value's validation twin (test_acc -> val_acc) where runs have it, else val_acc; the mode to min
    for a *_loss metric, else max."""
    if key not in keys:
        raise ValueError(f"report: --best-of {key!r} is not a config key that varies between these runs; "
                         f"varying keys: {', '.join(keys) or '(none)'}")
    twin = value.replace("test_", "val_", 1) if value.startswith("test_") else None
    select_metric = select_metric or (twin if twin in numeric else "val_acc")
    if select_metric not in numeric:
        raise ValueError(f"report: --select-metric {select_metric!r} is not a numeric summary field of these runs; "
                         f"choose one of {sorted(numeric)}")
    mode = mode or ("min" if select_metric.endswith("_loss") else "max")
    tests = [value, *(m for m in TEST_METRICS if m in runs.columns and m != value)]
    tuned = best_of(runs, key, select_metric, keys=keys, metrics=tests, mode=mode, baseline=baseline)
    if tuned.empty:
        raise ValueError(f"report: --best-of {key}: no finished run to choose from")
    return tuned, select_metric, mode


def _tuned_tables(tuned, names, key, select_metric, mode, value, percent, baseline) -> dict:
    """The tuned arms as shown (terminal, Markdown section, LaTeX table)."""
    shown = display_tuned(tuned, [k for k in names if k != key], key, select_metric, value, percent)
    left = _text_columns(shown)
    title = f"Tuned arms: best {key} by mean {select_metric}"
    arm = _pairs({k: v for k, v in baseline.items() if k != key}) if baseline else ""
    against = f"; diff [95% Welch CI], p and Holm's p against the tuned arm {arm}" if baseline else ""
    md = [f"## {title}", "", f"Per arm, the setting of {key} whose finished runs have the "
          f"{'highest' if mode == 'max' else 'lowest'} mean {select_metric}, and that setting's {value} over its "
          f"seeds{against}.", "", to_markdown(shown, left), ""]
    return {"tuned_shown": shown, "tuned_left": left, "tuned_title": title, "tuned_md": md,
            "tuned_tex": to_latex(shown, title + against, left)}


def _mixed_threads(runs, keys, names, groups, shown, warn) -> pd.DataFrame:
    """The groups whose finished runs used different thread counts: one warning line naming them, and a
    `threads` column in the shown groups (their counts, e.g. "1, 2"; empty for the others)."""
    mixed = mixed_threads(finished(runs), keys)
    if mixed.empty:
        return mixed
    seen = {tuple(text(r[k]) for k in keys): r["threads"] for _, r in mixed.iterrows()}
    shown["threads"] = [seen.get(tuple(text(g[k]) for k in keys), "") for _, g in groups.iterrows()]
    listing = "; ".join(f"{_pairs({k: text(r[k]) for k in names}) or 'all runs'} (threads {r['threads']})"
                        for _, r in mixed.iterrows())
    warn(f"runs of one group used different torch thread counts, so their spread mixes the seeds' with the "
         f"threads': {listing}")
    return mixed


def _pairs(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def _text_columns(df: pd.DataFrame) -> list[str]:
    """Columns of words, left-aligned; the others hold numbers (± and intervals included) and are right-aligned."""
    def numeric(v):
        return _numeric_or_empty(v) or (isinstance(v, str) and (v == "" or is_number(v.split(" ")[0].strip("[")
                                                                              .split(",")[0])))

    return [str(c) for c in df.columns if not df[c].map(numeric).all()]


def _numeric_or_empty(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or is_number(v)


def _parse_baseline(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--baseline {item!r} must be key=value, e.g. optimizer=adamw")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders, or folders holding them")
    parser.add_argument("--out", help="where to write the tables and plots (default: <first path>/report)")
    parser.add_argument("--baseline", nargs="+", metavar="KEY=VALUE", help="the group others are compared to")
    parser.add_argument("--rows", help="config key for the pivot table's rows")
    parser.add_argument("--cols", help="config key for the pivot table's columns")
    parser.add_argument("--value", help="metric of the pivot, the plots and the terminal table (default test_acc)")
    parser.add_argument("--percent", action="store_true", help="accuracies in percent (0.8123 -> 81.23)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--best-of", metavar="KEY", help="tuned arms: per arm (the other keys), the setting of KEY "
                        "with the best mean --select-metric, and its test metrics (best_of.csv)")
    parser.add_argument("--select-metric", metavar="METRIC", help="what --best-of picks by (default: --value's "
                        "validation twin, val_acc for test_acc)")
    parser.add_argument("--mode", choices=("max", "min"), help="--best-of keeps the highest or lowest mean "
                        "(default: min for a *_loss metric, else max)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    from rich.console import Console

    console, err = Console(), Console(stderr=True)
    try:
        res = report(args.paths, args.out, _parse_baseline(args.baseline), args.rows, args.cols, args.value,
                     plots=not args.no_plots, percent=args.percent,
                     warn=lambda msg: err.print(f"[yellow]warning:[/] {msg}", soft_wrap=True, highlight=False),
                     best_of_key=args.best_of, select_metric=args.select_metric, mode=args.mode)
    except (ValueError, FileNotFoundError) as e:
        err.print(f"[red]error:[/] {e}", soft_wrap=True, highlight=False)
        return 2
    except OSError as e:  # --out not writable, a full disk
        err.print(f"[red]error:[/] cannot write the report: {e.strerror or e}: {e.filename or args.out}",
                  soft_wrap=True, highlight=False)
        return 1
    console.print(_table(res["shown"], res["left"], f"{len(res['runs'])} runs in {len(res['groups'])} groups",
                         console.width))
    if res["tuned"] is not None:
        console.print(_table(res["tuned_shown"], res["tuned_left"], res["tuned_title"], console.width))
    statuses = res["runs"]["status"].value_counts() if "status" in res["runs"] else pd.Series(dtype=int)
    console.print(f"status: {', '.join(f'{n} {s}' for s, n in statuses.items()) or 'none'}\n"
                  f"written to {res['out']}", soft_wrap=True, highlight=False)
    return 0


def _table(shown: pd.DataFrame, left, title: str, width: int):
    """A rich table of the shown cells. Headers are never cut to "regula...": a column is at least its header wide,
    unless the headers alone are wider than the terminal; then headers fold too, rather than the table losing its
    last columns at the terminal's edge."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    fits = sum(len(str(c)) + 3 for c in shown.columns) + 1 <= width  # 2 spaces of padding and a rule per column
    for col in shown.columns:
        table.add_column(str(col), justify="left" if col in left else "right", overflow="fold",
                         min_width=len(str(col)) if fits else None)
    for row in shown.itertuples(False):
        table.add_row(*(fmt(v) for v in row))
    return table


if __name__ == "__main__":
    sys.exit(main())
