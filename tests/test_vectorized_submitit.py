"""hydra.launcher.submitit (hydra_plugins.runner_launcher): each share of a stack as one submitit job,
through a real submitit local executor (the jobs are processes on this machine, run the way SLURM runs
them). SLURM itself: tests/test_slurm.py (opt-in, needs a cluster)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from submitit.core.utils import DelayedSubmission, pickle_load

TRAIN = str(Path(sys.executable).with_name("train"))
GRID = ["+launcher=vectorized", "data=digits", "trainer.epochs=2", "regularizer=none", "trainer.seed=0,1,2"]
LOCAL = ["hydra.launcher.submitit.cluster=local"]


def sweep(cwd: Path, *args, timeout=300, **kwargs):
    return subprocess.run([TRAIN, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


def rows(path: Path) -> list[dict]:
    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(path / "metrics.csv"))]


def summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def submitted(sweep_dir: Path) -> dict[str, list[int]]:
    """Each submitit job's folder name (its id) -> the job numbers of the members it was given."""
    return {pkl.parent.name: [m["num"] for m in DelayedSubmission.load(pkl).args[0]]
            for pkl in (sweep_dir / ".submitit").glob("*/*_submitted.pkl")}


def test_a_submitit_sweep_equals_the_default_launcher(tmp_path):
    """n_jobs=2: the stack of 3 as two submitit jobs (2 + 1 members); every member's folder is what the
    default launcher writes, with the same metrics (dropout 0; float32: rel 1e-5)."""
    jobs = sweep(tmp_path, *GRID, *LOCAL, "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sub")
    default = sweep(tmp_path, *GRID, "hydra.sweep.dir=default")
    assert jobs.returncode == 0 and default.returncode == 0, jobs.stderr[-2000:]
    assert sorted(submitted(tmp_path / "sub").values()) == [[0, 1], [2]]
    for job in submitted(tmp_path / "sub"):  # each job ran and returned its members' statuses
        folder = tmp_path / "sub" / ".submitit" / job
        outcome, statuses = pickle_load(folder / f"{job}_0_result.pkl")
        assert outcome == "success" and set(statuses) == {"completed"}
        assert "completed after 2.0 epochs" in (folder / f"{job}_0_log.err").read_text()
    assert sorted(p.name for p in (tmp_path / "sub" / ".submitit").iterdir()) == sorted(submitted(tmp_path / "sub"))
    assert jobs.stdout.count("completed, test_acc=") == 3 and "submitit (local): 2 jobs (2 + 1 members)" in jobs.stdout
    for j in "012":
        a, b = tmp_path / "sub" / j, tmp_path / "default" / j
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        assert len(rows(a)) == len(rows(b)) == 2
        for ra, rb in zip(rows(a), rows(b)):
            for key in ("train_loss", "val_loss", "val_acc", "grad_norm"):
                assert ra[key] == pytest.approx(rb[key], rel=1e-5), (j, key)
        sa, sb = summary(a), summary(b)
        assert sa["status"] == "completed" and sa["test_loss"] == pytest.approx(sb["test_loss"], rel=1e-5)
        assert sa["threads"] == max(1, torch.get_num_threads() // 2)  # a job's share of this machine's threads
        assert "completed after 2.0 epochs" in (a / "train.log").read_text()


def test_a_stack_of_one_is_a_job_and_a_job_that_fits_no_stack_runs_here(tmp_path):
    """augment=noise fits no stack: that job trains in the launching process; the other, a stack of
    one, is a submitit job of its own."""
    proc = sweep(tmp_path, "+launcher=vectorized", *LOCAL, "data=digits", "trainer.epochs=1", "augment=none,noise",
                 "hydra.sweep.dir=s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(submitted(tmp_path / "s").values()) == [[0]]
    assert summary(tmp_path / "s" / "0")["status"] == summary(tmp_path / "s" / "1")["status"] == "completed"


@pytest.mark.parametrize("args, message", [
    (["hydra.launcher.submitit.cluster=lsf"],
     "hydra.launcher.submitit.cluster='lsf': must be one of local, slurm, or null"),
    (["hydra.launcher.submitit.gpus=1"],
     "hydra.launcher.submitit has no key 'gpus'; the keys are cluster, folder, timeout_min, gpus_per_node"),
    ([*LOCAL, "+hydra.launcher.submitit.account=x"], "hydra.launcher.submitit has no key 'account'"),
    ([*LOCAL, "hydra.launcher.submitit.timeout_min=0"],
     "hydra.launcher.submitit.timeout_min=0: must be a whole number >= 1"),
    ([*LOCAL, "hydra.launcher.submitit.array_parallelism=0"],
     "hydra.launcher.submitit.array_parallelism=0: must be a whole number >= 1, or null"),
    (["hydra.launcher.submitit.cluster=slurm"], "hydra.launcher.submitit.cluster=slurm: SLURM's sbatch and srun are "
                                                "not on PATH"),
], ids=["cluster", "unknown_key", "unknown_key_added", "timeout", "parallelism", "slurm_without_slurm"])
def test_bad_submitit_settings_are_refused_before_any_job(tmp_path, args, message):
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "sbatch").exists())
    proc = sweep(tmp_path, "+launcher=vectorized", *args, "data=digits", "trainer.seed=0,1", "hydra.sweep.dir=s",
                 env={**os.environ, "PATH": path})  # as on a machine without SLURM
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert not list(tmp_path.rglob("summary.json")) and not list(tmp_path.rglob(".submitit"))


def test_a_failing_job_records_its_members_and_the_other_job_completes(tmp_path):
    """The first member's data folder is a file: its job (members 0 and 1, whose data is loaded from the
    first member's folder) raises, train_stack records both failed, the launcher shows the job's error;
    the job of member 2 completes."""
    (tmp_path / "not_a_folder").write_text("")
    proc = sweep(tmp_path, "+launcher=vectorized", *LOCAL, "hydra.launcher.n_jobs=2", "data=mnist1d",
                 "data.n_samples=4000", "trainer.epochs=1", "regularizer=none",
                 f"paths.data_dir={tmp_path}/not_a_folder/cache,{tmp_path}/d1,{tmp_path}/d2", "hydra.sweep.dir=s")
    assert proc.returncode == 1
    assert [summary(tmp_path / "s" / j)["status"] for j in "012"] == ["failed", "failed", "completed"]
    assert summary(tmp_path / "s" / "1")["stop_reason"].startswith("NotADirectoryError")
    [job] = [job for job, nums in submitted(tmp_path / "s").items() if nums == [0, 1]]
    assert f"submitit job {job} failed: NotADirectoryError" in proc.stdout
    assert "NotADirectoryError" in (tmp_path / "s" / "0" / "error.txt").read_text()


def test_a_killed_job_leaves_its_members_failed_and_the_same_command_retrains_them(tmp_path):
    """The job training member 2 is killed (SIGKILL) once it trains: it writes no summary, so the launcher
    records member 2 failed with the job's id and log; members 0 and 1 (the other job) complete, and
    the same command again skips them and trains member 2."""
    grid = [*GRID[:2], "trainer.epochs=30", *GRID[3:], *LOCAL, "hydra.launcher.n_jobs=2", "hydra.sweep.dir=s"]
    proc = subprocess.Popen([TRAIN, "-m", *grid], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline, job = time.time() + 300, None
    while time.time() < deadline and not (job and (tmp_path / "s" / "2" / "metrics.csv").exists()):
        job = next((j for j, nums in submitted(tmp_path / "s").items() if nums == [2]), None)
        time.sleep(0.02)
    assert not (tmp_path / "s" / "2" / "summary.json").exists()  # it is training
    [task] = Path(f"/proc/{job}/task/{job}/children").read_text().split()  # submitit's process for the job: its task
    os.kill(int(task), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    assert [summary(tmp_path / "s" / j)["status"] for j in "012"] == ["completed", "completed", "failed"]
    reason = summary(tmp_path / "s" / "2")["stop_reason"]
    assert reason.startswith(f"RuntimeError: submitit job {job} ended without a result") and f"{job}_0_log.err" in reason
    assert (tmp_path / "s" / "2" / "error.txt").exists() and f"submitit job {job} ended without a result" in out
    again = sweep(tmp_path, *grid)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") == 2 and summary(tmp_path / "s" / "2")["status"] == "completed"
    assert len(submitted(tmp_path / "s")) == 3


def test_ctrl_c_stops_the_jobs_which_save_last_pt_and_the_sweep_resumes(tmp_path):
    """Ctrl-C at the terminal (SIGINT to the launcher's whole process group): the jobs, in process groups of
    their own, stop after their current step through the launcher's stop file and save last.pt; the same
    command resumes them to the metrics of an uninterrupted sweep (the default launcher's)."""
    grid = ["+launcher=vectorized", "data=digits", "trainer.epochs=40", "regularizer=none", "model.width=64",
            "trainer.seed=0,1,2", "diagnostics=off"]
    ref = sweep(tmp_path, *grid, "hydra.sweep.dir=ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    cut = [*grid, *LOCAL, "hydra.launcher.n_jobs=2", "hydra.sweep.dir=cut"]
    proc = subprocess.Popen([TRAIN, "-m", *cut], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = [tmp_path / "cut" / j / "metrics.csv" for j in "012"]
    deadline = time.time() + 300
    while time.time() < deadline and not all(m.exists() and len(m.read_text().splitlines()) > 3 for m in metrics):
        time.sleep(0.05)  # every member trains
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    stopped = {j: summary(tmp_path / "cut" / j) for j in "012"}
    # a share that trains fewer members can finish its 40 epochs before the slower one has 3 rows: completed
    assert "interrupted" in {s["status"] for s in stopped.values()} <= {"interrupted", "completed"}
    assert all((tmp_path / "cut" / j / "last.pt").exists() for j in "012")
    assert not list((tmp_path / "cut" / ".submitit").glob("stop-*"))
    again = sweep(tmp_path, *cut)
    assert again.returncode == 0, again.stderr[-2000:]
    for j in "012":
        done, full = summary(tmp_path / "cut" / j), summary(tmp_path / "ref" / j)
        assert done["status"] == "completed" and done["steps"] == full["steps"] >= stopped[j]["steps"]
        assert done["test_loss"] == pytest.approx(full["test_loss"], rel=1e-5)
        assert [r["val_loss"] for r in rows(tmp_path / "cut" / j)] == \
            pytest.approx([r["val_loss"] for r in rows(tmp_path / "ref" / j)], rel=1e-5)
