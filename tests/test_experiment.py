"""conf/experiment: every file composes and its sweep expands to the expected number of jobs,
with at least 5 seeds per arm; one job of every experiment runs with a tiny budget; one small
experiment runs end to end."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF

EXPECTED_JOBS = {  # arms x lrs x seeds, counted from each experiment's description
    "init_symmetry": 5 * 10, "xavier_vs_he": 2 * 2 * 4 * 5, "activations_depth": 3 * 4 * 5, "optimizers": 7 * 3 * 5,
    "adam_l2_vs_adamw": 2 * 4 * 2 * 5, "dropout_lambda": 4 * 3 * 5, "norm_lr": 3 * 3 * 5,
    "residual_depth": 2 * 2 * 2 * 5, "schedules": 4 * 3 * 5, "warmup": 2 * 2 * 5, "early_stopping": 2 * 2 * 5,
    "clipping": 3 * 3 * 5, "mnist1d_models": 4 * 5, "batch_size_lr": 3 * 3 * 5, "l1_sparsity": 2 * 3 * 5,
    "augmentation": 3 * 5,
}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def sweep(name):
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser

    import runner.train  # noqa: F401

    with initialize_config_module("runner.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"+experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    sizes = {o.key_or_group: len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in overrides}
    return cfg, sizes


def test_every_experiment_has_an_expected_size():
    assert sorted(EXPECTED_JOBS) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_expands(name):
    cfg, sizes = sweep(name)
    assert math.prod(sizes.values()) == EXPECTED_JOBS[name]
    assert sizes["trainer.seed"] >= 5
    assert cfg.trainer.epochs >= 1 and "Claim" in (CONF / "experiment" / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_one_job_of_every_experiment_runs(name, tmp_path):
    """The sweep's first job (the first value of every swept key), as `train -m` would run it, with a tiny
    budget: 1 epoch on 256 training samples."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict

    from runner.run import run

    cfg, _ = sweep(name)
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    first = [f"{o.key_or_group}={next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.value()}"
             for o in parsed]
    tiny = ["trainer.epochs=1", "data.train_size=256", "trainer.batch_size=64"]
    with initialize_config_module("runner.conf", version_base="1.3"):
        job = compose("train", overrides=[f"+experiment={name}", *first, *tiny], return_hydra_config=True)
    HydraConfig.instance().set_config(job)  # the experiments may read hydra:runtime.choices
    try:
        with open_dict(job):
            del job["hydra"]
        summary = run(job, tmp_path)
    finally:
        HydraConfig.instance().cfg = None  # as outside a Hydra job, for the tests that follow
    assert summary["status"] in ("completed", "diverged"), summary.get("stop_reason")
    assert summary["steps"] == 4  # 256 // 64: the tiny budget was applied, not the experiment's own


def test_one_experiment_end_to_end(tmp_path):
    train = str(Path(sys.executable).with_name("train"))
    proc = subprocess.run([train, "-m", "+experiment=clipping", "trainer.epochs=1", "data=digits",
                           "optimizer.lr=0.05", "trainer.seed=0,1,2", "hydra.sweep.dir=sweep"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stderr  # 3: a diverged arm is a result, not an error
    assert len(list((tmp_path / "sweep").glob("*/summary.json"))) == 9
    from runner.report import report

    res = report([tmp_path / "sweep"], plots=False)
    assert "clip" in res["keys"]
    assert sorted(res["groups"]["runs"]) == [3, 3, 3]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_report_line_of_every_experiment_names_swept_keys(name):
    """docs/experiments/run.py reports each experiment with the options on its `# train -m ...; report ...` line:
    they parse as report's own options, and every key they name is one the sweep varies."""
    import importlib.util

    from runner.report import _parser

    spec = importlib.util.spec_from_file_location("campaign", CONF.parent / "docs" / "experiments" / "run.py")
    campaign = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(campaign)
    options = _parser().parse_args(["sweep", *campaign.report_options(name)])
    _, sizes = sweep(name)
    varying = {k for k, n in sizes.items() if n > 1}
    named = [options.rows, options.cols, options.best_of, *(b.split("=")[0] for b in options.baseline or [])]
    assert {k for k in named if k} <= varying
