"""Opt-in (`pytest -m slow`, as root, after `tests/slurm/cluster.sh install`): sweeps through a real
one-node SLURM cluster on localhost with hydra/launcher=submitit_slurm. Every step has a timeout."""

import json
import os
import shutil
import subprocess
import sys
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
