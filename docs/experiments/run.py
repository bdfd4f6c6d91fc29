"""Re-run the experiments of docs/experiments.md and write their reports into docs/experiments/<name>/.

Each conf/experiment/<name>.yaml names its report options on a line `# train -m +experiment=<name>; report ...
<options>`. This runs that sweep with the vectorized launcher into --runs/<name> (run folders are not
committed: checkpoints), then `report` with those options into docs/experiments/<name>/ (tables, plots),
and prints each experiment's wall time. A finished sweep is skipped job by job on a re-run (the runner's
own rule), so an interrupted campaign resumes.

    python docs/experiments/run.py [NAME ...] [--runs sweeps] [--threads 2] [--report-only]
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def report_options(name: str) -> list[str]:
    text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
    found = re.search(rf"^# train -m \+experiment={name}(?:; report \.\.\.(.*))?$", text, re.M)
    if not found:
        raise SystemExit(f"conf/experiment/{name}.yaml has no '# train -m +experiment={name}[; report ...]' line")
    return shlex.split(found.group(1) or "")


def main():
    names = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", help=f"experiments (default: all): {' '.join(names)}")
    parser.add_argument("--runs", default="sweeps", help="folder for the run folders")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the whole sweep (default: all)")
    parser.add_argument("--report-only", action="store_true", help="only re-write the reports of finished sweeps")
    args = parser.parse_args()
    failed = 0
    for name in args.names or names:
        if name not in names:
            raise SystemExit(f"no experiment {name!r}; experiments: {' '.join(names)}")
        sweep = Path(args.runs) / name
        env = os.environ | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
        start = time.perf_counter()
        if not args.report_only:
            subprocess.run([BIN / "train", "-m", f"+experiment={name}", "+launcher=vectorized",
                            f"hydra.sweep.dir={sweep}"], check=False, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        out = ROOT / "docs" / "experiments" / name
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run([BIN / "report", str(sweep), "--out", str(out), *report_options(name)],
                              stdout=subprocess.DEVNULL)
        print(f"{name}: {wall:.0f} s -> {out}" if done.returncode == 0 else
              f"{name}: {wall:.0f} s; report failed (exit {done.returncode}), see above", flush=True)
        failed += done.returncode != 0


    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
