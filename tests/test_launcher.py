"""Sweeps under Hydra's real launchers and the Optuna sweeper (conf/launcher, conf/search): every
job's folder is complete, `report` reads them, and a diverged trial does not end the study."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.report import load_runs

TRAIN = str(Path(sys.executable).with_name("train"))
GRID = ["data=digits", "trainer.epochs=2", "regularizer=l2", "regularizer.lambda=0,1e-3", "regularizer.dropout=0,0.5"]


def sweep(tmp_path, *args):
    proc = subprocess.run([TRAIN, "-m", *args, "hydra.sweep.dir=sweep"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    return proc, {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json")}


@pytest.mark.parametrize("launcher", [["+launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["+launcher=submitit_local", "hydra.sweeper.max_batch_size=2"]],
                         ids=["joblib", "submitit_local"])
def test_lambda_by_p_sweep_under_a_parallel_launcher(tmp_path, launcher):
    proc, jobs = sweep(tmp_path, *launcher, *GRID)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(jobs) == ["0", "1", "2", "3"] and {j["status"] for j in jobs.values()} == {"completed"}
    assert {(j["config"]["regularizer"]["lambda"], j["config"]["regularizer"]["dropout"]) for j in jobs.values()} == \
        {(lam, p) for lam in (0, 1e-3) for p in (0, 0.5)}
    assert {j["config"]["trainer"]["num_threads"] for j in jobs.values()} == {1}  # cores split between jobs
    assert len(load_runs(tmp_path / "sweep")) == 4
    assert "sweep: 4 of 4 jobs completed" in proc.stderr


def test_optuna_study_survives_a_diverged_trial(tmp_path):
    """Trial lr is 1e-3 or 1e12; with this seed one of the 4 trials draws 1e12 and diverges before any
    evaluation, so it has no value to return: Optuna records it as failed and the study completes."""
    proc, jobs = sweep(tmp_path, "+search=lr_lambda_p", "hydra.sweeper.sampler.seed=2", "hydra.sweeper.n_trials=4",
                       "data=digits", "trainer.epochs=2", "optimizer.lr=choice(0.001,1e12)")
    statuses = sorted(j["status"] for j in jobs.values())
    assert statuses == ["completed", "completed", "completed", "diverged"]
    assert proc.returncode == 3  # a diverged trial, nothing worse
    assert proc.stdout.count("Failed experiment") + proc.stderr.count("Failed experiment") == 1
    results = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    best = min(j["best_value"] for j in jobs.values() if j["best_value"] is not None)
    assert f"best_value: {best}" in results


@pytest.mark.slow
def test_sweep_on_ray(tmp_path):
    """Opt-in (`pytest -m slow`) with the ray extra installed."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the optional ray extra is not installed")
    proc, jobs = sweep(tmp_path, "+launcher=ray", *GRID)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {j["status"] for j in jobs.values()} == {"completed"} and len(jobs) == 4


@pytest.mark.parametrize("launcher", [["+launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["+launcher=submitit_local", "hydra.sweeper.max_batch_size=2"]],
                         ids=["joblib", "submitit_local"])
def test_a_failing_job_is_recorded_and_the_others_complete(tmp_path, launcher):
    """Job 1 cannot write its dataset cache (its data_dir lies under a file)."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    proc, jobs = sweep(tmp_path, *launcher, "trainer.epochs=1", "data.n_samples=1000", "data.val_size=200",
                       "data.test_size=200", f"paths.data_dir={tmp_path / 'cache'},{tmp_path / 'blocker' / 'cache'}")
    assert {n: j["status"] for n, j in jobs.items()} == {"0": "completed", "1": "failed"}
    assert "Traceback" in (tmp_path / "sweep" / "1" / "error.txt").read_text()
    assert proc.returncode == 1 and "job 1: failed" in proc.stderr


def test_a_killed_job_loses_nothing_else_and_reruns_alone(tmp_path):
    """SIGKILL one of three submitit jobs mid-training: the other two finish and keep their folders;
    the same command again trains only the killed job."""
    import os
    import signal
    import time

    args = [TRAIN, "-m", "+launcher=submitit_local", "hydra.sweeper.max_batch_size=3", "data=digits",
            "trainer.epochs=150", "trainer.seed=0,1,2", "hydra.sweep.dir=sweep"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "sweep" / "1" / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.1)
    jobs = []  # (submitit job id, pid) of this sweep's job processes; job ids follow the submission order
    for pid in subprocess.run(["pgrep", "-f", "submitit.core._submit"], capture_output=True, text=True).stdout.split():
        env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
        if str(tmp_path) in env.get("SUBMITIT_LOCAL_COMMAND", ""):
            jobs.append((int(env["SUBMITIT_LOCAL_JOB_ID"]), int(pid)))
    assert len(jobs) == 3
    os.kill(sorted(jobs)[1][1], signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    finished = {p.parent.name: p.read_text() for p in (tmp_path / "sweep").glob("*/summary.json")}
    assert sorted(finished) == ["0", "2"]
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    after = {p.parent.name: p.read_text() for p in (tmp_path / "sweep").glob("*/summary.json")}
    assert sorted(after) == ["0", "1", "2"] and all(after[j] == finished[j] for j in finished)  # 0, 2 not retrained


def _descendants(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for c in map(int, children):
            out |= {c, *_descendants(c)}
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_item8_kill_9_of_a_joblib_sweep_leaves_no_orphans(tmp_path):
    """kill -9 of `train -m +launcher=joblib`: its loky workers notice, save last.pt and exit."""
    import os
    import signal
    import time

    proc = subprocess.Popen([TRAIN, "-m", "+launcher=joblib", "hydra.launcher.n_jobs=2", "data=digits",
                             "trainer.epochs=500", "trainer.seed=0,1", "hydra.sweep.dir=sweep"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = [tmp_path / "sweep" / j / "metrics.csv" for j in "01"]
    deadline = time.time() + 240
    while not all(m.exists() for m in metrics) and time.time() < deadline:
        time.sleep(0.1)
    workers = _descendants(proc.pid)
    assert workers and all(m.exists() for m in metrics)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)]
    for j in "01":  # each job stopped as after SIGTERM: resumable
        summary = json.loads((tmp_path / "sweep" / j / "summary.json").read_text())
        assert summary["status"] == "interrupted" and (tmp_path / "sweep" / j / "last.pt").exists()


def test_item18_a_missing_launcher_plugin_names_the_extra(monkeypatch, capsys):
    """hydra-ray-launcher is not in the test extra: +launcher=ray says which extra installs it."""
    from importlib.util import find_spec

    from runner import train

    if find_spec("hydra_plugins.hydra_ray_launcher") is not None:
        pytest.skip("the ray extra is installed here")
    monkeypatch.setattr(sys, "argv", ["train", "-m", "+launcher=ray", "trainer.epochs=1"])
    assert train.cli() == 2
    assert 'pip install -e ".[ray]"' in capsys.readouterr().err
    assert train.missing_plugin(["+launcher=joblib"]) is None  # installed by the test extra
