"""Every `train` and `report` command in README.md's bash blocks runs, with a tiny budget, so that
the README cannot drift from the code. Commands are found by parsing the README, so sections other
people add are covered too.

The budget: trainer.epochs=1, data=digits unless the command picks its data, and sweeps cut to the
first 2 values of each swept key (an Optuna search to 2 trials). `report` commands run on the README's own lambda x p sweep (their
`outputs/multirun/<date>/<time>` stands for it). Skipped only where unavoidable: a SLURM cluster,
an extra the test extra does not install (ray)."""

import re
import shlex
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent
SWEEP_PATH = re.compile(r"outputs/multirun/[^\s]+")


def commands() -> list[str]:
    """`train ...` and `report ...` lines of the README's bash blocks, comments removed."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.split(" ", 1)[0] in ("train", "report"):
                out.append(line)
    return out


def tiny(command: str) -> list[str]:
    """The command with a tiny budget, as argv."""
    args = [a for a in shlex.split(command) if a != "..."]
    if args[0] == "report":
        return args
    if "-m" in args:  # at most 2 values per swept key (a choice(...) or range(...) sweep stays as it is)
        args = [a if "=" not in a or "(" in a else f"{a.split('=', 1)[0]}={','.join(a.split('=', 1)[1].split(',')[:2])}"
                for a in args]
    args = [f"hydra.sweeper.n_trials={min(int(a.split('=')[1]), 2)}" if a.startswith("hydra.sweeper.n_trials=") else a
            for a in args]  # an Optuna search: 2 trials
    if not any(a.startswith("data=") for a in args):
        args.append("data=digits")
    values = dict(a.split("=", 1) for a in args if "=" in a)
    epochs = int(float(values["schedule.warmup"])) + 1 if values.get("schedule.warmup_unit") == "epochs" else 1
    return [*args, f"trainer.epochs={epochs}"]  # warmup in epochs must be shorter than training


def skip_reason(command: str) -> str | None:
    if "data=cifar10" in command or "data.path=" in command:
        return "needs data files: tests/test_images_cli.py runs it beside the files it writes"
    if "submitit_slurm" in command or "submitit.cluster=slurm" in command:
        return "needs a SLURM cluster (tests/slurm/cluster.sh; pytest -m slow)"
    if "+launcher=ray" in command and find_spec("hydra_plugins.hydra_ray_launcher") is None:
        return "the ray extra is not installed (not in the test extra: 240 MB)"
    return None


def test_the_readme_shows_train_and_report_commands():
    found = commands()
    assert sum(c.startswith("train ") for c in found) >= 10 and sum(c.startswith("report ") for c in found) >= 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("command", [c for c in commands() if c.startswith("train ")])
def test_train_command(command, workdir):
    if reason := skip_reason(command):
        pytest.skip(reason)
    args = tiny(command)
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), f"{' '.join(args)}\n{proc.stderr[-3000:]}"  # 3: a run diverged, as some show


@pytest.fixture(scope="module")
def lambda_sweep(workdir):
    """The README's lambda x p sweep (its first command), tiny."""
    sweep = next(c for c in commands() if c.startswith("train -m regularizer=l2 regularizer.lambda="))
    args = tiny(sweep)
    subprocess.run([str(BIN / "train"), *args[1:], "hydra.sweep.dir=lambda_sweep"], cwd=workdir, check=True,
                   capture_output=True, timeout=600)
    return workdir / "lambda_sweep"


@pytest.mark.parametrize("command", [c for c in commands() if c.startswith("report ")])
def test_report_command(command, lambda_sweep, tmp_path):
    args = [SWEEP_PATH.sub(str(lambda_sweep), a) for a in tiny(command)]
    proc = subprocess.run([str(BIN / "report"), *args[1:], "--out", str(tmp_path / "out")], cwd=lambda_sweep.parent,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "out" / "report.md").exists()
