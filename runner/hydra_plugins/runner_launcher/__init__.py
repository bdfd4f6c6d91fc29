"""The vectorized launcher, `+launcher=vectorized` (conf/launcher/vectorized.yaml) or
`hydra/launcher=vectorized`: a Hydra launcher that trains a sweep's compatible jobs as one
batched model (runner.vectorized) and the rest as ordinary jobs, one after the other in this
process. Every job gets the run folder an ordinary job gets (Hydra's .hydra/ and train.log
included), so `report`, re-runs and exit codes treat them alike.

It lives in the hydra_plugins namespace, where Hydra looks for launchers; runner/train.py
registers it too, since an editable install hides it from Hydra's scan. Importing it is cheap:
torch and the training code load only when a sweep launches."""

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.runner_launcher.VectorizedLauncher"
    max_stack: Optional[int] = None
    """Most members in one stack; larger groups of compatible jobs are split. null = as many as fit
    in half the free memory (estimated from the model's parameters and activations)."""


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="runner")


class VectorizedLauncher(Launcher):
    stopped = False  # set by an interruption: later batches of the same sweep do not start

    def __init__(self, max_stack: Optional[int] = None) -> None:
        if max_stack is not None and (isinstance(max_stack, bool) or not isinstance(max_stack, int) or max_stack < 1):
            raise ValueError(f"hydra.launcher.max_stack={max_stack!r}: must be a whole number >= 1, or null (as many "
                             f"as fit in memory)")
        self.max_stack = max_stack
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from rich.console import Console

        from runner.run import trap_signals
        from runner.vectorized import plan

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for i, overrides in enumerate(job_overrides):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = initial_job_idx + i
            configs.append(cfg)
        console, runs, not_started = Console(), [], []
        interrupted = threading.Event()
        with trap_signals(interrupted):
            for group in plan(configs, self.max_stack):
                if interrupted.is_set() or VectorizedLauncher.stopped:
                    not_started += [configs[i] for i in group]
                elif len(group) == 1:
                    runs.append(self._run_alone(configs[group[0]], interrupted))
                else:
                    runs += self._run_stack([configs[i] for i in group], interrupted, console)
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if interrupted.is_set():
            VectorizedLauncher.stopped = True
        if not_started:  # listed by runner.train.SweepOutcome at the sweep's end
            from runner.train import _not_started

            _not_started[:] = ["stop", *_not_started[1:], *(str(c.hydra.job.num) for c in not_started)]
        return runs

    def _run(self, cfg: DictConfig, task_function) -> JobReturn:
        return run_job(hydra_context=self.hydra_context, task_function=task_function, config=cfg,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def _run_alone(self, cfg: DictConfig, interrupted: threading.Event) -> JobReturn:
        """An ordinary job (runner.train.main); its interruption stops the sweep here too."""
        from runner.train import _not_started

        ret = self._run(cfg, self.task_function)
        if _not_started:  # main() saw a Ctrl-C
            interrupted.set()
        return ret

    def _run_stack(self, configs: list[DictConfig], interrupted: threading.Event, console) -> list[JobReturn]:
        """Let Hydra set up each member's folder (and runner.train's checks decide whether it trains:
        finished jobs are skipped, interrupted ones resume, invalid ones are recorded), then train the
        members that need it as stacks, one per resume step."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from runner.runfolder import adopt_hydra_files
        from runner.train import prepare_job
        from runner.vectorized import train_stack

        members, runs = [], []
        for cfg in configs:
            ret = self._run(cfg, lambda c: members.append(prepare_job(c, HydraConfig.get())))
            runs.append(ret)
        todo = [m for m in members if m is not None]
        by_step: dict[int, list[dict]] = {}
        for m in todo:
            by_step.setdefault(m["step"], []).append(m)
        for stack in by_step.values():
            if interrupted.is_set():
                break
            epochs = stack[0]["cfg"].trainer.epochs
            progress = Progress(TextColumn(f"[bold]stack of {len(stack)}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[best]}"), TimeRemainingColumn(), console=console)
            task = progress.add_task("stack", total=epochs, best="")

            def show(k, row, stack=stack):
                if not progress.live.is_started:
                    progress.start()
                progress.update(task, completed=row["epoch"], best=f"job {stack[k]['num']}: {row['epoch']:g} ep")

            def done(k, summary, stack=stack):
                metric = "acc" if summary.get("task", "classification") == "classification" else "r2"
                value = summary.get(f"test_{metric}")
                console.print(f"{stack[k]['name']}: {summary['status']}"
                              f"{f', test_{metric}={value:.4f}' if value is not None else ''} -> {stack[k]['run_dir']}",
                              soft_wrap=True, highlight=False)

            try:
                train_stack(stack, interrupted, on_eval=show, on_done=done, max_stack=self.max_stack)
                for m in stack:  # Hydra's files of a run extended to more epochs: now that it ran
                    adopt_hydra_files(m["staged"], m["run_dir"])
            except Exception as e:  # noqa: BLE001 - recorded in every member's folder; the sweep goes on
                console.print(f"[red]stack of {len(stack)} failed:[/] {type(e).__name__}: {e} (every member "
                              f"recorded as failed; traceback in {stack[0]['run_dir'] / 'error.txt'})",
                              soft_wrap=True, highlight=False)
            finally:
                if progress.live.is_started:
                    progress.stop()
        return runs
