"""Opt-in (`pytest -m slow`, as root, after `tests/slurm/cluster.sh install`): sweeps through a real
one-node SLURM cluster on localhost with hydra/launcher=submitit_slurm, and vectorized stacks as SLURM
jobs (hydra.launcher.submitit.cluster=slurm). Every step has a timeout."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("slurmctld") or os.geteuid() != 0,
                                 reason="needs root and SLURM's Debian packages (tests/slurm/cluster.sh install)")]
CLUSTER = Path(__file__).parent / "slurm" / "cluster.sh"
TRAIN = str(Path(sys.executable).with_name("train"))
SLURM = ["+launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
         "hydra.launcher.timeout_min=5", "data=digits", "trainer.epochs=2"]


@pytest.fixture(scope="module")
def cluster():
    running = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    subprocess.run([str(CLUSTER), "start"], check=True, capture_output=True, timeout=120)
    yield
    if not running:
        subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=60)


def sweep(tmp_path, *args):
    proc = subprocess.run([TRAIN, "-m", *SLURM, *args, "hydra.sweep.dir=sweep"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    return proc, {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json")}


def test_lambda_by_p_sweep_through_slurm(cluster, tmp_path):
    proc, jobs = sweep(tmp_path, "regularizer=l2", "regularizer.lambda=0,1e-3", "regularizer.dropout=0,0.5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(jobs) == ["0", "1", "2", "3"] and {j["status"] for j in jobs.values()} == {"completed"}
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh"))  # really went through sbatch


def test_data_parallel_job_of_two_slurm_tasks(cluster, tmp_path):
    proc, jobs = sweep(tmp_path, "hydra.launcher.tasks_per_node=2", "trainer.distributed=true", "regularizer=none",
                       "trainer.batch_size=64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert jobs["0"]["world_size"] == 2 and jobs["0"]["ranks_in_sync"] is True


VECTORIZED = ["+launcher=vectorized", "hydra.launcher.submitit.cluster=slurm", "hydra.launcher.submitit.cpus_per_task=1",
              "hydra.launcher.submitit.mem_gb=2", "hydra.launcher.submitit.timeout_min=5", "data=digits",
              "regularizer=none"]


def rows(path: Path) -> list[float]:
    return [float(r["val_loss"]) for r in csv.DictReader(open(path / "metrics.csv"))]


def test_vectorized_stacks_as_a_slurm_job_array(cluster, tmp_path):
    """hydra.launcher.submitit.cluster=slurm, n_jobs=2: the stack of 3 as a job array of 2 through sbatch,
    with the in-process launcher's metrics."""
    grid = ["trainer.epochs=2", "trainer.seed=0,1,2"]
    proc = subprocess.run([TRAIN, "-m", *VECTORIZED, *grid, "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    here = subprocess.run([TRAIN, "-m", *VECTORIZED[:1], *VECTORIZED[5:], *grid, "hydra.sweep.dir=here"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and here.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep" / ".submitit").glob("*_*") if p.is_dir())
    assert len(jobs) == 2 and {j.split("_")[1] for j in jobs} == {"0", "1"}  # tasks 0 and 1 of one array
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh"))  # really went through sbatch
    for j in "012":
        assert json.loads((tmp_path / "sweep" / j / "summary.json").read_text())["status"] == "completed"
        assert rows(tmp_path / "sweep" / j) == pytest.approx(rows(tmp_path / "here" / j), rel=1e-5)


def test_ctrl_c_stops_running_slurm_jobs_and_cancels_pending_ones(cluster, tmp_path):
    """Three jobs of one CPU on the two-CPU node: two run, one waits. Ctrl-C: the running ones save last.pt
    and end interrupted, the pending one is cancelled (its member recorded interrupted, without last.pt);
    the same command then completes all three."""
    grid = [*VECTORIZED, "trainer.epochs=300", "model.width=64", "diagnostics=off", "trainer.seed=0,1,2",
            "hydra.launcher.n_jobs=3", "hydra.sweep.dir=sweep"]
    proc = subprocess.Popen([TRAIN, "-m", *grid], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    metrics = [tmp_path / "sweep" / j / "metrics.csv" for j in "01"]
    deadline = time.time() + 300
    while time.time() < deadline and not all(m.exists() and len(m.read_text().splitlines()) > 3 for m in metrics):
        time.sleep(0.05)
    assert not (tmp_path / "sweep" / "2" / "metrics.csv").exists()  # its job waits for a CPU
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    stopped = {j: json.loads((tmp_path / "sweep" / j / "summary.json").read_text()) for j in "012"}
    assert {stopped[j]["status"] for j in "012"} == {"interrupted"}
    assert (tmp_path / "sweep" / "0" / "last.pt").exists() and (tmp_path / "sweep" / "1" / "last.pt").exists()
    assert "before its submitit job started" in stopped["2"]["stop_reason"]
    again = subprocess.run([TRAIN, "-m", *grid], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("resuming") == 2
    for j in "012":
        assert json.loads((tmp_path / "sweep" / j / "summary.json").read_text())["steps"] == 2700
