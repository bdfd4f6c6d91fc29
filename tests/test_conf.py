"""Every option file of every config group composes and trains a few steps. A new YAML file is
picked up here without anyone adding a line."""

import json

import pytest
from conftest import CONF

from runner.run import run

OPTIONS = sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml") if p.parent.name != "experiment")
# conf/experiment holds sweeps, not options: tests/test_experiment.py expands them.


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert groups == {"optimizer", "init", "norm", "regularizer", "schedule", "early_stopping", "clip", "model", "data",
                      "diagnostics", "lr_find"}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_trains(make_cfg, tmp_path, group, option):
    cfg = make_cfg(f"{group}={option}", "trainer.epochs=1")
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed", summary["stop_reason"]
    assert summary["steps"] > 0
    assert {p.name for p in tmp_path.iterdir()} >= {"metrics.csv", "summary.json", "last.pt", "best.pt"}
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 1.0
