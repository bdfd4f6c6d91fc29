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
    n_jobs: Optional[int] = None
    """Processes a stack is split over (this one and n_jobs - 1 workers), each training its share as one
    smaller stack with its share of the threads. null = on the CPU one per torch thread (on 2 cores the
    README's 16-job sweep ran faster as two stacks of 8 on a thread each than as one of 16 on both),
    on a GPU 1 (one stack fills it)."""


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="runner")


class VectorizedLauncher(Launcher):
    stopped = False  # set by an interruption: later batches of the same sweep do not start

    def __init__(self, max_stack: Optional[int] = None, n_jobs: Optional[int] = None) -> None:
        for key, value, null in (("max_stack", max_stack, "as many as fit in memory"),
                                 ("n_jobs", n_jobs, "one process per CPU thread, 1 on a GPU")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"hydra.launcher.{key}={value!r}: must be a whole number >= 1, or null ({null})")
        self.max_stack, self.n_jobs = max_stack, n_jobs
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
                parts = _split(stack, self.n_jobs)
                if len(parts) == 1:
                    train_stack(stack, interrupted, on_eval=show, on_done=done, max_stack=self.max_stack,
                                log_files=True)
                else:
                    _train_parts(parts, interrupted, show, done, self.max_stack)
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


def _split(stack: list[dict], n_jobs: Optional[int]) -> list[list[dict]]:
    """The stack in n_jobs contiguous parts of nearly equal size (null: one per torch thread on the
    CPU, one on an accelerator), no part empty."""
    if n_jobs is None:
        import torch

        from runner.run import resolve_device

        cpu = resolve_device(str(stack[0]["cfg"].trainer.device)).type == "cpu"
        n_jobs = torch.get_num_threads() if cpu else 1
    n = max(1, min(n_jobs, len(stack)))
    size, extra = divmod(len(stack), n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [stack[bounds[i]:bounds[i + 1]] for i in range(n)]


def _train_parts(parts: list[list[dict]], interrupted: threading.Event, show, done, max_stack) -> None:
    """Train the first part as a stack in this process and each other part in a worker process of its
    own (spawned: a clean torch), each with an equal share of this process's torch threads. The
    workers' progress comes back through a queue, read by a relay thread. Ctrl-C reaches this process
    alone (the workers have their own process group) and is passed on as SIGTERM: every part saves
    its members' last.pt. A worker that dies without a word leaves its unfinished members recorded
    as failed."""
    import multiprocessing
    import os
    import queue as queue_module
    import signal

    import torch

    from runner.runfolder import record_failure
    from runner.vectorized import train_stack

    threads, before = max(1, torch.get_num_threads() // len(parts)), torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    workers = [context.Process(target=_worker, args=(i, part, threads, max_stack, messages), daemon=False)
               for i, part in enumerate(parts) if i]
    offsets = [sum(len(p) for p in parts[:i]) for i in range(len(parts))]
    errors, joined = [], threading.Event()

    def stop_workers():
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signal.SIGTERM)

    def relay():  # the workers' messages, until they have all exited and the queue is empty
        stopping = False
        while True:
            if interrupted.is_set() and not stopping:
                stopping = True
                stop_workers()
            try:
                kind, i, *rest = messages.get(timeout=0.2)
            except queue_module.Empty:
                if joined.is_set():
                    return
                continue
            if kind == "eval":
                show(offsets[i] + rest[0], rest[1])
            elif kind == "done":
                done(offsets[i] + rest[0], rest[1])
            elif kind == "failed":
                errors.append(rest[0])

    for w in workers:
        w.start()
    relay_thread = threading.Thread(target=relay, name="stack-relay", daemon=True)
    relay_thread.start()
    try:
        torch.set_num_threads(threads)  # trainer.num_threads, when set, overrides it in setup()
        try:
            train_stack(parts[0], interrupted, on_eval=show, on_done=done, max_stack=max_stack, log_files=True)
        except Exception as e:  # noqa: BLE001 - recorded in its members' folders; the other parts go on
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            torch.set_num_threads(before)
        for w in workers:
            w.join()
    except KeyboardInterrupt:  # a second Ctrl-C: the workers stop at once too
        stop_workers()
        for w in workers:
            w.join()
        raise
    finally:
        joined.set()
        relay_thread.join()
    for w, part in zip(workers, parts[1:]):
        if w.exitcode != 0:
            for m in part:
                if not (m["run_dir"] / "summary.json").exists():
                    record_failure(m["run_dir"], m["cfg"], "failed",
                                   RuntimeError(f"the worker process training it exited with code {w.exitcode}"),
                                   m["meta"])
    if errors:
        raise RuntimeError("; ".join(errors))


def _worker(index: int, members: list[dict], threads: int, max_stack, messages) -> None:
    """A spawned process training one part of a stack (runner.vectorized.train_stack)."""
    import os
    import sys

    import torch

    os.setpgrp()  # Ctrl-C at the terminal reaches the launcher, which passes it on once
    torch.set_num_threads(threads)  # trainer.num_threads, when set, overrides it in setup()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from runner.run import trap_signals, watch_parent
    from runner.vectorized import train_stack

    watch_parent()  # the sweep killed (kill -9): stop after this step and save last.pt
    interrupted = threading.Event()
    with trap_signals(interrupted):
        try:
            train_stack(members, interrupted, max_stack=max_stack, log_files=True,
                        on_eval=lambda k, row: messages.put(("eval", index, k, row)),
                        on_done=lambda k, summary: messages.put(("done", index, k, summary)))
        except Exception as e:  # noqa: BLE001 - train_stack recorded every member; the launcher reports it
            messages.put(("failed", index, f"{type(e).__name__}: {e}"))
    messages.close()
    messages.join_thread()
