"""Training time with diagnostics on (the default) and off: the default run (MNIST-1D, MLP, 30 epochs,
one evaluation per epoch), in-process, interleaved, median of --repeats.

    python benchmarks/diagnostics_overhead.py [--repeats 5]
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module

import runner.train  # noqa: F401  (registers the schemas)
from runner.run import run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="diag-bench-"))
    times = {"on": [], "off": []}
    for i in range(args.repeats + 1):
        for mode in times:
            with initialize_config_module("runner.conf", version_base="1.3"):
                cfg = compose("train", overrides=[f"diagnostics={mode}"])
            seconds = run(cfg, work / f"{mode}{i}")["train_seconds"]
            if i:  # the first round warms up (imports, caches)
                times[mode].append(seconds)
    on, off = (statistics.median(times[m]) for m in ("on", "off"))
    print(f"training loop, median of {args.repeats}: diagnostics on {on:.2f} s, off {off:.2f} s, "
          f"overhead {100 * (on / off - 1):.1f}%")


if __name__ == "__main__":
    main()
