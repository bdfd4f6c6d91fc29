"""The vectorized launcher, `+launcher=vectorized` (conf/launcher/vectorized.yaml) or
`hydra/launcher=vectorized`: a Hydra launcher that trains a sweep's compatible jobs as one
batched model (runner.vectorized) and the rest as ordinary jobs, one after the other in this
process. Every job gets the run folder an ordinary job gets (Hydra's .hydra/ and train.log
included), so `report`, re-runs and exit codes treat them alike. A stack may be split over worker
processes (n_jobs: _train_parts) or, with hydra.launcher.submitit, over submitit jobs (local or
SLURM: _Jobs, _submitit_job).

It lives in the hydra_plugins namespace, where Hydra looks for launchers; runner/train.py
registers it too, since an editable install hides it from Hydra's scan. Importing it is cheap:
torch and the training code load only when a sweep launches."""

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class SubmititConf:
    """hydra.launcher.submitit: each share of a stack as one submitit job (cluster null: off)."""
    cluster: Optional[str] = None
    """local (a process on this machine, run the way SLURM runs a job) or slurm (sbatch); null = off: the
    stacks train in this process and its workers."""
    folder: Optional[str] = None
    """Where submitit keeps each job's pickles and logs, %j standing for the job id; on SLURM a folder
    the compute nodes share. null = <hydra.sweep.dir>/.submitit/%j."""
    timeout_min: int = 60
    """The job's time limit in minutes. submitit signals the job before it (SLURM 90 s, local 30 s): the
    members save last.pt and end interrupted, and the same command resumes them."""
    gpus_per_node: Optional[int] = None
    """GPUs per job (null = none; local jobs then see no GPU, CUDA_VISIBLE_DEVICES is emptied)."""
    cpus_per_task: Optional[int] = None
    """CPUs per job, and the job's torch threads (trainer.num_threads, when set, wins). null = SLURM's
    default CPUs (threads: the CPUs the job may use); local: this machine's threads / array_parallelism."""
    mem_gb: Optional[float] = None
    """Memory per job in GB (SLURM; null = the partition's default)."""
    partition: Optional[str] = None
    """SLURM partition (null = the cluster's default)."""
    array_parallelism: Optional[int] = None
    """Jobs running at once: SLURM's limit on the job array; local: this launcher starts a job when one
    ends. null = SLURM submitit's default (256), local n_jobs."""
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    """Further sbatch options, e.g. {account: proj, qos: high, constraint: a100} (SLURM)."""


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
    on a GPU 1 (one stack fills it). With submitit (below) the number of submitit jobs per stack, null 1."""
    submitit: SubmititConf = field(default_factory=SubmititConf)
    """Each share of a stack as a submitit job instead (SubmititConf)."""


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="runner")


class VectorizedLauncher(Launcher):
    stopped = False  # set by an interruption: later batches of the same sweep do not start

    def __init__(self, max_stack: Optional[int] = None, n_jobs: Optional[int] = None, submitit=None) -> None:
        for key, value, null in (("max_stack", max_stack, "as many as fit in memory"),
                                 ("n_jobs", n_jobs, "one process per CPU thread, 1 on a GPU")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"hydra.launcher.{key}={value!r}: must be a whole number >= 1, or null ({null})")
        self.max_stack, self.n_jobs = max_stack, n_jobs
        self.submitit = _check_submitit(submitit)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        loader, composed = hydra_context.config_loader, {}
        compose = loader.load_sweep_config

        def keep(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
            cfg = compose(master_config, sweep_overrides)
            composed[id(master_config), tuple(sweep_overrides)] = cfg
            return cfg

        # Hydra's sweepers compose every job's config to check the batch before they call launch(), which
        # composes it again (1.5 s of the README's 16-job sweep): launch() takes the first composition.
        loader.load_sweep_config = keep
        self._compose, self._composed = compose, composed

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from rich.console import Console

        from runner.run import trap_signals
        from runner.vectorized import plan

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for i, overrides in enumerate(job_overrides):
            cfg = self._composed.pop((id(self.config), tuple(overrides)), None) or \
                self._compose(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = initial_job_idx + i
            configs.append(cfg)
        console, runs, not_started = Console(), [], []
        interrupted = threading.Event()
        with trap_signals(interrupted):
            if self.submitit["cluster"] and not VectorizedLauncher.stopped:
                runs, not_started = self._launch_submitit(configs, plan(configs, self.max_stack), interrupted, console)
            else:
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
                _print_done(console, stack[k], summary)

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

    def _launch_submitit(self, configs: list[DictConfig], groups: list[list[int]], interrupted: threading.Event,
                         console) -> tuple[list[JobReturn], list[DictConfig]]:
        """hydra.launcher.submitit: Hydra sets up every member's folder (runner.train.prepare_job decides
        which train), each stack (a group of one included) is split into n_jobs shares (null: 1), and
        every share of every stack is submitted as one submitit job (_submitit_job); jobs that fit no
        stack run as ordinary jobs in this process meanwhile. Returns the runs and the jobs not started."""
        from runner.train import prepare_job
        from runner.vectorized import stack_key

        jobs = _Jobs(self.submitit, Path(str(self.config.hydra.sweep.dir)), self.n_jobs, self.max_stack, console)
        runs, alone, shares = [], [], []
        for group in groups:
            if len(group) == 1 and stack_key(configs[group[0]]) is None:
                alone.append(configs[group[0]])
                continue
            members = []
            for i in group:
                runs.append(self._run(configs[i], lambda c: members.append(prepare_job(c, HydraConfig.get()))))
            by_step: dict[int, list[dict]] = {}
            for m in members:
                if m is not None:
                    by_step.setdefault(m["step"], []).append(m)
            for stack in by_step.values():
                shares += _split(stack, self.n_jobs or 1)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        started = 0
        try:
            jobs.start(shares, interrupted)
            for cfg in alone:
                if interrupted.is_set():
                    break
                runs.append(self._run_alone(cfg, interrupted))
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                started += 1
            jobs.wait(interrupted)
        finally:
            jobs.close()
        return runs, alone[started:]


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


def _start_method(threads: int, trainer) -> str:
    """fork where it is safe, else spawn. A forked worker shares this process's memory (torch's
    imported modules: about 290 MB, which a spawned worker imports again) and starts at once, but
    only a CPU worker on one thread may fork: CUDA cannot be forked, and a worker that runs OpenMP
    on several threads after this process has used OpenMP hangs (GNU libgomp is not fork-safe)."""
    import multiprocessing

    from runner.run import resolve_device

    threads = trainer.get("num_threads") or threads  # trainer.num_threads, when set, is what the worker runs on
    one_cpu_thread = threads == 1 and resolve_device(str(trainer.device)).type == "cpu"
    return "fork" if one_cpu_thread and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _train_parts(parts: list[list[dict]], interrupted: threading.Event, show, done, max_stack) -> None:
    """Train the first part as a stack in this process and each other part in a worker process of its
    own (forked where _start_method allows, else spawned), each with an equal share of this process's
    torch threads. The workers' progress comes back through a queue, read by a relay thread. Ctrl-C
    reaches this process alone (the workers have their own process group) and is passed on as
    SIGTERM: every part saves its members' last.pt. A worker that dies without a word leaves its
    unfinished members recorded as failed."""
    import gc
    import multiprocessing
    import os
    import queue as queue_module
    import signal
    import sys

    import torch

    from runner.runfolder import record_failure
    from runner.vectorized import train_stack

    threads, before = max(1, torch.get_num_threads() // len(parts)), torch.get_num_threads()
    method = _start_method(threads, parts[0][0]["cfg"].trainer)
    if method == "fork":  # what the workers will import anyway, imported once, before the fork, to be shared
        import torch._dynamo  # noqa: F401 - torch.optim imports it on its first optimizer (1 s, 70 MB)

        sys.stdout.flush()  # or a worker would write this process's pending output again when it exits
        sys.stderr.flush()
        gc.freeze()  # the collector leaves today's objects alone: their pages stay shared with the workers
    context = multiprocessing.get_context(method)
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
    gc.unfreeze()
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
    """A worker process (forked or spawned) training one part of a stack (runner.vectorized.train_stack)."""
    import os
    import sys

    import torch

    os.setpgrp()  # Ctrl-C at the terminal reaches the launcher, which passes it on once
    torch.set_num_threads(threads)  # trainer.num_threads, when set, overrides it in setup()
    from runner.run import trap_signals, watch_parent
    from runner.runfolder import LOG_FORMAT

    root = logging.getLogger()  # a forked worker has the launcher's handlers: its last job's log file among them
    for h in list(root.handlers):
        root.removeHandler(h)
    console = logging.StreamHandler(sys.stderr)  # as the launcher's own members: warnings on the terminal,
    console.setLevel(logging.WARNING)  # everything in the member's train.log (train_stack, log_files)
    console.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(console)
    root.setLevel(logging.INFO)
    from runner.vectorized import train_stack

    watch_parent.started = False  # forked: the launcher's own watch (if it had one) did not come along
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


CLUSTERS = ("local", "slurm")


def _check_submitit(conf) -> dict:
    """hydra.launcher.submitit as a plain dict with SubmititConf's defaults, every value checked."""
    import shutil
    from dataclasses import MISSING, fields
    from importlib.util import find_spec

    from omegaconf import OmegaConf

    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(SubmititConf)}
    given = OmegaConf.to_container(conf, resolve=True) if isinstance(conf, DictConfig) else dict(conf or {})
    for key in given:
        if key not in defaults:
            raise ValueError(f"hydra.launcher.submitit.{key}={given[key]!r}: unknown key; the keys are "
                             f"{', '.join(defaults)}")
    c = defaults | given
    if c["cluster"] not in (None, *CLUSTERS):
        raise ValueError(f"hydra.launcher.submitit.cluster={c['cluster']!r}: must be one of {', '.join(CLUSTERS)}, "
                         "or null (off: the stacks train on this machine)")
    for key, least in (("timeout_min", 1), ("gpus_per_node", 0), ("cpus_per_task", 1), ("array_parallelism", 1)):
        value = c[key]
        if (value is not None or key == "timeout_min") and (
                isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"hydra.launcher.submitit.{key}={value!r}: must be a whole number >= {least}"
                             f"{'' if key == 'timeout_min' else ', or null'}")
    if c["mem_gb"] is not None and (isinstance(c["mem_gb"], bool) or not isinstance(c["mem_gb"], (int, float))
                                    or not c["mem_gb"] > 0):
        raise ValueError(f"hydra.launcher.submitit.mem_gb={c['mem_gb']!r}: must be a number > 0, or null")
    if not isinstance(c["additional_parameters"], dict):
        raise ValueError(f"hydra.launcher.submitit.additional_parameters={c['additional_parameters']!r}: must be a "
                         "mapping of sbatch options, e.g. {account: proj}")
    if c["cluster"] == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ValueError("hydra.launcher.submitit.cluster=slurm: SLURM's sbatch and srun are not on PATH, so this is "
                         "not a machine that can submit SLURM jobs (cluster=local runs the jobs on this machine)")
    if c["cluster"] and find_spec("submitit") is None:
        raise ValueError(f"hydra.launcher.submitit.cluster={c['cluster']}: the submitit package is not installed; "
                         "install the extra: pip install -e \".[submitit]\" in a checkout, or pip install "
                         "\"runner[submitit]\"")
    return c


def unknown_submitit_key(args: list[str]) -> Optional[str]:
    """The message for a command-line hydra.launcher.submitit.KEY=... whose KEY SubmititConf lacks (Hydra's
    own message does not list the keys), else None."""
    from dataclasses import fields

    keys = [f.name for f in fields(SubmititConf)]
    for arg in args:
        name = arg.lstrip("+~").split("=", 1)[0]
        if name.startswith("hydra.launcher.submitit.") and name.split(".")[3] not in keys:
            return f"{arg}: hydra.launcher.submitit has no key {name.split('.')[3]!r}; the keys are {', '.join(keys)}"
    return None


def _stamp(m: dict):
    """What tells a member's summary.json written by its job from the one it had before (if any)."""
    try:
        st = (m["run_dir"] / "summary.json").stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino


class _Jobs:
    """The submitit jobs of a sweep: one per share of a stack (_submitit_job). Submission (SLURM: one job
    array; local: at most array_parallelism at once), a line per member as its job writes its
    summary.json, Ctrl-C passed on, and a record for every member whose job ended without writing one."""

    def __init__(self, conf: dict, sweep_dir: Path, n_jobs: Optional[int], max_stack: Optional[int], console):
        import itertools
        import uuid

        import submitit

        self.conf, self.local, self.max_stack, self.console = conf, conf["cluster"] == "local", max_stack, console
        self.folder = str(conf["folder"] or sweep_dir / ".submitit" / "%j")
        try:
            self.executor = submitit.AutoExecutor(folder=self.folder, cluster=conf["cluster"])
        except Exception as e:  # noqa: BLE001 - SLURM's commands missing: not a cluster
            raise ValueError(f"hydra.launcher.submitit.cluster={conf['cluster']}: {e} (cluster=local runs the jobs "
                             "on this machine)") from None
        self.parallelism = conf["array_parallelism"] or (n_jobs or 1 if self.local else None)
        self.executor.update_parameters(
            name="vectorized", timeout_min=conf["timeout_min"], gpus_per_node=conf["gpus_per_node"],
            cpus_per_task=conf["cpus_per_task"], mem_gb=conf["mem_gb"], slurm_partition=conf["partition"],
            slurm_array_parallelism=self.parallelism, slurm_additional_parameters=conf["additional_parameters"])
        self.threads = conf["cpus_per_task"]  # null on SLURM: the job counts the CPUs it may use
        if self.threads is None and self.local:
            import torch

            self.threads = max(1, torch.get_num_threads() // self.parallelism)
        root = Path(*itertools.takewhile(lambda part: "%" not in part, Path(self.folder).parts))
        self.stop_file = root.absolute() / f"stop-{uuid.uuid4().hex}"  # written on Ctrl-C; each job watches it
        self.shares, self.jobs, self.queue, self.cancelled, self.refused, self.progress = [], {}, [], set(), {}, None

    def start(self, shares: list[list[dict]], interrupted: threading.Event) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.shares, self.queue = shares, list(range(len(shares)))
        self.before = [[_stamp(m) for m in share] for share in shares]
        self.shown = [[False] * len(share) for share in shares]
        if not shares:
            return
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file.unlink(missing_ok=True)
        self.console.print(f"submitit ({self.conf['cluster']}): {len(shares)} jobs ({' + '.join(str(len(s)) for s in shares)}"
                           f" members) -> {self.folder}", soft_wrap=True, highlight=False)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console)
        self.task = self.progress.add_task("submitit jobs", total=sum(len(s) for s in shares))
        self.progress.start()
        if not interrupted.is_set():  # (a Ctrl-C while Hydra set up the folders: nothing is submitted, see wait)
            self._submit()

    def _submit(self) -> None:
        """The queued shares as jobs, as many as array_parallelism allows (local), else all (SLURM: one array).
        A local job is started with SIGINT ignored, which its process and the task it starts inherit:
        a Ctrl-C at the terminal reaches this process alone, which passes it on once (wait)."""
        import signal

        room = len(self.queue) if not self.local else self.parallelism - sum(not j.done() for j in self.jobs.values())
        batch, self.queue = self.queue[:max(0, room)], self.queue[max(0, room):]
        if not batch:
            return
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            submitted = self.executor.map_array(
                _submitit_job, [self.shares[i] for i in batch], [self.threads] * len(batch),
                [self.max_stack] * len(batch), [str(self.stop_file)] * len(batch))
        except Exception as e:  # noqa: BLE001 - sbatch refused (a partition that does not exist): recorded, see _record
            error = RuntimeError(f"submitit could not submit the job: {str(e).strip() or type(e).__name__}")
            self.console.print(f"[red]{error}[/] ({sum(len(self.shares[i]) for i in batch)} members)", soft_wrap=True,
                               highlight=False)
            self.refused |= dict.fromkeys(batch, error)
            return
        finally:
            if main:
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        for i, job in zip(batch, submitted):
            self.jobs[i] = job
            log.info("submitit job %s: %d members (%s)", job.job_id, len(self.shares[i]),
                     ", ".join(str(m["num"]) for m in self.shares[i]))

    def _show(self) -> None:
        """A line per member whose job wrote its summary.json since the last look."""
        for i, share in enumerate(self.shares):
            for k, m in enumerate(share):
                if self.shown[i][k] or _stamp(m) in (None, self.before[i][k]):
                    continue
                self.shown[i][k] = True
                try:
                    summary = json.loads((m["run_dir"] / "summary.json").read_text())
                except (OSError, ValueError):
                    continue
                _print_done(self.console, m, summary)
                self.progress.advance(self.task)
        left = sum(not j.done() for j in self.jobs.values()) + len(self.queue)
        self.progress.update(self.task, description=f"submitit: {len(self.shares)} jobs, {left} left")

    def wait(self, interrupted: threading.Event) -> None:
        """Until every job has ended. The first Ctrl-C (or SIGTERM) writes the stop file: each job stops after
        its current step, saves its members' last.pt and ends them interrupted; jobs not started are not
        submitted (SLURM: cancelled while pending). A second Ctrl-C stops the jobs at once."""
        if not self.shares:
            return
        poll, stopping = 0.25 if self.local else 5.0, False  # a look at the jobs and the members' folders
        try:
            while self.queue or not all(j.done() for j in self.jobs.values()):
                if interrupted.is_set() and not stopping:
                    stopping = True
                    self._stop()
                if not stopping:
                    self._submit()
                self._show()
                until = time.monotonic() + poll
                while time.monotonic() < until and (stopping or not interrupted.is_set()):
                    time.sleep(0.05)
        except KeyboardInterrupt:
            self._kill()
            while not all(j.done() for j in self.jobs.values()):
                time.sleep(0.25)
            self._show()
            self._record(at_once=True)
            raise
        self._show()
        self._record()

    def _stop(self) -> None:
        self.stop_file.write_text("Ctrl-C: stop after the current step and save last.pt\n")
        self.queue = []
        if not self.local:
            for i, job in self.jobs.items():
                if job.state == "PENDING":  # not started: it trains nothing, its members keep their state
                    job.cancel(check=False)
                    self.cancelled.add(i)
        log.warning("stopping the submitit jobs: each saves its members' last.pt")

    def _kill(self) -> None:
        """The jobs stop at once: a local job's process passes SIGTERM on to its task, SLURM's scancel sends
        it; the stop file asked them to stop already, so the task's second signal ends it (trap_signals)."""
        import os
        import signal

        for job in self.jobs.values():
            if not job.done():
                try:
                    if self.local:
                        os.kill(int(job.job_id), signal.SIGTERM)
                    else:
                        job.cancel(check=False)
                except (OSError, ValueError):
                    pass

    def _record(self, at_once: bool = False) -> None:
        """After the jobs: a line for each job that failed. Members whose job ended without writing their
        summary.json are recorded failed with the job's error; those of a job that never started (Ctrl-C)
        or was stopped at once (at_once: a second Ctrl-C) interrupted, unless they were resuming (they
        keep their record and last.pt)."""
        from runner.runfolder import adopt_hydra_files, discard_hydra_files, record_failure

        for i, share in enumerate(self.shares):
            job = self.jobs.get(i)
            ran = job is not None and i not in self.cancelled and not at_once

            def unwritten(i=i, share=share):
                return [m for k, m in enumerate(share) if _stamp(m) in (None, self.before[i][k])]

            if ran and unwritten() and not self.local:  # a shared filesystem may show a job's files here late
                deadline = time.monotonic() + 60
                while unwritten() and not job.paths.result_pickle.exists() and time.monotonic() < deadline:
                    time.sleep(2)
            missing = unwritten()
            error = self._error(job) if ran and (missing or job.paths.result_pickle.exists()) else None
            if i in self.refused:  # never submitted: its members are recorded failed, as if it had failed
                ran, error = True, self.refused[i]
                missing = [m for m in missing if not m["resume"]]  # a resumable member keeps its record
            if ran and missing and error is None:  # it returned, so it wrote them: never recorded over
                self.console.print(f"submitit job {job.job_id} returned, but the summary.json of {len(missing)} of its"
                                   " members is not visible here yet; see their folders", soft_wrap=True)
                missing = []
            if error is not None and i not in self.refused:  # (a refused submission was shown when it happened)
                where = f"{len(missing)} of its {len(share)} members recorded as failed here" if missing else \
                    f"traceback in {share[0]['run_dir'] / 'error.txt'}"
                self.console.print(f"[red]{error}[/] ({where})", soft_wrap=True, highlight=False)
            for m in share:
                if i in self.refused and m["resume"]:
                    discard_hydra_files(m["staged"], m["run_dir"])
                    continue
                if not any(m is x for x in missing):
                    adopt_hydra_files(m["staged"], m["run_dir"])
                    continue
                self.progress.advance(self.task)
                if ran:
                    adopt_hydra_files(m["staged"], m["run_dir"])
                    record_failure(m["run_dir"], m["cfg"], "failed", error, m["meta"])
                    _print_done(self.console, m, {"status": "failed"})
                elif m["resume"]:
                    discard_hydra_files(m["staged"], m["run_dir"])
                else:
                    adopt_hydra_files(m["staged"], m["run_dir"])
                    record_failure(m["run_dir"], m["cfg"], "interrupted", KeyboardInterrupt(
                        "a second Ctrl-C stopped its submitit job at once" if at_once and job is not None else
                        "Ctrl-C stopped the sweep before its submitit job started"), m["meta"])

    def _error(self, job) -> Optional[RuntimeError]:
        """What ended a job that failed (None: it returned): the last line of its exception, else that it
        left no result and where its log is; the full traceback or the end of the log as the cause, so
        that record_failure writes it to error.txt."""
        if job.paths.result_pickle.exists():
            from submitit.core.utils import pickle_load

            outcome, detail = pickle_load(job.paths.result_pickle)  # ("error", the job's traceback) when it raised
            if outcome == "success":
                return None
            last = [line.strip() for line in str(detail).splitlines() if line.strip()][-1:]
            short = f"submitit job {job.job_id} failed: {last[0] if last else outcome}"
        else:
            tail = job.paths.stderr.read_text(errors="replace")[-4000:].strip() if job.paths.stderr.exists() else ""
            detail = f"the end of {job.paths.stderr}:\n{tail}" if tail else None
            state = "" if self.local else f", SLURM state {job.state}"  # a local job's own process exits 0 regardless
            short = (f"submitit job {job.job_id} ended without a result (killed, cancelled, or out of time or "
                     f"memory{state}); its log: {job.paths.stderr}")
        error = RuntimeError(short)
        if detail:
            error.__cause__ = RuntimeError(detail)
        return error

    def close(self) -> None:
        if self.progress is not None and self.progress.live.is_started:
            self.progress.stop()
        self.stop_file.unlink(missing_ok=True)
        if self.local and "%" in self.folder:  # the local job's controller makes the folder's pattern itself
            with contextlib.suppress(OSError):
                Path(self.folder).rmdir()  # only when empty


def _print_done(console, m: dict, summary: dict) -> None:
    """The line for a member whose folder is written."""
    metric = "acc" if summary.get("task", "classification") == "classification" else "r2"
    value = summary.get(f"test_{metric}")
    console.print(f"{m['name']}: {summary['status']}{f', test_{metric}={value:.4f}' if value is not None else ''}"
                  f" -> {m['run_dir']}", soft_wrap=True, highlight=False)


def _submitit_job(members: list[dict], threads: Optional[int], max_stack: Optional[int], stop_file: str) -> list[str]:
    """A submitit job: one share of a stack trained by runner.vectorized.train_stack, each member's log
    lines in its own train.log; returns the members' statuses. It stops after the current step and saves
    last.pt on SIGINT, SIGTERM, submitit's signal before the time limit (USR2) or the launcher's stop
    file (Ctrl-C there); a second signal stops it at once. torch threads: `threads`, null = the CPUs
    this job may use (trainer.num_threads, when set, wins in setup())."""
    import os
    import signal
    import sys
    import time

    import torch

    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        with contextlib.suppress(OSError):
            os.setpgrp()  # a Ctrl-C at the terminal reaches the launcher alone, which passes it on once
    torch.set_num_threads(threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                      else os.cpu_count()))
    from runner.run import trap_signals
    from runner.runfolder import LOG_FORMAT

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    from runner.vectorized import train_stack

    interrupted, ended = threading.Event(), threading.Event()

    def watch():
        while not ended.is_set():
            if Path(stop_file).exists():
                log.warning("the launcher asked to stop (Ctrl-C): stopping after this step and saving last.pt")
                interrupted.set()
                return
            time.sleep(0.5)

    def timeout(signum, frame):
        log.warning("%s: the time limit is near: stopping after this step and saving last.pt",
                    signal.Signals(signum).name)
        interrupted.set()

    threading.Thread(target=watch, name="stop-file", daemon=True).start()
    usr = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
    previous = signal.signal(usr, timeout)  # instead of submitit's requeue: the same command resumes
    try:
        with trap_signals(interrupted):
            return [s["status"] for s in train_stack(members, interrupted, max_stack=max_stack, log_files=True)]
    finally:
        ended.set()
        signal.signal(usr, previous)
