"""The `train` command as a user runs it: a subprocess started from an unrelated directory."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
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


def summaries(root):
    return {d.name: json.loads((d / "summary.json").read_text()) for d in run_dirs(root)}


def test_diverged_and_failed_jobs_are_recorded_and_the_sweep_goes_on(tmp_path):
    """Job 1 cannot write its dataset cache (its data_dir lies under a file), job 2 diverges."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    ok = tmp_path / "cache"
    proc = subprocess.run([TRAIN, "-m", "trainer.epochs=2", "data.n_samples=1000", "data.val_size=200",
                           "data.test_size=200", "init=normal", "init.weight.std=3",
                           f"paths.data_dir={ok},{tmp_path / 'blocker' / 'cache'}", "optimizer.lr=0.001,1e12",
                           "hydra.sweep.dir=sweep"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    jobs = summaries(tmp_path / "sweep")
    status = {n: s["status"] for n, s in jobs.items()}
    assert status == {"0": "completed", "1": "diverged", "2": "failed", "3": "failed"}
    assert proc.returncode == 1  # failed outranks diverged
    assert "NotADirectoryError" in jobs["2"]["stop_reason"]
    assert "Traceback" in (tmp_path / "sweep" / "2" / "error.txt").read_text()
    assert jobs["1"]["stop_reason"].startswith("diverged: non-finite loss at step")
    assert "job 2: failed" in proc.stderr and "sweep: 2 of 4 jobs completed" not in proc.stderr
    assert "sweep: 1 of 4 jobs completed" in proc.stderr

    # the same command again: the finished jobs are skipped, the failed ones run again (and fail again)
    again = subprocess.run(proc.args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.stdout.count("skipped") == 2 and again.returncode == 1
    assert summaries(tmp_path / "sweep")["0"] == jobs["0"]
    (tmp_path / "blocker").unlink()
    third = subprocess.run(proc.args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert third.stdout.count("skipped") == 2 and "sweep: 2 of 4 jobs completed" in third.stderr
    assert {n: s["status"] for n, s in summaries(tmp_path / "sweep").items()} == \
        {"0": "completed", "1": "diverged", "2": "completed", "3": "diverged"}
    assert third.returncode == 3


def test_diverged_single_run_exit_code(tmp_path):
    proc = subprocess.run([TRAIN, *FAST, "optimizer.lr=1e12", "init=normal", "init.weight.std=3"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3
    (summary,) = summaries(tmp_path / "outputs").values()
    assert summary["status"] == "diverged" and summary["steps"] >= 1


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    """SIGINT mid-epoch, then the same command in the same folder: metrics.csv and summary equal
    an uninterrupted run's (CPU, exactly), through dropout, plateau, lookahead and early stopping."""
    import signal
    import time

    args = ["data=digits", "trainer.epochs=60", "regularizer.dropout=0.3", "schedule=plateau", "schedule.patience=2",
            "lookahead.k=3", "early_stopping=patience", "early_stopping.patience=1000", "trainer.batch_size=50"]
    whole = subprocess.Popen([TRAIN, *args, "hydra.run.dir=whole"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    cut = subprocess.Popen([TRAIN, *args, "hydra.run.dir=cut"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.csv"
    deadline = time.time() + 120
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 4) and time.time() < deadline:
        time.sleep(0.05)
    cut.send_signal(signal.SIGINT)
    out, _ = cut.communicate(timeout=120)
    assert cut.returncode == 130
    interrupted = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert interrupted["status"] == "interrupted" and 0 < interrupted["steps"] < 60 * 23
    assert "hydra.run.dir=" in out and (tmp_path / "cut" / "last.pt").exists()

    resumed = subprocess.run([TRAIN, *args, "hydra.run.dir=cut"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert whole.wait(timeout=300) == 0

    def rows(name):
        lines = (tmp_path / name / "metrics.csv").read_text().splitlines()
        return [",".join(line.split(",")[:-1]) for line in lines]  # all but the seconds column

    assert rows("cut") == rows("whole")
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("whole", "cut"))
    for key in ["status", "steps", "best_epoch", "train_loss", "val_loss", "test_loss", "test_acc"]:
        assert a[key] == b[key], key


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    from runner.train import unique_dir

    base = str(tmp_path / "outputs" / "2026-01-01" / "10-00-00")
    assert [unique_dir(base) for _ in range(3)] == [base, base + "_1", base + "_2"]
    procs = [subprocess.Popen([TRAIN, *FAST], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert len({d for d in run_dirs(tmp_path / "outputs")}) == 3


def test_help_lists_every_group_and_option_fast(tmp_path):
    from conftest import CONF

    proc = train(tmp_path, "--help")
    for group in (p for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_")):
        line = next(line for line in proc.stdout.splitlines() if line.strip().startswith(group.name + " "))
        assert {o.strip() for o in line.split(None, 1)[1].split(",")} == {f.stem for f in group.glob("*.yaml")}
    assert "exit codes: 0 completed, 1 failed, 2 invalid, 3 diverged, 130 interrupted" in proc.stdout


def folder_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and p.name != "train.log"}  # the log gains a line per visit; nothing else may change


def test_item1_a_sweep_rerun_with_another_grid_never_touches_finished_runs(tmp_path):
    """Hydra writes .hydra/config.yaml before the job runs: a finished run's stays as it was, and its
    summary.json is not replaced by the refusal (status: invalid) either."""
    base = ["-m", *FAST, "optimizer.lr=1e-3,3e-3", "hydra.sweep.dir=X"]
    train(tmp_path, *base, "regularizer.dropout=0,0.2")
    before = {job: folder_bytes(tmp_path / "X" / job) for job in "0123"}
    staged = set(Path(tempfile.gettempdir()).glob("runner-hydra-*"))
    proc = subprocess.run([TRAIN, *base, "regularizer.dropout=0,0.1,0.2"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2  # jobs 1-3 land on finished runs of other (lr, dropout) pairs: refused
    assert proc.stderr.count("refusing to overwrite") == 3 and "sweep: 3 of 6 jobs completed" in proc.stderr
    assert "job 2: refused" in proc.stderr
    assert {job: folder_bytes(tmp_path / "X" / job) for job in "0123"} == before
    assert {json.loads((tmp_path / "X" / j / "summary.json").read_text())["status"] for j in "45"} == {"completed"}
    assert set(Path(tempfile.gettempdir()).glob("runner-hydra-*")) == staged  # Hydra's staged files removed
    single = subprocess.run([TRAIN, *FAST, "optimizer.lr=0.01", "hydra.run.dir=X/0"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 2 and "refusing to overwrite" in single.stderr
    assert folder_bytes(tmp_path / "X" / "0") == before["0"]
    assert set(Path(tempfile.gettempdir()).glob("runner-hydra-*")) == staged  # Hydra's staged files removed


def interrupt_in_process(make_cfg, run_dir, *overrides, at_epoch=2):
    """A run interrupted by a real SIGINT after its at_epoch-th evaluation (the handler `train` installs)."""
    import os
    import signal

    from runner.run import run

    cfg = make_cfg(*overrides, small=False)

    def ctrl_c(row):
        if row["epoch"] == at_epoch:
            os.kill(os.getpid(), signal.SIGINT)

    summary = run(cfg, run_dir, on_eval=ctrl_c)
    assert summary["status"] == "interrupted"
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(summary["config"]))
    return summary


EXTEND = ["data=digits", "trainer.batch_size=100", "diagnostics=off", "regularizer.dropout=0.3"]


def test_item2_extending_epochs_on_resume_equals_the_longer_run(make_cfg, tmp_path):
    """Interrupted at epoch 2 of 3, resumed with trainer.epochs=5: metrics and summary equal an
    uninterrupted 5-epoch run (constant lr: the lrs of the steps done do not depend on the length)."""
    interrupt_in_process(make_cfg, tmp_path / "cut", *EXTEND, "trainer.epochs=3")
    proc = train(tmp_path, *EXTEND, "trainer.epochs=5", "hydra.run.dir=cut")
    assert "resuming" in proc.stdout and "to trainer.epochs=5" in proc.stdout
    train(tmp_path, *EXTEND, "trainer.epochs=5", "hydra.run.dir=whole")

    def rows(name):
        return [",".join(line.split(",")[:-1]) for line in (tmp_path / name / "metrics.csv").read_text().splitlines()]

    assert rows("cut") == rows("whole") and len(rows("whole")) == 6
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("whole", "cut"))
    assert a["config_hash"] == b["config_hash"] and a["test_loss"] == b["test_loss"] and a["steps"] == b["steps"]
    assert yaml.safe_load((tmp_path / "cut" / ".hydra" / "config.yaml").read_text())["trainer"]["epochs"] == 5


@pytest.mark.parametrize("change,message", [
    (["trainer.epochs=5", "schedule=cosine"], "holds an interrupted run"),  # schedule differs too
    (["trainer.epochs=3", "optimizer.lr=0.01"], "differs in optimizer.lr"),
])
def test_item2_a_changed_resume_is_refused_and_loses_nothing(make_cfg, tmp_path, change, message):
    interrupt_in_process(make_cfg, tmp_path / "cut", *EXTEND, "trainer.epochs=3")
    before = folder_bytes(tmp_path / "cut")
    proc = subprocess.run([TRAIN, *EXTEND, *change, "hydra.run.dir=cut"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and message in proc.stderr
    assert folder_bytes(tmp_path / "cut") == before


def test_item2_extending_a_length_dependent_schedule_is_refused(make_cfg, tmp_path):
    interrupt_in_process(make_cfg, tmp_path / "cut", *EXTEND, "trainer.epochs=3", "schedule=cosine")
    before = folder_bytes(tmp_path / "cut")
    proc = subprocess.run([TRAIN, *EXTEND, "schedule=cosine", "trainer.epochs=5", "hydra.run.dir=cut"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "schedule=cosine depends on the training length" in proc.stderr
    assert folder_bytes(tmp_path / "cut") == before


def wait_for_rows(metrics: Path, n: int, timeout: float = 120) -> None:
    import time

    deadline = time.time() + timeout
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < n + 1) and time.time() < deadline:
        time.sleep(0.05)


def test_item6_one_ctrl_c_stops_a_whole_sweep_and_the_same_command_resumes_it(tmp_path):
    """SIGINT to a real `train -m` (basic launcher) during job 0: job 0 saves last.pt, jobs 1 and 2
    never start (no folder), exit 130, the jobs not started are listed; the same command resumes."""
    import signal

    args = [TRAIN, "-m", "data=digits", "trainer.epochs=40", "data.train_size=300", "trainer.batch_size=50",
            "trainer.seed=0,1,2",
            "hydra.sweep.dir=S"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "S" / "0" / "metrics.csv", 2)
    proc.send_signal(signal.SIGINT)  # one press
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert json.loads((tmp_path / "S" / "0" / "summary.json").read_text())["status"] == "interrupted"
    assert (tmp_path / "S" / "0" / "last.pt").exists()
    assert not (tmp_path / "S" / "1").exists() and not (tmp_path / "S" / "2").exists()
    assert "jobs not started (Ctrl-C stopped the sweep; the same command resumes it): 1, 2" in err
    assert "hydra.sweep.dir=" in out and "hydra.run.dir" not in out + err
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "job 0 " in again.stdout and "resuming" in again.stdout and "sweep: 3 of 3 jobs completed" in again.stderr


def test_item7_disk_full_fails_one_job_in_one_line_and_the_sweep_goes_on(tmp_path):
    """A real full disk: a 1 MiB tmpfs (needs root to mount). Job 0's last.pt (width 256, about 1.8 MB with
    AdamW's state) cannot fit: failed, one line, exit 1, no temporary files; job 1 (width 16) completes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        proc = subprocess.run([TRAIN, "-m", *FAST, "model.width=256,16", f"hydra.sweep.dir={disk / 'S'}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        (line,) = [ln for ln in proc.stderr.splitlines() if "failed:" in ln]
        assert line.startswith("job 0 ") and "No space left on device" in line
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]  # temporary files removed
        assert json.loads((disk / "S" / "1" / "summary.json").read_text())["status"] == "completed"
        assert "job 0: failed" in proc.stderr and "sweep: 1 of 2 jobs completed" in proc.stderr
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_item17_result_lines_read_once(tmp_path):
    """A diverged run: "diverged: non-finite loss ...", not "diverged: diverged: ...", on a line of its own
    (a table title wraps mid-phrase)."""
    proc = subprocess.run([TRAIN, *FAST, "optimizer.lr=1e12", "init=normal", "init.weight.std=3"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "COLUMNS": "80"})
    assert proc.returncode == 3
    assert "diverged: diverged" not in proc.stdout
    assert any(line.startswith("diverged: non-finite loss at step") for line in proc.stdout.splitlines())
