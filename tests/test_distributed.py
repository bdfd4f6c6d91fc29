"""Data-parallel training of one run: torchrun with 2 processes on gloo (CPU)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["data=digits", "trainer.epochs=3", "regularizer=none", "trainer.batch_size=64"]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, make_cfg):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "runner.train",
                           "trainer.distributed=true", *ARGS], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary_path,) = (tmp_path / "outputs").glob("*/*/summary.json")  # one run folder: rank 0's
    ddp = json.loads(summary_path.read_text())
    assert ddp["world_size"] == 2 and ddp["ranks_in_sync"] is True

    from runner.run import run

    single = run(make_cfg(*ARGS, small=False), tmp_path / "single")
    for key in ("train_loss", "val_loss", "test_loss", "test_acc"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-4), key
    rows = [list(csv.DictReader(open(d / "metrics.csv"))) for d in (summary_path.parent, tmp_path / "single")]
    assert [float(r["train_loss"]) for r in rows[0]] == pytest.approx([float(r["train_loss"]) for r in rows[1]],
                                                                        rel=1e-4)


def test_distributed_outside_torchrun_is_a_config_error(make_cfg, tmp_path, monkeypatch):
    from runner.check import ConfigError
    from runner.run import run

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="trainer.distributed=true: start it with torchrun"):
        run(make_cfg("trainer.distributed=true"), tmp_path)
