"""How long `report` takes on 1,000 run folders (goal: under 5 s on a 2-core machine).

Trains one real run, copies its folder 1,000 times into a 10 lambda x 10 dropout x 10 seed
sweep (configs, summaries and metrics.csv rewritten per copy), then times the whole `report`
process, plots included, as the median of --repeats runs.

    python benchmarks/report_speed.py [--runs 1000] [--repeats 3]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the fabricated sweep (for profiling)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="report-bench-"))
    subprocess.run([BIN / "train", "trainer.epochs=30", "data=digits", "hydra.run.dir=template"], cwd=work,
                   check=True, capture_output=True)
    template, sweep = work / "template", work / "sweep"
    config = yaml.safe_load((template / ".hydra/config.yaml").read_text())
    summary = json.loads((template / "summary.json").read_text())
    side = round(args.runs ** (1 / 3))
    for job in range(args.runs):
        lam, p, seed = 10.0 ** -(job // side**2 % side), job // side % side / side, job % side
        d = sweep / str(job)
        shutil.copytree(template, d, ignore=shutil.ignore_patterns("*.pt"))
        config["regularizer"] |= {"lambda": lam, "dropout": p}
        config["trainer"]["seed"] = seed
        (d / ".hydra/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (d / "summary.json").write_text(json.dumps(summary | {"test_acc": 0.9 - p / 10 + seed / 1000, "config": config}))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([BIN / "report", str(sweep), "--rows", "regularizer.lambda", "--cols", "regularizer.dropout"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    print(f"report on {args.runs} run folders: median {statistics.median(times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)})")
    shutil.rmtree(work) if not args.keep else print(f"kept {sweep}")


if __name__ == "__main__":
    main()
