"""Training time with each experiment tracker against none: the default run (MNIST-1D, MLP, 30 epochs,
one evaluation per epoch, diagnostics on), in-process, interleaved, median of --repeats. The goal is
at most 5% on the training loop (train_seconds); since the same run's loop varies by +-30% on a shared
2-core machine, it also counts the CPU seconds the tracker's thread spent while the loop ran (its start
and the evaluations' rows), the part of the loop's time it can have taken. `run` also shows the whole run() (wall_seconds: data,
build, final evaluation, and waiting for the tracker's background thread to send the rest and close).
MLflow writes to its local store (sqlite mlflow.db) and W&B offline, both in a temporary folder.

    python benchmarks/logger_overhead.py [--repeats 5] [--epochs 30] [--loggers none tensorboard mlflow wandb]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module

import runner.train  # noqa: F401  (registers the schemas)
from runner.logger import Trackers
from runner.run import run

CPU: dict[str, float] = {}
"""CPU seconds the tracker thread spent, by what it ran: start (the tracker's constructor, which overlaps the
loop's start), log (the evaluations' rows, during the loop) and close (after the loop)."""


def _count_cpu():
    """Wrap every call the trackers submit to their thread so that its thread CPU time is counted in CPU: a
    measure of what the thread takes from training that the machine's noise (the same run's loop varies by
    +-30% here) does not drown."""
    submit = Trackers._submit
    phase = {"__init__": "start", "log": "log", "close": "close"}

    def counted(self, name, fn):
        kind = phase.get(sys._getframe(1).f_code.co_name, "other")

        def call():
            start = time.thread_time()
            try:
                fn()
            finally:
                CPU[kind] = CPU.get(kind, 0.0) + time.thread_time() - start

        submit(self, name, call)

    Trackers._submit = counted


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--loggers", nargs="+", default=["none", "tensorboard", "mlflow", "wandb"],
                        help="none, an option of conf/logger, or several joined by commas (tensorboard,mlflow)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="logger-bench-"))
    os.chdir(work)  # MLflow's local store lands here
    _count_cpu()
    loop = {name: [] for name in args.loggers}
    cpu = {name: {} for name in args.loggers}
    wall = {name: [] for name in args.loggers}
    for i in range(args.repeats + 1):
        for name in args.loggers:
            extra = [] if name == "none" else [f"+logger=[{name}]"]
            with initialize_config_module("runner.conf", version_base="1.3"):
                cfg = compose("train", overrides=[f"trainer.epochs={args.epochs}", *extra])
            CPU.clear()
            start = time.perf_counter()
            summary = run(cfg, work / f"{name.replace(',', '+')}{i}")  # returns once the trackers are closed
            if i:  # the first round warms up (imports, caches, the MLflow database's creation)
                loop[name].append(summary["train_seconds"])
                wall[name].append(time.perf_counter() - start)
                for kind, seconds in CPU.items():
                    cpu[name].setdefault(kind, []).append(seconds)
    base_loop, base_wall = statistics.median(loop[args.loggers[0]]), statistics.median(wall[args.loggers[0]])
    print(f"median of {args.repeats}, {args.epochs} epochs; overhead against {args.loggers[0]}")
    print(f"{'logger':25} {'loop (s)':>9} {'overhead':>9} {'min loop':>9} {'run (s)':>9} {'overhead':>9}   "
          f"tracker thread CPU (s): start + log = % of the loop; close")
    for name in args.loggers:
        lo, wa, low = statistics.median(loop[name]), statistics.median(wall[name]), min(loop[name])
        c = {k: statistics.median(v) for k, v in cpu[name].items()}
        during = c.get("start", 0.0) + c.get("log", 0.0)
        print(f"{name:25} {lo:9.2f} {100 * (lo / base_loop - 1):8.1f}% {low:9.2f} {wa:9.2f} "
              f"{100 * (wa / base_wall - 1):8.1f}%   {c.get('start', 0):.3f} + {c.get('log', 0):.3f} = "
              f"{100 * during / lo:.1f}%; {c.get('close', 0):.3f}")


if __name__ == "__main__":
    main()
