"""Experiment trackers (runner/logger.py), each read back with the tool's own reader and compared
with the run folder: TensorBoard's EventAccumulator, MLflow's client against its local store, a
file store and a real `mlflow server`, W&B's offline run file."""

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.logger import DIAG_STATS, LOGGERS

TRAIN = str(Path(sys.executable).with_name("train"))
BIN = Path(sys.executable).parent
FAST = ["data=digits", "trainer.epochs=2"]


def train(cwd, *args, env=None, code=0):
    proc = subprocess.run([TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == code, proc.stderr[-3000:]
    return proc


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) if v not in ("", "nan") else math.nan for k, v in row.items()} if "name" not in row
                else row for row in csv.DictReader(f)]


def metric_columns(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv as {column: [(step, value), ...]}, every column but step."""
    rows = read_csv(run_dir / "metrics.csv")
    return {k: [(int(r["step"]), r[k]) for r in rows] for k in rows[0] if k != "step"}


def diag_columns(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """diagnostics.csv's finite values as {diag/<stat>/<layer>_<name>: [(step, value), ...]}."""
    out: dict[str, list] = {}
    with open(run_dir / "diagnostics.csv") as f:
        for r in csv.DictReader(f):
            for k in DIAG_STATS:
                if r[k] not in ("", "nan") and math.isfinite(float(r[k])):
                    out.setdefault(f"diag/{k}/{r['layer']}_{r['name']}", []).append((int(r["step"]), float(r[k])))
    return out


def flat(d: dict, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard(run_dir: Path):
    """(scalars {tag: [(step, value)]}, HParams {name: value} and the status text as "(status text)") read back by
    TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    [status] = acc.Tensors("status/text_summary")
    hparams["(status text)"] = status.tensor_proto.string_val[0].decode()
    return scalars, hparams


def assert_series_equal(got: dict, want: dict, rel=1e-6):
    for tag, series in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in series], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in series], rel=rel, abs=1e-12), tag


def assert_mlflow_matches(client, run, run_dir: Path, status: str = "FINISHED"):
    """params = the flattened config; metric histories = metrics.csv and diagnostics.csv; the summary's
    final numbers; status; and the run folder's files as artifacts."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.info.status == status
    config = {k: v for k, v in summary["config"].items() if k != "logger"}
    assert run.data.params == {k: str(v) for k, v in flat(config).items()}
    for tag, series in {**metric_columns(run_dir), **diag_columns(run_dir)}.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag))
        assert history == [(s, pytest.approx(v, rel=1e-12)) for s, v in series], tag
    numbers = {k: v for k, v in summary.items() if type(v) in (int, float) and k not in ("seed", "params")}
    assert {k: run.data.metrics[f"final/{k}"] for k in numbers} == pytest.approx(numbers)
    assert ("test_acc" in numbers) == (summary["status"] != "interrupted")
    assert run.data.tags["runner.status"] == summary["status"]
    assert run.data.tags["runner.run_dir"] == str(run_dir.resolve())
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"summary.json", "metrics.csv",
                                                                       "diagnostics.csv"}


CONF = Path(__file__).resolve().parents[1] / "conf" / "logger"
OUTPUT = {"tensorboard": "run/tb/events.out.tfevents.*", "mlflow": "mlruns/*/*/meta.yaml",
          "wandb": "run/wandb/offline-run-*/*.wandb"}


def test_every_logger_file_is_an_option():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(LOGGERS) == sorted(OUTPUT)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_each_logger_option_composes_and_writes(make_cfg, tmp_path, monkeypatch, caplog, name):
    """`+logger=NAME` composes and a run writes the tracker's files, with no warning."""
    from runner.run import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")  # quicker to create than SQLite's
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    summary = run(make_cfg(f"+logger={name}", "data=digits", "trainer.epochs=1"), tmp_path / "run")
    assert summary["status"] == "completed"
    assert list(tmp_path.glob(OUTPUT[name]))
    assert not [r for r in caplog.records if r.levelname == "WARNING" and r.name == "runner.logger"]


def test_tensorboard_and_mlflow_at_once_read_back_equal_the_run_folder(tmp_path):
    """`+logger=[tensorboard,mlflow]` through the real CLI: TensorBoard's event files and MLflow's default
    local store (sqlite:///mlflow.db beside outputs/, artifacts in mlruns/) hold what the run folder holds."""
    from mlflow import MlflowClient

    proc = train(tmp_path, "+logger=[tensorboard,mlflow]", *FAST, "hydra.run.dir=outputs/one")
    run_dir = tmp_path / "outputs" / "one"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "logger" not in proc.stderr.lower() and "warning" not in proc.stderr.lower(), proc.stderr

    scalars, hparams = tensorboard(run_dir)
    assert_series_equal(scalars, metric_columns(run_dir))
    assert_series_equal(scalars, diag_columns(run_dir))
    assert len(metric_columns(run_dir)["val_loss"]) == 2  # one row per epoch
    assert scalars["final/test_acc"][0][1] == pytest.approx(summary["test_acc"], rel=1e-6)
    assert hparams == {"data": "digits", "trainer.epochs": 2.0,  # the overrides, minus logger and hydra ones
                       "(status text)": "completed: reached trainer.epochs=2"}

    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("runner")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "one"
    assert_mlflow_matches(client, run, run_dir)


def test_sweep_is_one_mlflow_experiment_and_tensorboard_hparams(tmp_path, monkeypatch):
    """A 2-job sweep into a file store: one experiment named after the sweep folder, one run per job with its
    override, and each job's TensorBoard HParams holding its override and final metrics."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store without it
    env = {"MLFLOW_TRACKING_URI": f"file:{tmp_path / 'store'}"}
    train(tmp_path, "-m", "+logger=[mlflow,tensorboard]", *FAST, "regularizer.dropout=0,0.5", "hydra.sweep.dir=sw",
          env=env)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sw")
    runs = {r.data.tags["runner.job"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["0", "1"]
    for job, p in [("0", "0"), ("1", "0.5")]:  # as written on the command line
        run_dir = tmp_path / "sw" / job
        assert_mlflow_matches(client, runs[job], run_dir)
        assert runs[job].data.params["regularizer.dropout"] == p
        assert runs[job].info.run_name == f"{job}: data=digits trainer.epochs=2 regularizer.dropout={p}"
        summary = json.loads((run_dir / "summary.json").read_text())
        scalars, hparams = tensorboard(run_dir)
        assert hparams == {"data": "digits", "trainer.epochs": 2.0, "regularizer.dropout": float(p),
                           "(status text)": "completed: reached trainer.epochs=2"}
        assert scalars["final/test_loss"] == [(summary["steps"], pytest.approx(summary["test_loss"], rel=1e-6))]


def test_statuses_map_to_mlflow(tmp_path, monkeypatch):
    """diverged -> FAILED and interrupted (SIGINT) -> KILLED through the CLI, then resumed -> the same MLflow
    run, FINISHED, with the whole history; a run that raised -> FAILED through abort(), which train.py calls
    from its except branches."""
    from mlflow import MlflowClient
    from omegaconf import OmegaConf

    from runner.logger import Trackers, abort

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store without it
    env = {"MLFLOW_TRACKING_URI": f"file:{tmp_path / 'store'}"}
    train(tmp_path, "+logger=mlflow", *FAST, "optimizer.lr=1e12", "init=normal", "init.weight.std=3",
          "hydra.run.dir=diverged", env=env, code=3)
    cut_args = ["+logger=mlflow", "data=digits", "trainer.epochs=8", "trainer.batch_size=32", "hydra.run.dir=cut"]
    cut = subprocess.Popen([TRAIN, *cut_args], cwd=tmp_path, env={**os.environ, **env},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.csv"
    deadline = time.time() + 120
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.time() < deadline:
        time.sleep(0.05)
    cut.send_signal(signal.SIGINT)
    _, err = cut.communicate(timeout=120)
    assert cut.returncode == 130, err

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("runner").experiment_id])}
    assert runs["diverged"].info.status == "FAILED"
    assert runs["diverged"].data.tags["runner.status"] == "diverged"
    assert runs["cut"].info.status == "KILLED"
    assert_mlflow_matches(client, runs["cut"], tmp_path / "cut", status="KILLED")
    train(tmp_path, *cut_args, env=env)  # resumes, and so does its MLflow run
    [resumed] = [r for r in client.search_runs([runs["cut"].info.experiment_id]) if r.info.run_name == "cut"]
    assert resumed.info.run_id == runs["cut"].info.run_id
    assert_mlflow_matches(client, resumed, tmp_path / "cut")
    assert len(metric_columns(tmp_path / "cut")["val_loss"]) == 8

    cfg = OmegaConf.create({"logger": {"mlflow": {"tracking_uri": env["MLFLOW_TRACKING_URI"],
                                                  "experiment": "raised"}}, "x": 1})
    trackers = Trackers(cfg, tmp_path / "raised")
    trackers.log({"epoch": 1.0, "step": 5, "train_loss": 0.25})
    abort("failed", RuntimeError("boom"))
    [run] = client.search_runs([client.get_experiment_by_name("raised").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["runner.stop_reason"] == "RuntimeError: boom"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")] == [(5, 0.25)]
    assert run.data.params == {"x": "1"}


def test_mlflow_sends_metrics_every_flush_seconds(tmp_path, monkeypatch):
    """Metrics wait in a buffer until flush_seconds have passed since the last request (one log_batch for
    all of them), and the rest go at close; flush_seconds=0 sends each evaluation's at once."""
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from runner.logger import MLflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'store'}"
    client = MlflowClient(uri)

    def history(tracker, tag="train_loss"):
        return [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, tag)]

    def ctx(name):
        return SimpleNamespace(run_dir=tmp_path / name, sweep_dir=None, job=None, name=name, resume=False,
                               params={"x": 1}, hparams={})

    clock = [1000.0]
    monkeypatch.setattr("runner.logger.time.monotonic", lambda: clock[0])
    late = MLflow(ctx("late"), tracking_uri=uri, flush_seconds=30)
    late.log({"step": 1, "train_loss": 0.5}, [])
    clock[0] += 29.0
    late.log({"step": 2, "train_loss": 0.4}, [])
    assert history(late) == []  # 29 s < 30 s: nothing sent yet
    clock[0] += 1.0
    late.log({"step": 3, "train_loss": 0.3}, [])
    assert sorted(history(late)) == [(1, 0.5), (2, 0.4), (3, 0.3)]  # 30 s: the three in one request
    late.log({"step": 4, "train_loss": 0.2}, [])
    assert len(history(late)) == 3
    late.close({"status": "completed", "steps": 4, "test_acc": 0.9})
    assert sorted(history(late)) == [(1, 0.5), (2, 0.4), (3, 0.3), (4, 0.2)]
    assert history(late, "final/test_acc") == [(4, 0.9)]

    now = MLflow(ctx("now"), tracking_uri=uri, flush_seconds=0)
    now.log({"step": 1, "train_loss": 0.5}, [])
    assert history(now) == [(1, 0.5)]


def test_a_negative_flush_interval_is_refused_before_training(tmp_path):
    proc = train(tmp_path, "+logger=mlflow", *FAST, "logger.mlflow.flush_seconds=-1", "hydra.run.dir=run", code=2)
    assert "logger.mlflow.flush_seconds=-1: seconds between sends, a number >= 0" in proc.stderr
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_unreachable_tracking_server_is_one_warning(tmp_path):
    port = free_port()  # nothing listens there
    proc = train(tmp_path, "+logger=mlflow", *FAST, f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}",
                 "hydra.run.dir=run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
    out = proc.stdout + proc.stderr
    warnings = [line for line in out.splitlines() if any(w in line.lower() for w in ("warn", "retry", "mlflow"))]
    assert len(warnings) == 1, out
    assert "[WARNING] - logger=mlflow: MlflowException" in warnings[0] and "the run goes on without it" in warnings[0]


SHIM = "import sys\nsys.modules[{module!r}] = None  # `import {module}` fails as if it were not installed\n"


@pytest.mark.parametrize("name", sorted(LOGGERS))
def test_missing_extra_is_refused_before_training(tmp_path, name):
    """The tracker's package made unimportable in the `train` process (a sitecustomize on PYTHONPATH):
    exit 2, the pip command, and no run folder."""
    from runner.logger import EXTRAS

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM.format(module=EXTRAS[name]))
    proc = train(tmp_path, f"+logger={name}", *FAST, env={"PYTHONPATH": str(shim)}, code=2)
    assert f"logger={name}: the {EXTRAS[name]} package is not installed" in proc.stderr
    assert f'pip install "runner[{name}]"' in proc.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.*"))


def _serve(args: list[str], cwd: Path, url: str, timeout: float = 240):
    """Start a server (its own process group), wait until url answers; returns the process."""
    import urllib.request

    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"{args[0]} exited with {proc.returncode}"
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    raise AssertionError(f"{args} did not answer {url} within {timeout} s")


def _stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow  # about 90 s on the loaded 2-core machine, most of it the server's start
def test_mlflow_ui_and_a_real_tracking_server(tmp_path):
    """README's `mlflow ui` where train ran shows the local store's run; then train logs to that server over
    HTTP (MLFLOW_TRACKING_URI), and params, metric histories, status and artifacts read back through it
    equal the run folder's."""
    from mlflow import MlflowClient

    train(tmp_path, "+logger=mlflow", *FAST, "hydra.run.dir=outputs/local")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _serve([str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                    tmp_path, f"{uri}/health")
    try:
        client = MlflowClient(uri)
        [local] = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
        assert_mlflow_matches(client, local, tmp_path / "outputs" / "local")

        train(tmp_path, "-m", "+logger=mlflow", *FAST, "logger.mlflow.experiment=served", "hydra.sweep.dir=sw",
              env={"MLFLOW_TRACKING_URI": uri})
        [served] = client.search_runs([client.get_experiment_by_name("served").experiment_id])
        assert_mlflow_matches(client, served, tmp_path / "sw" / "0")
    finally:
        _stop(server)


def readme_commands() -> list[str]:
    """The commands of README's "Experiment trackers" block."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Experiment trackers", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_tracker_commands(tmp_path):
    """README's tracker commands, in a fresh folder, each train with a tiny budget added: the run and the
    sweep land in outputs/, and `tensorboard --logdir outputs` serves their scalars (read over its HTTP API,
    equal to metrics.csv). `mlflow ui` is run by the opt-in test_mlflow_ui_and_a_real_tracking_server."""
    import shlex
    import urllib.parse
    import urllib.request

    commands = readme_commands()
    assert [c.split()[0] for c in commands] == ["train", "train", "tensorboard", "mlflow"] and commands[3] == "mlflow ui"
    for command in commands[:2]:
        train(tmp_path, *shlex.split(command)[1:], *FAST)
    runs = sorted(str(p.parent.relative_to(tmp_path / "outputs")) for p in (tmp_path / "outputs").rglob("tb/events.*"))
    assert len(runs) == 3 and sum(r.startswith("multirun/") for r in runs) == 2, runs
    assert (tmp_path / "mlflow.db").exists()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = shlex.split(commands[2])
    server = _serve([str(BIN / args[0]), *args[1:], "--host", "127.0.0.1", "--port", str(port)], tmp_path,
                    f"{url}/data/runs")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # tensorboard reads the logdir in the background
            tags = json.loads(urllib.request.urlopen(f"{url}/data/plugin/scalars/tags", timeout=10).read())
            if len(tags) == 3:
                break
            time.sleep(1)
        assert sorted(tags) == runs
        for run in runs:
            assert {"val_loss", "train_acc", "lr", "final/test_acc"} <= set(tags[run])
            query = urllib.parse.urlencode({"run": run, "tag": "val_loss"})
            values = json.loads(urllib.request.urlopen(f"{url}/data/plugin/scalars/scalars?{query}", timeout=10).read())
            want = metric_columns(tmp_path / "outputs" / Path(run).parent)["val_loss"]
            assert [(s, v) for _, s, v in values] == [(s, pytest.approx(v, rel=1e-6)) for s, v in want]
    finally:
        _stop(server)


def wandb_records(run_dir: Path) -> list:
    """The records of the offline W&B run in run_dir, read from its .wandb file (LevelDB's log format
    behind a 7-byte ':W&B' header: 32 KiB blocks of chunks, each with a 7-byte header: crc, length, type)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    [path] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, buf, out = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(buf))
    return out


def test_wandb_offline_run_equals_the_run_folder(tmp_path):
    """A one-job sweep with +logger=wandb: the offline run in the job's folder holds the config, every
    metrics.csv column and diagnostic at its step, the final metrics, the sweep as its group, exit code 0."""
    train(tmp_path, "-m", "+logger=wandb", *FAST, "regularizer.dropout=0.5", "hydra.sweep.dir=sw")
    run_dir = tmp_path / "sw" / "0"
    summary = json.loads((run_dir / "summary.json").read_text())
    records = {}
    for r in wandb_records(run_dir):
        records.setdefault(r.WhichOneof("record_type"), []).append(r)
    [run] = [r.run for r in records["run"]]
    assert run.run_group == "sw" and run.display_name == "0: data=digits trainer.epochs=2 regularizer.dropout=0.5"
    config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
    assert config == {k: v for k, v in flat(summary["config"]).items() if not k.startswith("logger.")}
    got: dict[str, list] = {}
    for r in records["history"]:
        items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for k, v in items.items():
            if not k.startswith("_"):
                got.setdefault(k, []).append((items["_step"], v))
    assert_series_equal(got, metric_columns(run_dir), rel=1e-12)
    assert_series_equal(got, diag_columns(run_dir), rel=1e-12)
    final = {}
    for r in records["summary"]:
        final |= {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update}
    assert final["final/test_acc"] == summary["test_acc"] and final["status"] == "completed"
    assert [r.exit.exit_code for r in records["exit"]] == [0]
