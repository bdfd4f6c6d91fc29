"""The `train` command as a user runs it: a subprocess started from an unrelated directory."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

TRAIN = str(Path(sys.executable).with_name("train"))
FAST = ["trainer.epochs=1", "data=digits"]


def train(cwd, *args):
    proc = subprocess.run([TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_dirs(root):
    return sorted(p.parent for p in Path(root).glob("**/summary.json"))


def test_default_layout_from_any_directory(tmp_path):
    proc = train(tmp_path, *FAST, "optimizer=adamw", "init=he")
    (run_dir,) = run_dirs(tmp_path / "outputs")
    assert run_dir.parent.parent == tmp_path / "outputs"  # outputs/<date>/<time>/
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")}
    assert files >= {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "metrics.csv",
                     "summary.json", "best.pt", "last.pt", "train.log"}
    config = yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())
    assert config["optimizer"]["_target_"] == "torch.optim.AdamW" and config["init"]["weight"]["_target_"] == \
        "runner.init.he_"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert "test" in proc.stdout and str(run_dir) in proc.stdout.replace("\n", "")


def test_sweep_over_lambda_and_dropout(tmp_path):
    proc = train(tmp_path, "-m", *FAST, "regularizer=l2", "regularizer.lambda=0,1e-3", "regularizer.dropout=0,0.25")
    dirs = run_dirs(tmp_path / "outputs" / "multirun")
    assert [d.name for d in dirs] == ["0", "1", "2", "3"]  # outputs/multirun/<date>/<time>/<job>
    seen = set()
    for d in dirs:
        cfg = yaml.safe_load((d / ".hydra/config.yaml").read_text())["regularizer"]
        seen.add((cfg["penalty"], cfg["lambda"], cfg["dropout"]))
    assert seen == {("l2", lam, p) for lam in (0, 1e-3) for p in (0, 0.25)}
    assert proc.stdout.count("job ") == 4


def test_cfg_job_prints_the_resolved_config(tmp_path):
    proc = train(tmp_path, "--cfg", "job", "optimizer=sgd", "optimizer.lr=0.3")
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["optimizer"]["lr"] == 0.3 and cfg["trainer"]["epochs"] == 30
    assert not (tmp_path / "outputs").exists()
