"""The `train` command: Hydra composes conf/train.yaml, rich shows progress and the result."""

import logging
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner.early_stopping import EarlyStoppingConfig
from runner.run import PathsConfig
from runner.trainer import TrainerConfig

log = logging.getLogger(__name__)

# Schemas for what the code reads directly: a typo or a wrong type fails when the config is composed.
_store = ConfigStore.instance()
_store.store(group="trainer", name="schema", node=TrainerConfig)
_store.store(group="paths", name="schema", node=PathsConfig)
_store.store(group="early_stopping", name="schema", node=EarlyStoppingConfig)


def _result_table(summary: dict):
    from rich.table import Table

    table = Table(title=f"{summary['status']}: {summary['stop_reason']}", title_justify="left")
    metric = "acc" if summary["task"] == "classification" else "r2"
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column(metric, justify="right")
    for split in ("train", "val", "test"):
        table.add_row(split, f"{summary[f'{split}_loss']:.4f}", f"{summary[f'{split}_{metric}']:.4f}")
    return table


@hydra.main(version_base="1.3", config_path="pkg://runner.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from runner.run import run

    hc = HydraConfig.get()
    run_dir, console = Path(hc.runtime.output_dir), Console()
    meta = {"choices": {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")},
            "overrides": list(hc.overrides.task)}
    if cfg.print_config:
        from rich.syntax import Syntax

        console.print(Syntax(OmegaConf.to_yaml(cfg, resolve=True), "yaml"))
    if hc.mode == RunMode.MULTIRUN:  # a line per job, no bars
        summary = run(cfg, run_dir, meta=meta)
        metric = "acc" if summary["task"] == "classification" else "r2"
        overrides = " ".join(hc.overrides.task) or "(defaults)"
        console.print(f"job {hc.job.num} {overrides}: {summary['status']}, test_{metric}="
                      f"{summary[f'test_{metric}']:.4f}, {summary['train_seconds']:.1f} s -> {run_dir}", soft_wrap=True)
    else:
        columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                   TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("train", total=None, stats="")

            def show(row):
                stats = "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith(("train_", "val_")))
                progress.update(task, completed=row["epoch"], total=cfg.trainer.epochs, stats=stats)

            summary = run(cfg, run_dir, on_eval=show, meta=meta)
        console.print(_result_table(summary))
        console.print(f"{summary['epochs']} epochs, {summary['steps']} steps, {summary['train_seconds']:.1f} s on "
                      f"{summary['device']}; best {summary['monitor']} at epoch {summary['best_epoch']}"
                      f"{' (restored)' if summary['restored_best'] else ''}\nrun folder: {run_dir}", soft_wrap=True)
    return summary["best_value"]


if __name__ == "__main__":
    main()
