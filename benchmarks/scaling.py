"""Seconds per epoch against training-set size and MLP width (MNIST-1D, depth 3, AdamW, batch 128),
so that a sweep's cost can be predicted: time should grow linearly with samples x width^2.

    python benchmarks/scaling.py [--sizes 1000 4000 16000] [--widths 64 256 1024] [--epochs 3]
"""

import argparse
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module

import runner.train  # noqa: F401  (registers the schemas)
from runner.run import run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scaling-"))
    table = {}
    for n in args.sizes:
        for w in args.widths:
            with initialize_config_module("runner.conf", version_base="1.3"):
                cfg = compose("train", overrides=[f"data.n_samples={n + 2000}", "regularizer=none",
                                                  f"model.width={w}", f"trainer.epochs={args.epochs}"])
            summary = run(cfg, work / f"{n}-{w}")
            table[n, w] = summary["train_seconds"] / summary["epochs"]
    print("| train samples \\ width | " + " | ".join(str(w) for w in args.widths) + " |")
    print("|---" * (len(args.widths) + 1) + "|")
    for n in args.sizes:
        print(f"| {n} | " + " | ".join(f"{table[n, w]:.3f}" for w in args.widths) + " |")
    base = table[args.sizes[0], args.widths[0]]
    print("\nrelative to the smallest:")
    for n in args.sizes:
        print(f"| {n} | " + " | ".join(f"{table[n, w] / base:.1f}x" for w in args.widths) + " |")


if __name__ == "__main__":
    main()
