"""Reading run folders into the runs table (one row per run), through runner.runfolder, and
the config keys that vary between runs."""

import json
import logging
import math
from pathlib import Path

import pandas as pd
import yaml

from runner.runfolder import FINISHED, UnreadableError, read_metrics, read_summary

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


def read_run(run_dir: Path, warn=log.warning) -> dict | None:
    """One row of the runs table: the flattened config, the group choices and the summary.
    A run without summary.json is `unfinished` (with the epochs metrics.csv has so far); an
    unreadable file is named once and its run marked `unreadable` (no config: skipped)."""
    try:
        summary = read_summary(run_dir)
    except UnreadableError as e:
        warn(f"skipped unreadable {e}")
        summary = {"status": "unreadable"}
    if summary is None:
        summary = {"status": "unfinished"}
        rows = read_metrics(run_dir / "metrics.csv")
        if rows and "epoch" in rows[-1]:
            summary["epochs"] = rows[-1]["epoch"]
    config = summary.pop("config", None)  # `train` copies the resolved config here: JSON reads 20x faster
    if not isinstance(config, dict):
        try:
            config = yaml.load((run_dir / ".hydra/config.yaml").read_text(), Loader=_Loader)
        except Exception as e:  # noqa: BLE001 - any unreadable config only skips this run
            warn(f"skipped unreadable {run_dir / '.hydra/config.yaml'}: {e}")
            return None
        if not isinstance(config, dict):
            warn(f"skipped unreadable {run_dir / '.hydra/config.yaml'}: not a mapping")
            return None
    row = {k: v for k, v in _flatten(config).items() if not k.startswith(IGNORED_PREFIXES)}
    choices = summary.pop("choices", None)
    row |= {k: v for k, v in (choices if isinstance(choices, dict) else {}).items() if k not in ("trainer", "paths")}
    summary.pop("versions", None)
    summary.pop("overrides", None)
    return {"run": str(run_dir), **row, **summary}


def load_runs(*paths, warn=log.warning) -> pd.DataFrame:
    """The runs table: one row per run folder found below the paths."""
    rows = [r for r in (read_run(d, warn) for d in find_runs(paths)) if r is not None]
    return pd.DataFrame(rows)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose numbers count: completed and diverged."""
    return runs[runs["status"].isin(FINISHED)] if "status" in runs else runs.iloc[0:0]


def config_groups() -> set[str]:
    """The config groups of conf/ (optimizer, init, ..., diagnostics): their choices are config keys too."""
    from importlib.resources import files

    return {p.name for p in files("runner.conf").iterdir() if p.is_dir() and not p.name.startswith("_")}


def varying_keys(runs: pd.DataFrame, include_seeds: bool = False) -> list[str]:
    """Config keys (dotted, plus group choices and an experiment's top-level helper values such as
    `_strength`) whose value differs between runs. Keys inside a helper node (`_arms.adam.lambda`) are
    left out: they are resolved into the keys they set, which are listed."""
    summary_cols = set(RUN_COLUMNS) | set(METRICS) | {"run"}
    groups = config_groups()
    out = []
    for col in runs.columns:
        helper = col.startswith("_")
        if col in summary_cols or ("." not in col and col not in groups and not helper) or (helper and "." in col):
            continue
        if col.endswith(("._target_", "._partial_")) or (not include_seeds and col in SEED_KEYS):
            continue
        if runs[col].map(text).nunique() > 1:
            out.append(col)
    return sorted(out, key=lambda c: "." in c)  # group choices (optimizer=sgd) before their fields


def label_keys(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """The keys that name a group: without a group choice's fields that vary only along with the choice
    (optimizer.lr differs between optimizer=sgd and adamw, and adds nothing to their names), but with
    those swept within a choice (schedule.warmup=0,100 under each schedule)."""
    def follows_choice(k):
        choice = k.split(".")[0]
        return choice in keys and (runs.groupby(runs[choice].map(text))[k].agg(lambda c: c.map(text).nunique())
                                   <= 1).all()

    return [k for k in keys if "." not in k or not follows_choice(k)]


def text(v) -> str:
    """The value as grouping, matching and labels see it: NaN and None alike, 0 and 0.0 alike."""
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
        if is_number(v):
            return float(v)
    return v


def select(runs: pd.DataFrame, where: dict) -> pd.DataFrame:
    """The runs whose config matches every key=value of where (values as typed on a command line). A word
    matches as itself too: norm=none names the option `none`, early_stopping.patience=none a null."""
    mask = pd.Series(True, runs.index)
    for k, v in where.items():
        mask &= runs[k].map(text).isin({text(_value(v)), str(v)})
    return runs[mask]


def is_number(v) -> bool:
    try:
        float(v)
        return not isinstance(v, bool)
    except (TypeError, ValueError):
        return False
