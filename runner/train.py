"""The `train` command: Hydra composes conf/train.yaml, rich shows progress and the result.

Every job's outcome lands in its folder's summary.json (completed, diverged, failed, invalid,
interrupted), the sweep goes on past any of them, and the exit code says the worst one."""

import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import hydra_plugins.runner_launcher  # the vectorized launcher: stores hydra/launcher=vectorized (cheap: no torch)
from runner.schema import EarlyStoppingConfig, PathsConfig, TrainerConfig

log = logging.getLogger(__name__)

EXIT_CODES = {"completed": 0, "failed": 1, "invalid": 2, "diverged": 3, "interrupted": 130}
"""The exit code of `train` for each outcome; a sweep exits with its worst job's (failed first)."""
_SEVERITY = ["failed", "invalid", "interrupted", "diverged", "completed"]
_outcomes: list[str] = []  # this process's job outcomes, for the exit code
_refused: list[str] = []  # jobs (numbers) refused because their folder holds another config's run
_cli_pid: list[int] = []  # the process that ran cli(); main() in any other is a launcher's worker
_not_started: list[str] = []  # after a Ctrl-C in a sweep: "stop", then the numbers of the jobs that did not start

# Schemas for what the code reads directly: a typo or a wrong type fails when the config is composed.
_store = ConfigStore.instance()
_store.store(group="trainer", name="schema", node=TrainerConfig)
_store.store(group="paths", name="schema", node=PathsConfig)
_store.store(group="early_stopping", name="schema", node=EarlyStoppingConfig)


def unique_dir(base: str) -> str:
    """base, else base_1, base_2, ...: the first folder this process creates itself (os.mkdir
    is atomic), so two runs or sweeps started in the same second never share one. Registered
    with use_cache, so every later resolution in this config (and Hydra's job copies) agrees."""
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun's other processes: rank 0 alone writes the run folder
        return tempfile.mkdtemp(prefix=f"runner-rank{os.environ['RANK']}-")
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for i in itertools.count():
        path = base if i == 0 else f"{base}_{i}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


if not OmegaConf.has_resolver("unique_dir"):
    OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
if not OmegaConf.has_resolver("hydra_subdir"):  # Hydra writes .hydra/ before main() runs: never into a run that has a summary
    OmegaConf.register_new_resolver("hydra_subdir", lambda d: __import__("runner.runfolder").runfolder.hydra_subdir(d))


class SweepOutcome(Callback):
    """After a sweep, under any launcher: list the jobs that did not complete, from their folders."""

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        run = sys.modules.get("runner.run")  # a worker whose sweep was killed: its job is saved, nobody waits for it
        if run and getattr(run.watch_parent, "orphaned", False):
            logging.shutdown()
            os._exit(EXIT_CODES["interrupted"])

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from rich.console import Console

        sweep = Path(config.hydra.sweep.dir)
        statuses = {}
        for job in sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir()):  # not .submitit and the like
            try:
                statuses[job.name] = json.loads((job / "summary.json").read_text())["status"]
            except (OSError, ValueError, KeyError):
                statuses[job.name] = "failed"  # a job that died without a word (killed process)
        statuses |= {job: "refused: its folder holds a run of another config" for job in _refused}
        _outcomes[:] = [*_outcomes, *(s for s in statuses.values() if s in EXIT_CODES)]
        bad = {job: s for job, s in statuses.items() if s != "completed"}
        console = Console(stderr=True)
        for job, status in bad.items():
            console.print(f"job {job}: {status} (see {sweep / job}/summary.json)", soft_wrap=True)
        if len(_not_started) > 1:
            console.print(f"jobs not started (Ctrl-C stopped the sweep; the same command resumes it): "
                          f"{', '.join(_not_started[1:])}", soft_wrap=True)
        console.print(f"sweep: {len(statuses) - len(bad)} of {len(statuses) + len(_not_started[1:])} jobs completed "
                      f"-> {sweep}", soft_wrap=True)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _result_table(summary: dict):
    from rich.table import Table

    table = Table(title=summary["status"], title_justify="left")  # the reason follows the table: a title wraps
    metric = "acc" if summary["task"] == "classification" else "r2"
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column(metric, justify="right")
    for split in ("train", "val", "test"):
        table.add_row(split, _num(summary[f"{split}_loss"]), _num(summary[f"{split}_{metric}"]))
    return table


def _train_with_progress(cfg: DictConfig, run_dir: Path, console, meta: dict, resume: bool) -> dict:
    """run() under a progress bar that appears with the first evaluation (after every check passed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from runner.run import run

    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
               TimeRemainingColumn())
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task("train", total=cfg.trainer.epochs, stats="")

    def show(row):
        if not progress.live.is_started:
            progress.start()
        stats = "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith(("train_", "val_")))
        progress.update(task, completed=row["epoch"], stats=stats)

    try:
        return run(cfg, run_dir, on_eval=show, meta=meta, resume=resume)
    finally:
        if progress.live.is_started:
            progress.stop()


def _meta(hc) -> dict:
    """What summary.json records of Hydra's view of a job."""
    return {"choices": {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")},
            "overrides": list(hc.overrides.task)}


def _escape(text) -> str:
    """text for rich, whose markup would eat brackets: +logger=[tensorboard,mlflow], pip install "runner[mlflow]"."""
    from rich.markup import escape

    return escape(str(text))


def _name(hc) -> str:
    return _escape(f"job {hc.job.num} {' '.join(hc.overrides.task) or '(defaults)'}") if hc.mode == RunMode.MULTIRUN \
        else "run"


def _staged(hc, run_dir: Path) -> Path:
    """Where Hydra wrote this job's .hydra files (elsewhere when run_dir holds a run already: conf/train.yaml)."""
    return run_dir / hc.output_subdir if hc.output_subdir else run_dir / ".hydra"


def _go_ahead(cfg: DictConfig, run_dir: Path, staged: Path, name: str, console) -> tuple[str, dict | None]:
    """What the run folder says of this job (runfolder.previous_outcome), with Hydra's staged files
    discarded when the job is skipped and moved into .hydra when it goes ahead (extend: after the run)."""
    from runner.runfolder import adopt_hydra_files, discard_hydra_files, previous_outcome

    action, before = previous_outcome(run_dir, cfg)
    if action == "skip":
        discard_hydra_files(staged, run_dir)
        console.print(f"{name}: already {before['status']} in {run_dir}, skipped", soft_wrap=True)
    elif action != "extend":  # the run goes ahead: Hydra's files describe it now
        adopt_hydra_files(staged, run_dir)
    if action in ("resume", "extend"):
        console.print(f"{name}: resuming {run_dir} at step {before.get('steps')}"
                      f"{f' to trainer.epochs={cfg.trainer.epochs}' if action == 'extend' else ''}", soft_wrap=True)
    return action, before


def prepare_job(cfg: DictConfig, hc) -> dict | None:
    """What main() decides before training, for a job the vectorized launcher trains in a stack:
    None when it is not to train (finished: skipped; a bad config: recorded as invalid), else
    the member (cfg, run_dir, meta, whether it resumes and from which step)."""
    from rich.console import Console

    from runner.check import ConfigError, check_config
    from runner.runfolder import discard_hydra_files, record_failure

    run_dir, meta, name = Path(hc.runtime.output_dir), _meta(hc), _name(hc)
    staged = _staged(hc, run_dir)
    try:
        action, before = _go_ahead(cfg, run_dir, staged, name, Console())
        if action == "skip":
            _outcomes.append(before["status"])
            return None
        check_config(cfg)
    except ConfigError as e:
        Console(stderr=True).print(f"[red]error:[/] {name}: {_escape(e)}", soft_wrap=True, highlight=False)
        discard_hydra_files(staged, run_dir)
        if not (run_dir / "summary.json").exists():  # never over a finished or interrupted run's record
            record_failure(run_dir, cfg, "invalid", e, meta)
        else:
            _refused.append(str(hc.job.num))
        return None
    resume = action in ("resume", "extend")
    return {"cfg": cfg, "run_dir": run_dir, "meta": meta, "name": name, "num": hc.job.num, "sweep_dir": hc.sweep.dir,
            "staged": staged,
            "resume": resume, "step": before.get("steps", 0) if resume else 0}


@hydra.main(version_base="1.3", config_path="pkg://runner.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from rich.console import Console

    from runner.check import ConfigError
    from runner.logger import abort as abort_trackers
    from runner.run import run
    from runner.runfolder import adopt_hydra_files, discard_hydra_files, record_failure

    hc = HydraConfig.get()
    if os.getpid() not in _cli_pid:  # a launcher's worker process: stop (saving last.pt) if the sweep is killed
        from runner.run import watch_parent

        watch_parent()
    other_rank = int(os.environ.get("RANK", "0")) > 0  # a torchrun process that is not rank 0: no output
    run_dir, console, sweep = Path(hc.runtime.output_dir), Console(quiet=other_rank), hc.mode == RunMode.MULTIRUN
    meta, name = _meta(hc), _name(hc)
    if cfg.print_config:
        from rich.syntax import Syntax

        console.print(Syntax(OmegaConf.to_yaml(cfg, resolve=True), "yaml"))
    staged = _staged(hc, run_dir)
    if sweep and _not_started:  # Ctrl-C stopped the sweep: the remaining jobs start nothing and leave nothing
        discard_hydra_files(staged, run_dir)
        if {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:  # only what Hydra just wrote
            shutil.rmtree(run_dir, ignore_errors=True)
        _not_started.append(str(hc.job.num))
        return None
    try:
        action, before = _go_ahead(cfg, run_dir, staged, name, console)
        if action == "skip":
            _outcomes.append(before["status"])
            return before.get("best_value")
        if cfg.lr_find.enabled:
            from runner.lr_find import run_lr_find

            summary = run_lr_find(cfg, run_dir, meta)
            console.print(f"{name}: suggested lr {summary['suggested_lr']:.3g} (half the lr of the lowest smoothed "
                          f"loss, {summary['min_loss_lr']:.3g}; steepest fall at {summary['steepest_lr']:.3g}); "
                          f"plot: {run_dir / 'lr_find.png'}", soft_wrap=True)
            _outcomes.append("completed")
            return summary["suggested_lr"]
        if sweep:
            summary = run(cfg, run_dir, meta=meta, resume=action in ("resume", "extend"))
        else:
            summary = _train_with_progress(cfg, run_dir, console, meta, resume=action in ("resume", "extend"))
    except ConfigError as e:
        Console(stderr=True).print(f"[red]error:[/] {f'{name}: ' if sweep else ''}{_escape(e)}", soft_wrap=True,
                                   highlight=False)
        discard_hydra_files(staged, run_dir)
        if sweep and not (run_dir / "summary.json").exists():  # never over a finished or interrupted run's record
            record_failure(run_dir, cfg, "invalid", e, meta)
        elif sweep:
            _refused.append(str(hc.job.num))
        elif not (run_dir / "summary.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no folder behind
        _outcomes.append("invalid")
        return None
    except KeyboardInterrupt as e:  # a second Ctrl-C, or one before training started
        adopt_hydra_files(staged, run_dir)
        record_failure(run_dir, cfg, "interrupted", e, meta)
        abort_trackers("interrupted", e)
        _outcomes.append("interrupted")
        if not sweep:
            raise
        _not_started.append("stop")  # the sweep ends here: the jobs after this one do not start
        return None
    except Exception as e:  # noqa: BLE001 - any failure is recorded and the sweep goes on
        try:
            adopt_hydra_files(staged, run_dir)
            record_failure(run_dir, cfg, "failed", e, meta)
            abort_trackers("failed", e)
            where = f"traceback in {run_dir / 'error.txt'}"
        except OSError as again:  # a full disk: the record cannot be written either
            where = f"not recorded: {again.strerror or again}"
        Console(stderr=True).print(f"[red]{name} failed:[/] {type(e).__name__}: {e} ({where})", soft_wrap=True,
                                   highlight=False)
        _outcomes.append("failed")
        return None
    adopt_hydra_files(staged, run_dir)
    _outcomes.append(summary["status"])
    if other_rank or summary.get("rank"):  # not rank 0 of a data-parallel run: rank 0 reports
        if other_rank:
            shutil.rmtree(run_dir, ignore_errors=True)
        return None
    metric = "acc" if summary.get("task", "classification") == "classification" else "r2"
    if summary["status"] == "interrupted":
        if sweep:  # one Ctrl-C stops the whole sweep, not just this job
            _not_started.append("stop")
        console.print(f"{name}: interrupted at step {summary['steps']}; last.pt saved. Resume with the same command "
                      f"and hydra.{'sweep' if sweep else 'run'}.dir={run_dir.parent if sweep else run_dir}",
                      soft_wrap=True)
    elif sweep:
        console.print(f"{name}: {summary['status']}, test_{metric}={_num(summary[f'test_{metric}'])}, "
                      f"{summary['train_seconds']:.1f} s -> {run_dir}", soft_wrap=True)
    else:
        console.print(_result_table(summary))
        status, reason = summary["status"], summary["stop_reason"]  # not "diverged: diverged: non-finite ..."
        console.print(reason if reason.startswith(status) else f"{status}: {reason}", soft_wrap=True, highlight=False)
        console.print(f"{summary['epochs']} epochs, {summary['steps']} steps, {summary['train_seconds']:.1f} s on "
                      f"{summary['device']}; best {summary['monitor']} at epoch {summary['best_epoch']}"
                      f"{' (restored)' if summary['restored_best'] else ''}\nrun folder: {run_dir}", soft_wrap=True)
    return summary.get("best_value")


def usage() -> str:
    """`train --help`: the config groups and their options, read off conf/ (Hydra's own help composes
    every group and plugin, 2 s with the launcher plugins installed; `train --hydra-help` still gives it)."""
    from importlib.resources import files

    conf = files("runner.conf")
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and not p.name.startswith("_"))
    lines = ["train: train a model as conf/train.yaml and the options below describe; results in outputs/.", "",
             "usage: train [group=option ...] [key=value ...]      one run",
             "       train -m [key=v1,v2 ...] [+experiment=NAME]   a sweep (one job per combination)", "",
             "config groups (group=option; +group=option for experiment, launcher, logger and search):"]
    for g in groups:
        options = sorted(f.name.removesuffix(".yaml") for f in (conf / g).iterdir() if f.name.endswith(".yaml"))
        lines.append(f"  {g:15} {', '.join(options)}")
    lines += ["", "examples: train optimizer=sgd optimizer.lr=0.05 schedule=cosine schedule.warmup=500",
              "          train -m regularizer=l2 regularizer.lambda=0,1e-4,1e-3 regularizer.dropout=0,0.25,0.5",
              "          train lr_find=on                  the LR range test instead of training",
              "the composed config: train --cfg job; Hydra's options: train --hydra-help",
              f"exit codes: {', '.join(f'{c} {s}' for s, c in sorted(EXIT_CODES.items(), key=lambda i: i[1]))}"]
    return "\n".join(lines)


def _register_launcher() -> None:
    """The vectorized launcher (hydra_plugins.runner_launcher), which Hydra's plugin scan misses in an
    editable install (the namespace path it adds cannot be listed)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.runner_launcher import VectorizedLauncher

    Plugins.instance().register(VectorizedLauncher)


PLUGINS = {  # preset: (the Hydra plugin's module, the pyproject extra that installs it)
    "launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    "launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    "launcher=ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "search=": ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
}


def missing_plugin(args: list[str]) -> str | None:
    """The message for a launcher or search preset whose plugin is not installed, naming the extra."""
    from importlib.util import find_spec

    for arg in args:
        for preset, (module, extra) in PLUGINS.items():
            if arg.lstrip("+").startswith(preset) and find_spec(module) is None:
                return (f"{arg}: its Hydra plugin is not installed; install the extra: pip install -e \".[{extra}]\" "
                        f"in a checkout, or pip install \"runner[{extra}]\"")
    return None


def cli() -> int:
    """Hydra, then the exit code that tells a script what happened (EXIT_CODES)."""
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(usage())
        return 0
    if message := missing_plugin(sys.argv[1:]) or hydra_plugins.runner_launcher.unknown_submitit_key(sys.argv[1:]):
        print(f"error: {message}", file=sys.stderr)
        return EXIT_CODES["invalid"]
    _cli_pid[:] = [os.getpid()]
    logging.raiseExceptions = False  # a log line that cannot be written (disk full) is dropped, not a traceback
    _outcomes.clear()
    _register_launcher()
    _refused.clear()
    _not_started.clear()
    try:
        main()
    except SystemExit as e:
        if e.code not in (0, None) and not _outcomes:  # Hydra refused the command line before any job ran
            return EXIT_CODES["invalid"]
        if e.code not in (0, None):
            return e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:
        return EXIT_CODES["interrupted"]
    return EXIT_CODES[min(_outcomes, key=_SEVERITY.index, default="completed")]


def console() -> None:
    """The `train` console script. It ends with os._exit: every file is written and closed by
    then, and the interpreter's teardown of torch would add 0.3 s to every run of a sweep. Not
    after a launcher with worker processes, whose exit handlers must stop them."""
    code = cli()
    if any(name in sys.modules for name in ("joblib", "submitit", "ray")):
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    console()
