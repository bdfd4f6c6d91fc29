"""Every option file of every config group composes and trains a few steps. A new YAML file is
picked up here without anyone adding a line."""

import json

import pytest
from conftest import CONF

from runner.run import run

PRESETS = ("experiment", "launcher", "search", "logger", "preset")  # presets over the whole config (`+group=name`, or
# chosen by the model and optimizer: conf/preset/<model>_<optimizer>.yaml), not options of a run (logger: test_logger.py)
OPTIONS = sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml") if p.parent.name not in PRESETS)


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert groups == {"optimizer", "init", "norm", "regularizer", "schedule", "early_stopping", "clip", "model", "data",
                      "diagnostics", "lr_find", "augment"}


IMAGES = ["data=digits", "data.image=true"]
NEEDS = {("augment", "crop_flip"): IMAGES, ("augment", "cutout"): IMAGES}  # options that refuse the default MNIST-1D


def data_files(option: str, root) -> list[str]:
    """Tiny files in the exact format each file-reading data option expects (nothing can be downloaded here)."""
    import numpy as np
    from test_dataset_files import cifar_records, write_cifar10, write_mnist

    if option in ("mnist", "fashion_mnist"):
        write_mnist(root, n_train=40)
    elif option == "cifar10":
        write_cifar10(root, archive=True, n=8)
    elif option == "cifar100":
        (root / "cifar-100-binary").mkdir(parents=True)
        for name, n in (("train.bin", 40), ("test.bin", 8)):
            (root / "cifar-100-binary" / name).write_bytes(cifar_records(n, 2, 20)[0])
    elif option == "npz":
        rng = np.random.default_rng(0)
        np.savez(root.with_suffix(".npz"), x=rng.normal(size=(60, 4)), y=np.arange(60) % 3)
        return [f"data.path={root.with_suffix('.npz')}"]
    elif option == "csv":
        root.with_suffix(".csv").write_text("a,b,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(60)))
        return [f"data.path={root.with_suffix('.csv')}", "data.target=y"]
    else:
        return []
    return [f"data.root={root}", "data.val_size=8"]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_trains(make_cfg, tmp_path, group, option):
    extra = data_files(option, tmp_path / "data") if group == "data" else NEEDS.get((group, option), [])
    cfg = make_cfg(f"{group}={option}", "trainer.epochs=1", *extra)
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed", summary["stop_reason"]
    assert summary["steps"] > 0
    assert {p.name for p in tmp_path.iterdir()} >= {"metrics.csv", "summary.json", "last.pt", "best.pt"}
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 1.0


@pytest.mark.parametrize("preset", sorted(f"{p.parent.name}={p.stem}" for p in CONF.glob("*/*.yaml")
                                          if p.parent.name in ("launcher", "search")))
def test_launcher_and_search_presets_compose(preset):
    """Each preset selects its Hydra plugin (tests/test_launcher.py runs joblib, submitit_local and Optuna)."""
    from hydra import compose, initialize_config_module

    import runner.train  # noqa: F401  (the schemas and hydra/launcher=vectorized, as `train` has them)

    group, name = preset.split("=")
    if name == "ray":
        pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the optional ray extra is not installed")
    with initialize_config_module("runner.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"+{preset}"], return_hydra_config=True)
    node = cfg.hydra.launcher if group == "launcher" else cfg.hydra.sweeper
    assert name.split("_")[0] in node._target_.lower() or "optuna" in node._target_.lower()


@pytest.mark.parametrize("pair", sorted(p.stem for p in (CONF / "preset").glob("*.yaml")))
def test_model_optimizer_preset_is_chosen_by_the_pair(make_cfg, pair):
    """conf/preset/<model>_<optimizer>.yaml applies to that pair alone, over the optimizer's own file, and a
    command-line value still wins."""
    from omegaconf import OmegaConf

    model, optimizer = pair.split("_", 1)
    preset = OmegaConf.load(CONF / "preset" / f"{pair}.yaml")
    own = OmegaConf.load(CONF / "optimizer" / f"{optimizer}.yaml")
    assert preset["optimizer"]["lr"] != own["lr"]  # else the preset changes nothing
    cfg = make_cfg(f"model={model}", f"optimizer={optimizer}")
    assert cfg.optimizer.lr == preset["optimizer"]["lr"]
    assert make_cfg("model=mlp", f"optimizer={optimizer}").optimizer.lr == own["lr"]
    assert make_cfg(f"model={model}", f"optimizer={optimizer}", "optimizer.lr=0.123").optimizer.lr == 0.123
