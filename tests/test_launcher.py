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
