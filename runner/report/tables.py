"""Tables as a paper shows them: `mean ± std` with the std to 2 significant digits and the mean
to the same decimal place, readable headers, numbers right-aligned; Markdown and LaTeX
(booktabs) writers."""

import math

import pandas as pd

from runner.report.load import text

DIAGNOSTICS = {"diag_grad_ratio": "grad ratio", "diag_dead_max": "dead max", "diag_saturated_max": "saturated max"}
"""Diagnostic summary fields, shown in a table of their own, and their headers."""


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def decimals(std: float) -> int:
    """Decimal places that show std to 2 significant digits (negative: tens, hundreds)."""
    d = 1 - math.floor(math.log10(abs(std)))
    if abs(round(std, d)) >= 10 ** (2 - d):  # 0.0996 rounds up to 0.10: one place fewer
        d -= 1
    return d


def _fixed(v: float, d: int) -> str:
    return f"{v:.{d}f}" if d >= 0 else f"{round(v, d):.0f}"


def mean_std(mean, std, scale: float = 1.0) -> str:
    """'0.3560 ± 0.0014': std to 2 significant digits, mean to the same place; the mean alone
    (4 significant digits) without a std, '' without a mean."""
    if not _finite(mean):
        return ""
    mean *= scale
    if not _finite(std):
        return f"{mean:.4g}"
    std *= scale
    if std == 0:
        return f"{mean:.4g} ± 0"
    d = decimals(std)
    return f"{_fixed(mean, d)} ± {_fixed(std, d)}"


def number(v, d: int | None = None, scale: float = 1.0) -> str:
    """A number with d decimal places (4 significant digits when d is None); '' for nan/None."""
    if not _finite(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return f"{v * scale:.4g}" if d is None else _fixed(v * scale, d)


def diff_ci(diff, low, high, d: int | None = None, scale: float = 1.0) -> str:
    """A difference with its sign and interval, '+2.1 [0.4, 3.8]' (the difference alone without an interval)."""
    if not _finite(diff):
        return ""
    sign = "+" if diff * scale > 0 else ""
    if not (_finite(low) and _finite(high)):
        return sign + number(diff, d, scale)
    return f"{sign}{number(diff, d, scale)} [{number(low, d, scale)}, {number(high, d, scale)}]"


def fmt(v) -> str:
    """Any cell: floats to 4 significant digits, nan and None empty."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def is_percent(metric: str) -> bool:
    return metric.split("_")[-1] == "acc"


def header(key: str, others=()) -> str:
    """A column's header: a config key's last part (regularizer.lambda -> lambda) unless another
    shown key ends the same; summary fields with spaces (test_acc -> test acc); an experiment's helper
    value as named (_strength)."""
    if key.startswith("_"):
        return key
    if "." in key:
        last = key.rsplit(".", 1)[1]
        return last if sum(o.rsplit(".", 1)[-1] == last for o in others) <= 1 else key.replace(".", " ")
    return key.replace("_", " ")


def display_groups(groups: pd.DataFrame, keys: list[str], metric: str, percent: bool = False) -> pd.DataFrame:
    """Groups (or tuned arms) as text for one metric: `mean ± std`, n (finished runs), the 95% CI, what did not
    complete, plus with a baseline the difference with its 95% Welch interval, p and Holm's p, and the ensemble's
    metric."""
    scale = 100.0 if percent and is_percent(metric) else 1.0
    out = pd.DataFrame({header(k, keys): groups[k].map(text) for k in keys})
    means, stds = groups[f"{metric}_mean"], groups[f"{metric}_std"]
    places = [decimals(s * scale) if _finite(s) and s > 0 else None for s in stds]
    name = header(metric) + (" (%)" if scale != 1 else "")
    out[name] = [mean_std(m, s, scale) for m, s in zip(means, stds)]
    out["n"] = groups[f"{metric}_n"].astype(int)
    out["95% CI"] = [f"[{number(lo, d, scale)}, {number(hi, d, scale)}]" if _finite(lo) else ""
                     for lo, hi, d in zip(groups[f"{metric}_ci_low"], groups[f"{metric}_ci_high"], places)]
    if "not_completed" in groups and groups["not_completed"].astype(bool).any():
        out["not completed"] = groups["not_completed"]
    if f"{metric}_diff" in groups:
        out["diff [95% CI]"] = [diff_ci(v, lo, hi, d, scale) for v, lo, hi, d in
                                zip(groups[f"{metric}_diff"], groups[f"{metric}_diff_ci_low"],
                                    groups[f"{metric}_diff_ci_high"], places)]
        out["p"] = [f"{p:.2g}" if _finite(p) else "" for p in groups[f"{metric}_p"]]
        out["Holm p"] = [f"{p:.2g}" if _finite(p) else "" for p in groups[f"{metric}_p_holm"]]
    if f"ensemble_{metric}" in groups and (groups["ensemble_n"] > 1).any():
        out["ensemble"] = [number(v, d, scale) for v, d in zip(groups[f"ensemble_{metric}"], places)]
    return out


def display_tuned(tuned: pd.DataFrame, arms: list[str], key: str, select_metric: str, metric: str,
                  percent: bool = False) -> pd.DataFrame:
    """Tuned arms (best_of) as text: the arm's keys, the chosen setting of key (`best lr`), how many settings
    were tried, the winning mean of select_metric (its header: `val acc`), then metric as display_groups shows it."""
    out = display_groups(tuned, arms, metric, percent)
    scale = 100.0 if percent and is_percent(select_metric) else 1.0
    out.insert(len(arms), f"best {header(key)}", tuned[key].map(text))
    out.insert(len(arms) + 1, "settings", tuned["settings"].astype(int))
    name = header(select_metric) + (" (%)" if scale != 1 else "")
    if name not in out.columns:  # picked by the metric shown (--value val_acc): its column says it already
        out.insert(len(arms) + 2, name, [number(v, None, scale) for v in tuned[f"{select_metric}_mean"]])
    return out


def display_diagnostics(groups: pd.DataFrame, keys: list[str]) -> pd.DataFrame | None:
    """The diagnostics' group means in a table of their own; None when no run has them."""
    present = [c for c in DIAGNOSTICS if f"{c}_n" in groups and groups[f"{c}_n"].sum()]
    if not present:
        return None
    out = pd.DataFrame({header(k, keys): groups[k].map(text) for k in keys})
    for c in present:
        out[DIAGNOSTICS[c]] = [number(v) for v in groups[f"{c}_mean"]]
    return out


def pivot_text(means: pd.DataFrame, stds: pd.DataFrame, percent: bool = False, value: str = "") -> pd.DataFrame:
    """The pivot's cells as `mean ± std` (the mean alone for a single run)."""
    scale = 100.0 if percent and is_percent(value) else 1.0
    out = means.copy().astype(object)
    for r in means.index:
        for c in means.columns:
            out.loc[r, c] = mean_std(means.loc[r, c], stds.loc[r, c], scale)
    return out


def to_markdown(df: pd.DataFrame, left=()) -> str:
    """A Markdown table; columns not in `left` are right-aligned (numbers)."""
    head = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "".join("---|" if c in left else "---:|" for c in head)]
    lines += ["| " + " | ".join(fmt(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(False)]
    return "\n".join(lines)


_TEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
        ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"), ("±", r"$\pm$")]


def tex(s: str) -> str:
    out = []
    for ch in s:  # one character at a time, so that no replacement is escaped again
        out.append(next((b for a, b in _TEX if a == ch), ch))
    return "".join(out)


def to_latex(df: pd.DataFrame, caption: str, left=()) -> str:
    """A booktabs table (\\usepackage{booktabs}); columns not in `left` are right-aligned."""
    spec = "".join("l" if str(c) in left else "r" for c in df.columns)
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{tex(caption)}}}",
             r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(tex(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(fmt(v)) for v in row) + r" \\" for row in df.itertuples(False)]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}", r"\end{table}"])
