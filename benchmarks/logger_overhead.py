"""Training time with each experiment tracker against none: the default run (MNIST-1D, MLP, 30 epochs,
one evaluation per epoch, diagnostics on), in-process, interleaved, median of --repeats. The goal is
at most 5% on the training loop (train_seconds); `run` also shows the whole run() (wall_seconds: data,
build, final evaluation, and waiting for the tracker's background thread to send the rest and close).
MLflow writes to its local store (sqlite mlflow.db) and W&B offline, both in a temporary folder.

    python benchmarks/logger_overhead.py [--repeats 5] [--epochs 30] [--loggers none tensorboard mlflow wandb]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module

import runner.train  # noqa: F401  (registers the schemas)
from runner.run import run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--loggers", nargs="+", default=["none", "tensorboard", "mlflow", "wandb"],
                        help="none, an option of conf/logger, or several joined by commas (tensorboard,mlflow)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="logger-bench-"))
    os.chdir(work)  # MLflow's local store lands here
    loop = {name: [] for name in args.loggers}
    wall = {name: [] for name in args.loggers}
    for i in range(args.repeats + 1):
        for name in args.loggers:
            extra = [] if name == "none" else [f"+logger=[{name}]"]
            with initialize_config_module("runner.conf", version_base="1.3"):
                cfg = compose("train", overrides=[f"trainer.epochs={args.epochs}", *extra])
            start = time.perf_counter()
            summary = run(cfg, work / f"{name.replace(',', '+')}{i}")  # returns once the trackers are closed
            if i:  # the first round warms up (imports, caches, the MLflow database's creation)
                loop[name].append(summary["train_seconds"])
                wall[name].append(time.perf_counter() - start)
    base_loop, base_wall = statistics.median(loop[args.loggers[0]]), statistics.median(wall[args.loggers[0]])
    print(f"median of {args.repeats}, {args.epochs} epochs; overhead against {args.loggers[0]}")
    print(f"{'logger':25} {'loop (s)':>9} {'overhead':>9} {'run (s)':>9} {'overhead':>9}")
    for name in args.loggers:
        lo, wa = statistics.median(loop[name]), statistics.median(wall[name])
        print(f"{name:25} {lo:9.2f} {100 * (lo / base_loop - 1):8.1f}% {wa:9.2f} {100 * (wa / base_wall - 1):8.1f}%")


if __name__ == "__main__":
    main()
