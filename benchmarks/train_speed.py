"""A run through `train` against a hand-written PyTorch loop (issue: speed).

Same model and data for all three: MNIST-1D (4000 train / 1000 val), MLP 40-256-256-256-10,
AdamW lr 1e-3, batch 128, 30 epochs, validation every epoch, no dropout.
  (a) `train regularizer=none` as a user runs it (a subprocess: Hydra, run folder, checkpoints)
  (b) a minimal loop: tensors in memory, torch.randperm per epoch, slicing
  (c) the same with DataLoader(TensorDataset(...), shuffle=True)
Each is a fresh process; reported: training-loop seconds, whole-process seconds and peak
memory (max RSS), median [min, max] over --repeats runs (at least 5 for figures), and the
ratios of the medians to (b).

The training loop is the same span for every variant: from just before the first training
step to the end of the last validation pass, on time.perf_counter in the training process.
For (a) that is metrics.csv's last `seconds` (fit() starts its clock before the loop and
writes the row after the epoch's validation); summary.json's train_seconds is not used, as it
also spans the end of fit() after the last evaluation.

    python benchmarks/train_speed.py [--repeats 5]
    python benchmarks/train_speed.py --repeats 1 --epochs 1     # a check that it runs
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, LR = 128, 1e-3


def hand_loop(use_dataloader: bool, epochs: int) -> None:
    """(b) and (c), run in a child process; prints its training-loop seconds."""
    import torch
    from torch import nn

    from omegaconf import OmegaConf

    from runner.data import load  # the same cached MNIST-1D split the runner trains on

    cfg = OmegaConf.create({"name": "mnist1d", "n_samples": 6000, "val_size": 1000, "test_size": 1000,
                            "train_size": None, "label_noise": 0.0, "standardize": "feature", "seed": 0})
    d = load(cfg, os.environ.get("RUNNER_DATA_DIR", "~/.cache/runner"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256),
                          nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    if use_dataloader:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(d.x_train, d.y_train), batch_size=BATCH,
                                             shuffle=True, drop_last=True)
    for _ in range(epochs):
        model.train()
        batches = loader if use_dataloader else (
            (d.x_train[i], d.y_train[i]) for i in torch.randperm(len(d.x_train)).split(BATCH) if len(i) == BATCH)
        for xb, yb in batches:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(d.x_val), d.y_val).item()
    print(json.dumps({"loop_seconds": time.perf_counter() - start, "val_loss": val_loss}))


def measure(cmd: list[str], cwd: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    assert os.waitstatus_to_exitcode(status) == 0, cmd
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "out": out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant; 5 or more for figures")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--child", choices=["hand", "dataloader"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return hand_loop(args.child == "dataloader", args.epochs)
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    train = str(Path(sys.executable).with_name("train"))
    subprocess.run([train, "trainer.epochs=1"], cwd=work, check=True, capture_output=True)  # dataset cache
    variants = {
        "(a) train": lambda i: [train, "regularizer=none", "diagnostics=off", f"trainer.epochs={args.epochs}",
                                f"hydra.run.dir=run{i}"],
        "(b) hand loop": lambda i: [sys.executable, __file__, "--child", "hand", "--epochs", str(args.epochs)],
        "(c) DataLoader": lambda i: [sys.executable, __file__, "--child", "dataloader", "--epochs", str(args.epochs)],
    }
    results = {name: [] for name in variants}
    for i in range(args.repeats):  # interleaved, so that drift in the machine's speed hits all alike
        for name, cmd in variants.items():
            r = measure(cmd(i), work)
            r["loop"] = (float((work / f"run{i}" / "metrics.csv").read_text().splitlines()[-1].split(",")[-1])
                         if name.startswith("(a)") else json.loads(r["out"].strip().splitlines()[-1])["loop_seconds"])
            results[name].append(r)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("loop", "wall", "rss_mb")}
           for name, rs in results.items()}
    spread = {name: {k: (min(r[k] for r in rs), max(r[k] for r in rs)) for k in ("loop", "wall")}
              for name, rs in results.items()}
    base = med["(b) hand loop"]
    print(f"median [min, max] of {args.repeats}, {args.epochs} epochs, {os.cpu_count()} cores, torch's default threads")
    print("| variant | training loop (s) | whole process (s) | peak memory (MB) | loop ratio | process ratio | "
          "memory ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, m in med.items():
        lo, hi = spread[name]["loop"]
        wlo, whi = spread[name]["wall"]
        print(f"| {name} | {m['loop']:.2f} [{lo:.2f}, {hi:.2f}] | {m['wall']:.2f} [{wlo:.2f}, {whi:.2f}] | "
              f"{m['rss_mb']:.0f} | {m['loop'] / base['loop']:.2f} | {m['wall'] / base['wall']:.2f} | "
              f"{m['rss_mb'] / base['rss_mb']:.2f} |")
    help_times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([train, "--help"], check=True, capture_output=True)
        help_times.append(time.perf_counter() - start)
    print(f"`train --help`: median {statistics.median(help_times):.2f} s")


if __name__ == "__main__":
    main()
