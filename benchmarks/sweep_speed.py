"""The vectorized launcher against the basic one (issue: ten seeds should cost about what one does).

1. The 16-job lambda x dropout sweep of the README, whole `train -m` command, basic launcher vs
   +launcher=vectorized: wall seconds (median, min, max of --repeats) and peak memory (the largest
   PSS summed over the command's processes, its workers included), beside a single default run's.
2. A stack of one against an ordinary run: the training loop's seconds (train_seconds), median of
   --repeats, in this process.
3. With CUDA: stacks of 1, 16, 64 and 256 members (seeds) against one ordinary run, wall seconds.

    python benchmarks/sweep_speed.py [--epochs 30] [--repeats 3]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).with_name("train"))
SWEEP = ["regularizer=l2", "regularizer.lambda=0,1e-4,1e-3,1e-2", "regularizer.dropout=0,0.1,0.3,0.5"]
def _tree(root: int) -> list[int]:
    """root and its descendants, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [c for c, p in parents.items() if p == pid]
    return out


def _pss_mb(pids: list[int]) -> float:
    """Proportional set size summed over the processes (MB): each shared page (torch's libraries in
    every worker) counted once in all, so the sum is the memory the command holds."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak memory (MB) of one command: the largest sum over its process tree (the
    launcher and its worker processes) of the processes' PSS, sampled every 50 ms."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _pss_mb(_tree(proc.pid)))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
    return wall, peak


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import runner.train  # noqa: F401  (registers the schemas)

    with initialize_config_module("runner.conf", version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sweep", action="store_true", help="only parts 2 and 3")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep-speed-"))
    epochs = f"trainer.epochs={args.epochs}"
    subprocess.run([TRAIN, epochs, "hydra.run.dir=warm"], cwd=work, capture_output=True, check=True)  # data cached
    if not args.skip_sweep:
        arms = (("basic", []), ("vectorized", ["+launcher=vectorized"]),
                ("vec. 1 proc", ["+launcher=vectorized", "hydra.launcher.n_jobs=1"]))
        rows = {name: ([], []) for name, _ in arms}
        single = []
        for r in range(args.repeats):  # the arms interleaved: a slower spell of a shared host hits each alike
            for name, extra in arms:
                wall, mem = timed([TRAIN, "-m", *extra, *SWEEP, epochs, f"hydra.sweep.dir={name.replace(' ', '')}{r}"],
                                  work)
                rows[name][0].append(wall)
                rows[name][1].append(mem)
            single.append(timed([TRAIN, epochs, f"hydra.run.dir=single{r}"], work))
        print(f"16-job sweep ({args.epochs} epochs), whole command, seconds: median (min, max) of {args.repeats}")
        for name, (walls, mems) in rows.items():
            print(f"  {name:10}  {spread(walls)} s   peak memory {max(mems):.0f} MB")
        speedup = statistics.median(rows["basic"][0]) / statistics.median(rows["vectorized"][0])
        paired = [b / v for b, v in zip(rows["basic"][0], rows["vectorized"][0])]
        print(f"  speed-up {speedup:.2f}x (of medians; repeat by repeat {', '.join(f'{x:.2f}' for x in paired)}); "
              f"one default run: {spread([w for w, _ in single])} s, "
              f"peak memory {max(m for _, m in single):.0f} MB "
              f"(vectorized / single: {max(rows['vectorized'][1]) / max(m for _, m in single):.2f}x)")

    import torch

    from runner.run import run
    from runner.vectorized import train_stack

    plain, stacked = [], []
    for r in range(args.repeats):
        plain.append(run(compose(epochs), work / f"plain{r}")["train_seconds"])
        member = {"cfg": compose(epochs), "run_dir": work / f"one{r}", "meta": None, "resume": False}
        stacked.append(train_stack([member])[0]["train_seconds"])
    print(f"training loop, default run: ordinary {spread(plain)} s, stack of one {spread(stacked)} s "
          f"({statistics.median(stacked) / statistics.median(plain):.2f}x)")

    if torch.cuda.is_available():
        one = run(compose(epochs), work / "gpu-plain")["wall_seconds"]
        print(f"GPU ({torch.cuda.get_device_name()}): one ordinary run {one:.1f} s wall")
        for k in (1, 16, 64, 256):
            members = [{"cfg": compose(epochs, f"trainer.seed={s}"), "run_dir": work / f"gpu{k}" / str(s),
                        "meta": None, "resume": False} for s in range(k)]
            start = time.perf_counter()
            train_stack(members)
            wall = time.perf_counter() - start
            print(f"  stack of {k:3}: {wall:.1f} s ({wall / one:.2f}x one run)")
    else:
        print("no CUDA device: the GPU part did not run")


if __name__ == "__main__":
    main()
