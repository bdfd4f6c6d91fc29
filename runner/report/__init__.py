"""`report`: turn run folders into ablation tables (CSV, Markdown, LaTeX) with seed statistics
and plots. `load_runs(path)` gives the runs table as a pandas DataFrame for notebooks.

A run is a folder holding .hydra/config.yaml. Runs whose configs differ only in a seed key
form a group; each group gets mean, std, n and a 95% confidence interval per metric."""

import argparse
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from runner.report.load import (METRICS, RUN_COLUMNS, SEED_KEYS, find_runs, is_number, label_keys, load_runs,
                                read_run, varying_keys)
from runner.report.stats import group_runs, mean_ci, p_value, pivot, welch
from runner.report.tables import (display_diagnostics, display_groups, fmt, header, is_percent, pivot_text,
                                  to_latex, to_markdown)

__all__ = ["load_runs", "report", "main", "p_value", "welch", "mean_ci", "group_runs", "pivot", "read_run"]
log = logging.getLogger(__name__)


def report(paths, out: Path | None = None, baseline: dict | None = None, rows: str | None = None,
           cols: str | None = None, value: str | None = None, plots: bool = True, percent: bool = False,
           warn=log.warning) -> dict:
    """Write runs.csv, groups.csv, report.md, report.tex and the plots; return the tables.
    Everything is computed before the first file is written: a refusal leaves no half report."""
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
    groups = group_runs(runs, keys, metrics, baseline)
    names = label_keys(runs, keys)
    shown = display_groups(groups, names, value, percent)  # groups.csv keeps every varying key
    diagnostics = display_diagnostics(groups, names)
    runs_shown = run_table.rename(columns={c: header(c, [*keys, *seeds]) for c in run_table.columns})
    left, runs_left = _text_columns(shown), _text_columns(runs_shown)

    md = [f"# Report: {len(runs)} runs, {len(groups)} groups", "",
          f"Varying keys: {', '.join(keys) or '(none)'}; seeds: {', '.join(seeds) or '(one run per group)'}.", "",
          f"## Groups: {value} (mean ± std over seeds, n finished runs, 95% CI)", "", to_markdown(shown, left), ""]
    tex = [to_latex(shown, f"{header(value)}: mean ± std over seeds", left)]
    if diagnostics is not None:
        md += ["## Diagnostics (group means)", "", to_markdown(diagnostics, _text_columns(diagnostics)), ""]
        tex.append(to_latex(diagnostics, "Diagnostics (group means)", _text_columns(diagnostics)))
    result = {"runs": run_table, "groups": groups, "shown": shown, "diagnostics": diagnostics, "out": out,
              "keys": keys, "value": value, "left": left}
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


def _text_columns(df: pd.DataFrame) -> list[str]:
    """Columns of words, left-aligned; the others hold numbers (± included) and are right-aligned."""
    def numeric(v):
        return _numeric_or_empty(v) or (isinstance(v, str) and (v == "" or is_number(v.split(" ± ")[0].strip("[")
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders, or folders holding them")
    parser.add_argument("--out", help="where to write the tables and plots (default: <first path>/report)")
    parser.add_argument("--baseline", nargs="+", metavar="KEY=VALUE", help="the group others are compared to")
    parser.add_argument("--rows", help="config key for the pivot table's rows")
    parser.add_argument("--cols", help="config key for the pivot table's columns")
    parser.add_argument("--value", help="metric of the pivot, the plots and the terminal table (default test_acc)")
    parser.add_argument("--percent", action="store_true", help="accuracies in percent (0.8123 -> 81.23)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console, err = Console(), Console(stderr=True)
    try:
        res = report(args.paths, args.out, _parse_baseline(args.baseline), args.rows, args.cols, args.value,
                     plots=not args.no_plots, percent=args.percent,
                     warn=lambda msg: err.print(f"[yellow]warning:[/] {msg}", soft_wrap=True, highlight=False))
    except (ValueError, FileNotFoundError) as e:
        err.print(f"[red]error:[/] {e}", soft_wrap=True, highlight=False)
        return 2
    except OSError as e:  # --out not writable, a full disk
        err.print(f"[red]error:[/] cannot write the report: {e.strerror or e}: {e.filename or args.out}",
                  soft_wrap=True, highlight=False)
        return 1
    shown = res["shown"]
    table = Table(title=f"{len(res['runs'])} runs in {len(res['groups'])} groups", title_justify="left")
    for col in shown.columns:  # headers never cut to "regula...": a column is at least its header wide
        table.add_column(str(col), justify="left" if col in res["left"] else "right", overflow="fold",
                         min_width=len(str(col)))
    for row in shown.itertuples(False):
        table.add_row(*(fmt(v) for v in row))
    console.print(table)
    statuses = res["runs"]["status"].value_counts() if "status" in res["runs"] else pd.Series(dtype=int)
    console.print(f"status: {', '.join(f'{n} {s}' for s, n in statuses.items()) or 'none'}\n"
                  f"written to {res['out']}", soft_wrap=True, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
