"""conf/experiment: every file composes and its sweep expands to the expected number of jobs,
with at least 3 seeds per arm; one small experiment runs end to end."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF

EXPECTED_JOBS = {  # arms x seeds, counted from each experiment's description
    "init_symmetry": 5 * 3, "xavier_vs_he": 2 * 2 * 3, "activations_depth": 3 * 3, "optimizers": 7 * 3,
    "adam_l2_vs_adamw": 2 * 4 * 3, "dropout_lambda": 3 * 3 * 3, "norm_lr": 3 * 3 * 3, "residual_depth": 2 * 3 * 3,
    "schedule_warmup": 4 * 2 * 3, "early_stopping": 3 * 2 * 3, "clipping": 3 * 3, "mnist1d_models": 3 * 3,
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
    assert sizes["trainer.seed"] >= 3
    assert cfg.trainer.epochs >= 1 and "Claim" in (CONF / "experiment" / f"{name}.yaml").read_text()


def test_one_experiment_end_to_end(tmp_path):
    train = str(Path(sys.executable).with_name("train"))
    proc = subprocess.run([train, "-m", "+experiment=clipping", "trainer.epochs=1", "data=digits",
                           "hydra.sweep.dir=sweep"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stderr  # 3: a diverged arm is a result, not an error
    assert len(list((tmp_path / "sweep").glob("*/summary.json"))) == 9
    from runner.report import report

    res = report([tmp_path / "sweep"], plots=False)
    assert "clip" in res["keys"]
    assert sorted(res["groups"]["runs"]) == [3, 3, 3]
