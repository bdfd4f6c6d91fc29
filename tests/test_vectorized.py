"""The vectorized launcher (hydra_plugins.runner_launcher, runner/vectorized.py): members of a stack
train as their ordinary runs would, write the same run folders, and keep their faults to themselves."""

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runner import data as data_module
from runner.report import load_runs
from runner.run import run
from runner.vectorized import plan, train_stack

TRAIN = str(Path(sys.executable).with_name("train"))
SMALL = ["data=digits", "trainer.epochs=3", "regularizer=none"]
MLP = ["model.width=32"]


def rows(path: Path) -> list[dict]:
    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(path / "metrics.csv"))]


def weights(path: Path, name="last.pt") -> dict:
    state = torch.load(path / name, weights_only=True)
    return state["model"] if name == "last.pt" else state


@pytest.fixture
def float64(monkeypatch):
    """Models built and data loaded in float64, so that a member and its ordinary run can be compared
    to 1e-9 (in float32 the batched and the plain matrix products round differently)."""
    load = data_module.load

    def load64(*args, **kwargs):
        s = load(*args, **kwargs)
        return dataclasses.replace(s, **{f.name: v.double() for f in dataclasses.fields(s)
                                         if isinstance(v := getattr(s, f.name), torch.Tensor) and v.is_floating_point()})

    monkeypatch.setattr(data_module, "load", load64)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


STACKS = {  # members differing in what a stack allows: seed, optimizer numbers, schedule, init, clip, patience
    "sgd_momentum": ([*MLP, "optimizer=momentum", "norm=batchnorm"],
                     [["trainer.seed=0", "optimizer.lr=0.05"], ["trainer.seed=1", "optimizer.momentum=0.5"],
                      ["trainer.seed=2", "schedule=cosine", "schedule.warmup=5", "clip=norm", "clip.max_norm=0.5"]]),
    "adamw": ([*MLP, "optimizer=adamw"],
              [["trainer.seed=0"], ["trainer.seed=0", "optimizer.weight_decay=0.3", "optimizer.betas=[0.8,0.99]"],
               ["trainer.seed=3", "init=xavier", "schedule=step", "early_stopping=patience",
                "early_stopping.patience=1", "trainer.epochs=3"]]),
    "rmsprop_lookahead": (["optimizer=rmsprop", "lookahead.k=3", "model=cnn", "model.channels=[8,8]"],
                          [["trainer.seed=0"], ["trainer.seed=1", "optimizer.lr=3e-4", "lookahead.alpha=0.8"]]),
    "penalties": ([*MLP, "optimizer=adam"],  # each member's penalty: its gradient added to the stacked weights'
                  [["regularizer=l2", "regularizer.lambda=0.01"],
                   ["trainer.seed=1", "regularizer=l1", "regularizer.lambda=1e-3"],
                   ["regularizer=elastic_net", "regularizer.lambda=0.02", "regularizer.include_bias=true"],
                   ["trainer.seed=2"]]),
    "stack_of_one": ([*MLP, "optimizer=momentum", "norm=batchnorm"],  # K = 1 takes the plain call, not vmap
                     [["trainer.seed=4", "schedule=cosine", "clip=norm", "clip.max_norm=0.5"]]),
}


@pytest.mark.parametrize("name", sorted(STACKS))
def test_members_equal_their_ordinary_runs_in_float64(make_cfg, tmp_path, float64, name):
    common, variants = STACKS[name]
    cfgs = [make_cfg(*SMALL, *common, *v, small=False) for v in variants]
    for i, cfg in enumerate(cfgs):
        run(cfg, tmp_path / f"ordinary{i}")
    summaries = train_stack([{"cfg": cfg, "run_dir": tmp_path / f"member{i}", "meta": None, "resume": False}
                             for i, cfg in enumerate(cfgs)])
    assert [s["status"] for s in summaries] == ["completed"] * len(cfgs)
    for i in range(len(cfgs)):
        plain, member = tmp_path / f"ordinary{i}", tmp_path / f"member{i}"
        assert sorted(p.name for p in plain.iterdir()) == sorted(p.name for p in member.iterdir())
        a, b = rows(plain), rows(member)
        assert len(a) == len(b) >= 1
        for ra, rb in zip(a, b):
            for key in ra:
                if key != "seconds":  # losses and metrics are summed in float32 (out.float()), weights are not
                    assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-9), (i, key)
        da, db = (list(csv.DictReader(open(p / "diagnostics.csv"))) for p in (plain, member))
        assert len(da) == len(db) > 0 and list(da[0]) == list(db[0])
        for ra, rb in zip(da, db):
            assert rb["name"] == ra["name"]
            for key, value in ra.items():
                if key != "name":
                    assert float(rb[key]) == pytest.approx(float(value), rel=1e-6, abs=1e-9, nan_ok=True), (i, key)
        for name_pt in ("last.pt", "best.pt"):
            wa, wb = weights(plain, name_pt), weights(member, name_pt)
            assert list(wa) == list(wb)
            for key in wa:
                assert torch.allclose(wa[key].double(), wb[key].double(), rtol=0, atol=1e-9), (i, name_pt, key)
        sa, sb = (json.loads((p / "summary.json").read_text()) for p in (plain, member))
        assert sorted(sa) == sorted(sb)
        assert sb["stop_reason"] == sa["stop_reason"] and sb["best_epoch"] == sa["best_epoch"]
        assert sb["test_acc"] == pytest.approx(sa["test_acc"], abs=1e-12)


def test_plan_groups_compatible_jobs_and_splits_by_max_stack(make_cfg):
    cfgs = [make_cfg(*o) for o in (["trainer.seed=0"], ["trainer.seed=1", "optimizer.lr=0.01"],
                                   ["optimizer=sgd"], ["model.width=64"], ["trainer.seed=2", "regularizer.dropout=0.5"],
                                   ["lr_find=on"], ["optimizer=sgd", "optimizer.lr=0.1"], ["trainer.seed=3"])]
    assert plan(cfgs, None) == [[0, 1, 4, 7], [2, 6], [3], [5]]  # adamw/width 256, sgd, width 64, lr_find alone
    assert plan(cfgs, 3) == [[0, 1, 4], [2, 6], [3], [5], [7]]


def test_a_diverging_member_is_recorded_and_leaves_the_others_unchanged(make_cfg, tmp_path):
    cfgs = [make_cfg(*SMALL, *MLP, o, small=False) for o in ("trainer.seed=0", "optimizer.lr=1e9", "trainer.seed=1")]
    alone = train_stack([{"cfg": cfgs[i], "run_dir": tmp_path / f"alone{i}", "meta": None, "resume": False}
                         for i in (0, 2)])
    together = train_stack([{"cfg": c, "run_dir": tmp_path / f"with{i}", "meta": None, "resume": False}
                            for i, c in enumerate(cfgs)])
    assert together[1]["status"] == "diverged" and together[1]["stop_reason"].startswith("diverged: non-finite loss")
    assert not (tmp_path / "with1" / "metrics.csv").exists()  # it diverged before its first evaluation
    for a, b in ((tmp_path / "alone0", tmp_path / "with0"), (tmp_path / "alone2", tmp_path / "with2")):
        assert [r["val_loss"] for r in rows(a)] == pytest.approx([r["val_loss"] for r in rows(b)], rel=1e-5)
        assert all(math.isfinite(r["train_loss"]) for r in rows(b))
    assert [s["status"] for s in together] == ["completed", "diverged", "completed"]


def test_dropout_members_agree_with_ordinary_runs_over_seeds(make_cfg, tmp_path):
    """Dropout masks come from another stream in a stack, so the two agree in distribution: over 6 seeds
    the mean final training loss of the members is within 3 standard errors of the ordinary runs', and
    both differ clearly from the same runs without dropout (so dropout did act in the stack)."""
    seeds = range(6)
    common = ["data=digits", "trainer.epochs=4", "model.width=64", "regularizer=dropout", "regularizer.dropout=0.5"]
    for s in seeds:
        run(make_cfg(*common, f"trainer.seed={s}", small=False), tmp_path / f"o{s}")
    members = [{"cfg": make_cfg(*common, f"trainer.seed={s}", small=False), "run_dir": tmp_path / f"m{s}",
                "meta": None, "resume": False} for s in seeds]
    members += [{"cfg": make_cfg(*common, f"trainer.seed={s}", "regularizer.dropout=0", small=False),
                 "run_dir": tmp_path / f"z{s}", "meta": None, "resume": False} for s in seeds]
    train_stack(members)
    final = {k: torch.tensor([rows(tmp_path / f"{k}{s}")[-1]["train_loss"] for s in seeds]) for k in "omz"}
    se = math.sqrt(final["o"].var() / 6 + final["m"].var() / 6)
    assert abs(final["o"].mean() - final["m"].mean()) < 3 * se
    assert final["m"].mean() > final["z"].mean() + 3 * math.sqrt(final["m"].var() / 6 + final["z"].var() / 6)


def sweep(cwd: Path, *args, timeout=300, **kwargs):
    return subprocess.run([TRAIN, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


def test_cli_sweep_report_matches_the_basic_launcher(tmp_path):
    """One torch thread in both sweeps: a matrix product on two threads may round differently in float32."""
    grid = ["data=digits", "trainer.epochs=2", "regularizer=none", "trainer.seed=0,1", "optimizer.lr=1e-3,3e-3",
            "trainer.num_threads=1"]
    basic = sweep(tmp_path, *grid, "hydra.sweep.dir=basic")
    vec = sweep(tmp_path, "+launcher=vectorized", *grid, "hydra.sweep.dir=vec")
    assert basic.returncode == 0 and vec.returncode == 0, vec.stderr[-2000:]
    assert vec.stdout.count("completed, test_acc=") == 4
    assert sorted(p.name for p in (tmp_path / "vec" / "0").iterdir()) == \
        sorted(p.name for p in (tmp_path / "basic" / "0").iterdir())
    a, b = (load_runs(tmp_path / d).sort_values("run") for d in ("basic", "vec"))
    assert [Path(r).name for r in a["run"]] == [Path(r).name for r in b["run"]] and len(a) == 4
    for column in ("test_acc", "test_loss", "val_loss", "best_value"):
        assert list(b[column]) == pytest.approx(list(a[column]), rel=1e-6), column
    for d in ("basic", "vec"):
        assert subprocess.run([str(Path(TRAIN).with_name("report")), str(tmp_path / d), "--out", str(tmp_path / f"r{d}")],
                              capture_output=True, text=True, timeout=120).returncode == 0
    ga, gb = (list(csv.DictReader(open(tmp_path / f"r{d}" / "groups.csv"))) for d in ("basic", "vec"))
    assert [g["optimizer.lr"] for g in ga] == [g["optimizer.lr"] for g in gb]
    assert [float(g["test_acc_mean"]) for g in gb] == pytest.approx([float(g["test_acc_mean"]) for g in ga], rel=1e-5)


def test_interrupted_vectorized_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    grid = ["+launcher=vectorized", "data=digits", "trainer.epochs=40", "regularizer=none", "model.width=64",
            "trainer.seed=0,1,2", "diagnostics=off"]
    ref = sweep(tmp_path, *grid, "hydra.sweep.dir=ref", timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([TRAIN, "-m", *grid, "hydra.sweep.dir=cut"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = [tmp_path / "cut" / j / "metrics.csv" for j in "012"]
    deadline = time.time() + 300
    while time.time() < deadline and not all(m.exists() and len(m.read_text().splitlines()) > 3 for m in metrics):
        time.sleep(0.05)  # every member (in this process or a worker of a split stack) is training
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    cut = {j: json.loads((tmp_path / "cut" / j / "summary.json").read_text()) for j in "012"}
    assert "interrupted" in {s["status"] for s in cut.values()} <= {"interrupted", "completed"}
    assert all((tmp_path / "cut" / j / "last.pt").exists() for j in "012")
    again = sweep(tmp_path, *grid, "hydra.sweep.dir=cut", timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    for j in "012":
        done = json.loads((tmp_path / "cut" / j / "summary.json").read_text())
        full = json.loads((tmp_path / "ref" / j / "summary.json").read_text())
        assert done["status"] == "completed" and done["steps"] == full["steps"] >= cut[j]["steps"]
        assert done["test_loss"] == pytest.approx(full["test_loss"], rel=1e-5)
        assert [r["val_loss"] for r in rows(tmp_path / "cut" / j)] == \
            pytest.approx([r["val_loss"] for r in rows(tmp_path / "ref" / j)], rel=1e-5)
    assert again.stdout.count("skipped") == sum(s["status"] == "completed" for s in cut.values())
    third = sweep(tmp_path, *grid, "hydra.sweep.dir=cut")  # everything finished: all skipped
    assert third.returncode == 0 and third.stdout.count("skipped") == 3


def test_a_failing_stack_records_every_member_and_the_sweep_goes_on(tmp_path):
    """The data folder is a file, so no stack's dataset can be cached: the first stack fails, every
    member recorded with the error, and the sweep goes on to the second, which fails alike."""
    (tmp_path / "not_a_folder").write_text("")
    proc = sweep(tmp_path, "hydra/launcher=vectorized", "data=mnist1d", "data.n_samples=600", "trainer.epochs=1",
                 "paths.data_dir=${oc.env:PWD}/not_a_folder/cache", "model.width=16,32", "trainer.seed=0,1",
                 "hydra.sweep.dir=s", env={**os.environ, "PWD": str(tmp_path)})
    statuses = {j: json.loads((tmp_path / "s" / j / "summary.json").read_text())["status"] for j in "0123"}
    assert statuses == dict.fromkeys("0123", "failed")
    assert proc.returncode == 1
    assert "stack of 2 failed" in proc.stdout and (tmp_path / "s" / "0" / "error.txt").exists()


CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("norm", sorted(p.stem for p in (CONF / "norm").glob("*.yaml")))
@pytest.mark.parametrize("model", ["mlp", "cnn", "logistic"])
def test_every_norm_and_stackable_model_trains_in_a_stack(make_cfg, tmp_path, float64, norm, model):
    """Each member of a stack of two equals its ordinary run, for every norm option (float64)."""
    if model == "logistic" and norm != "none":
        pytest.skip("logistic regression has no hidden layer to normalize")
    shape = {"mlp": ["model.width=16", "model.residual=true", "model.depth=2"], "cnn": ["model.channels=[8,8]"],
             "logistic": []}[model]
    cfgs = [make_cfg("data=digits", "trainer.epochs=1", f"model={model}", f"norm={norm}", "regularizer=none", *shape,
                     f"trainer.seed={s}", *(["norm.num_groups=4"] if norm == "groupnorm" else []), small=False)
            for s in (0, 1)]
    summaries = train_stack([{"cfg": c, "run_dir": tmp_path / f"m{i}", "meta": None, "resume": False}
                             for i, c in enumerate(cfgs)])
    for i, cfg in enumerate(cfgs):
        plain = run(cfg, tmp_path / f"o{i}")
        assert summaries[i]["status"] == plain["status"] == "completed"
        assert summaries[i]["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-9)
        assert summaries[i]["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-9)


def test_members_feed_their_trackers(tmp_path):
    """Each member its own TensorBoard events and its own MLflow run, named after its own job."""
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = sweep(tmp_path, "+launcher=vectorized", "+logger=[tensorboard,mlflow]", "data=digits", "trainer.epochs=2",
                 "trainer.seed=0,1", "hydra.sweep.dir=s",
                 env={**os.environ, "MLFLOW_TRACKING_URI": store})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stack of 2" in proc.stdout
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("s")  # the sweep folder as given
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == [f"{j}: +launcher=vectorized data=digits trainer.epochs=2 trainer.seed={j}" for j in (0, 1)]
    for job in "01":
        events = EventAccumulator(str(tmp_path / "s" / job / "tb")).Reload()
        logged = [e.value for e in events.Scalars("val_loss")]
        assert logged == pytest.approx([r["val_loss"] for r in rows(tmp_path / "s" / job)], rel=1e-6)
        [run] = [r for r in runs.values() if r.data.tags["runner.run_dir"] == str(tmp_path / "s" / job)]
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss"))
        assert [v for _, v in history] == pytest.approx([r["val_loss"] for r in rows(tmp_path / "s" / job)], rel=1e-12)


def test_image_members_equal_their_ordinary_runs(make_cfg, tmp_path, float64):
    """uint8 images behind the Normalize layer, Conv2d CNN with BatchNorm2d (float64)."""
    cfgs = [make_cfg("data=digits", "data.image=true", "model=cnn", "model.channels=[8,8]", "norm=batchnorm",
                     "regularizer=none", f"trainer.seed={s}") for s in (0, 1)]
    summaries = train_stack([{"cfg": c, "run_dir": tmp_path / f"m{i}", "meta": None, "resume": False}
                             for i, c in enumerate(cfgs)])
    for i, cfg in enumerate(cfgs):
        plain = run(cfg, tmp_path / f"o{i}")
        assert summaries[i]["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-9)
        assert summaries[i]["test_acc"] == pytest.approx(plain["test_acc"], abs=1e-12)


def test_split_stacks_are_contiguous_near_equal_parts():
    from hydra_plugins.runner_launcher import _split

    stack = [{"i": i} for i in range(7)]
    assert [[m["i"] for m in part] for part in _split(stack, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [len(p) for p in _split(stack, 10)] == [1] * 7  # never an empty part
    assert _split(stack, 1) == [stack]


@pytest.mark.parametrize("threads", [[], ["trainer.num_threads=2"]], ids=["forked", "spawned"])
def test_a_stack_split_over_processes_equals_one_process(tmp_path, threads):
    """hydra.launcher.n_jobs=2 (two worker processes, stacks of 2 and 1) against n_jobs=1 (one stack of
    3): dropout 0, so every member's metrics agree (float32: the batched and plain products round apart).
    The worker is forked on one thread, spawned on two (_start_method)."""
    grid = ["+launcher=vectorized", "data=digits", "trainer.epochs=2", "regularizer=none", "trainer.seed=0,1,2",
            *threads]
    split = sweep(tmp_path, *grid, "hydra.launcher.n_jobs=2", "hydra.sweep.dir=split")
    whole = sweep(tmp_path, *grid, "hydra.launcher.n_jobs=1", "hydra.sweep.dir=whole")
    assert split.returncode == 0 and whole.returncode == 0, split.stderr[-2000:]
    for job in "012":
        a, b = rows(tmp_path / "split" / job), rows(tmp_path / "whole" / job)
        assert [r["val_loss"] for r in a] == pytest.approx([r["val_loss"] for r in b], rel=1e-5)
        assert "completed after 2.0 epochs" in (tmp_path / "split" / job / "train.log").read_text()
        assert len((tmp_path / "whole" / job / "train.log").read_text().splitlines()) == 1  # its own line only
        shares = [json.loads((tmp_path / d / job / "summary.json").read_text())["threads"] for d in ("split", "whole")]
        assert shares[0] == (2 if threads else max(1, shares[1] // 2))  # a worker's share: it ran in a worker
    assert (split.stdout + split.stderr).count("sweep: 3 of 3 jobs completed") == 1  # a fork wrote nothing twice
    assert all(split.stdout.count(f"job {job} ") == 1 for job in "012")
    assert "completed after" not in split.stderr  # the worker's members log to their train.log, as ours do


def test_workers_fork_only_on_one_cpu_thread():
    """A forked worker that runs OpenMP on several threads after the launcher used OpenMP hangs, and CUDA
    cannot be forked: only a CPU worker on one thread (trainer.num_threads, when set, decides) forks."""
    from omegaconf import OmegaConf

    from hydra_plugins.runner_launcher import _start_method

    def trainer(device="cpu", num_threads=None):
        return OmegaConf.create({"device": device, "num_threads": num_threads})

    assert _start_method(1, trainer()) == "fork"
    assert _start_method(2, trainer()) == "spawn"
    assert _start_method(1, trainer(num_threads=4)) == "spawn"
    assert _start_method(4, trainer(num_threads=1)) == "fork"
    assert _start_method(1, trainer(device="cuda")) == "spawn"


def test_a_vectorized_sweep_composes_each_job_once(tmp_path):
    """Hydra's basic sweeper composes every job's config to check its batch; the launcher takes those
    compositions instead of composing each job a second time."""
    code = """if True:
        import sys
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        compose, calls = ConfigLoaderImpl.load_sweep_config, []
        def counted(self, master_config, sweep_overrides):
            calls.append(tuple(sweep_overrides))
            return compose(self, master_config, sweep_overrides)
        ConfigLoaderImpl.load_sweep_config = counted
        import runner.train
        sys.argv = ["train", "-m", "+launcher=vectorized", "data=digits", "trainer.epochs=1", "regularizer=none",
                    "trainer.seed=0,1,2", "hydra.sweep.dir=once"]
        code = runner.train.cli()
        print("compositions", len(calls), len(set(calls)), code)
    """
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "compositions 3 3 0", proc.stderr[-2000:]
    assert all(json.loads((tmp_path / "once" / j / "summary.json").read_text())["config"]["trainer"]["seed"] == int(j)
               for j in "012")


def test_stack_dropout_keeps_each_unit_with_probability_1_minus_p():
    """TensorDropout under vmap, one p per member: the kept fraction is within 4 standard errors of
    1 - p, kept units are scaled by exactly 1 / (1 - p) (as torch's dropout), p = 0 keeps x as it is,
    and eval mode is the identity."""
    from torch.func import vmap

    from runner.vectorized import TensorDropout

    ps = [0.0, 0.1, 0.5, 0.9]
    drop = TensorDropout(0.25)
    x = torch.randn(len(ps), 400, 257)  # a width not a multiple of 4: a row's last uniforms come from part of a 64-bit draw
    out = vmap(lambda p, x: torch.func.functional_call(drop, {"p": p}, (x,)), randomness="different")(
        torch.tensor(ps), x)
    n = x[0].numel()
    for k, p in enumerate(ps):
        kept = out[k] != 0
        assert abs(kept.float().mean().item() - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n) + 1e-12, p
        scale = torch.tensor(1.0) / (1 - torch.tensor(p))
        assert torch.equal(out[k][kept], x[k][kept] * scale)
    assert torch.equal(out[0], x[0])
    drop.eval()
    assert torch.equal(drop(x[1]), x[1])


def test_a_bad_max_stack_is_refused_before_any_job(tmp_path):
    proc = sweep(tmp_path, "+launcher=vectorized", "hydra.launcher.max_stack=0", "data=digits", "trainer.seed=0,1")
    assert proc.returncode == 2
    assert "hydra.launcher.max_stack=0: must be a whole number >= 1" in proc.stderr
    assert not any((tmp_path / "outputs").rglob("summary.json"))
    proc = sweep(tmp_path, "+launcher=vectorized", "hydra.launcher.n_jobs=-1", "data=digits", "trainer.seed=0,1")
    assert proc.returncode == 2
    assert "hydra.launcher.n_jobs=-1: must be a whole number >= 1" in proc.stderr


def test_a_direct_stack_computes_each_members_own_forward():
    """direct_template: an MLP of Linear and elementwise layers takes the stacked weights without vmap.
    Its output for a stack of 3 (float64, eval mode) equals each member model's own forward; MLPs with
    a norm, the CNN, the input's Normalize and torch's own Dropout keep vmap (None)."""
    from torch import nn
    from torch.func import stack_module_state

    from runner.model import CNN, MLP, with_input_norm
    from runner.vectorized import StackLinear, TensorDropout, direct_template

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        models = [MLP((4, 5), 3, depth=3, width=16, activation="gelu", residual=True, residual_init="default")
                  for _ in range(3)]
        direct = direct_template(models[0])
        assert direct is not None
        assert sum(type(m) is StackLinear for m in direct.modules()) == \
            sum(type(m) is nn.Linear for m in models[0].modules()) == 6
        params, buffers = stack_module_state(models)
        x = torch.randn(3, 7, 4, 5)  # each member its own batch of (4, 5) inputs, flattened by the MLP
        out = torch.func.functional_call(direct.eval(), (params, buffers), (x,))
        for k, model in enumerate(models):
            assert torch.allclose(out[k], model.eval()(x[k]), rtol=0, atol=1e-12)
    finally:
        torch.set_default_dtype(default)
    with_dropout = MLP((8,), 3, depth=2, width=8, dropout=0.25)
    assert direct_template(with_dropout) is None  # torch's Dropout: one p for the whole stack
    with_dropout.net[1][2] = TensorDropout(0.25)
    with_dropout.net[2][2] = TensorDropout(0.25)
    assert direct_template(with_dropout) is not None
    assert direct_template(MLP((8,), 3, width=8, norm=nn.BatchNorm1d)) is None
    assert direct_template(MLP((8,), 3, width=8, norm=nn.LayerNorm)) is None
    assert direct_template(CNN((16,), 3, channels=(4,))) is None
    assert direct_template(with_input_norm(MLP((8,), 3, width=8), torch.zeros(1), torch.ones(1))) is None


def test_a_members_checkpoints_hold_its_own_weights_alone(make_cfg, tmp_path):
    """A member's weights are slices of the stack's during training; what it saves must be its own
    (torch.save of a slice writes the slice's whole storage: every member's weights)."""
    cfgs = [make_cfg(*SMALL, *MLP, f"trainer.seed={s}", small=False) for s in range(3)]
    train_stack([{"cfg": c, "run_dir": tmp_path / str(i), "meta": None, "resume": False} for i, c in enumerate(cfgs)])

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from tensors(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from tensors(v)

    for i in range(3):
        for name in ("last.pt", "best.pt"):
            saved = list(tensors(torch.load(tmp_path / str(i) / name, weights_only=True)))
            assert len(saved) >= 8
            for w in saved:
                assert w.untyped_storage().nbytes() == w.numel() * w.element_size(), (i, name, w.shape)


def test_bf16_members_follow_their_ordinary_runs(make_cfg, tmp_path):
    """Under bf16 autocast the direct stack's products run in bfloat16 forward and backward, as an ordinary
    run's do: each epoch's training loss agrees with the ordinary run's (bfloat16 rounding apart)."""
    cfgs = [make_cfg(*SMALL, *MLP, "trainer.precision=bf16", f"trainer.seed={s}", small=False) for s in range(2)]
    for i, c in enumerate(cfgs):
        run(c, tmp_path / f"o{i}")
    train_stack([{"cfg": c, "run_dir": tmp_path / f"m{i}", "meta": None, "resume": False} for i, c in enumerate(cfgs)])
    for i in range(2):
        a, b = rows(tmp_path / f"o{i}"), rows(tmp_path / f"m{i}")
        assert len(a) == len(b) == 3
        assert [r["train_loss"] for r in b] == pytest.approx([r["train_loss"] for r in a], rel=1e-3)
        assert a[-1]["train_loss"] < a[0]["train_loss"]
