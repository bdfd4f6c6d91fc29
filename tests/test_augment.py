"""Each augmentation against a hand computation on a tiny batch; the options' fit to the data;
composition through the real CLI; evaluation never augments."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from runner.augment import Augment, crop, cut, flip, make_augment, mix, stretch, translate
from runner.check import ConfigError
from runner.data import Splits


def test_crop_takes_the_window_at_the_offsets_of_the_zero_padded_image():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    out = crop(x, 1, torch.tensor([1, 0, 2]), torch.tensor([1, 2, 0]))
    assert torch.equal(out[0, 0], x[0, 0])  # (pad, pad): the original
    assert out[1, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]  # one up (zero row), one right (zero column)
    assert out[2, 0].tolist() == [[0, 4, 5], [0, 7, 8], [0, 0, 0]]
    assert out.dtype == torch.uint8


def test_flip_mirrors_only_the_chosen_images():
    x = torch.arange(12.0).view(2, 1, 2, 3)
    out = flip(x, torch.tensor([True, False]))
    assert out[0, 0].tolist() == [[2, 1, 0], [5, 4, 3]] and torch.equal(out[1], x[1])


def test_cutout_area_and_fill():
    x = torch.full((3, 2, 6, 6), 7, dtype=torch.uint8)
    out = cut(x, 2, torch.tensor([3, 0, 3]), torch.tensor([3, 0, 0]), torch.tensor([1, 2]))
    changed = (out != 7).all(1)  # every channel changes together
    assert changed.sum((1, 2)).tolist() == [4, 1, 2]  # a full 2x2; clipped to 1x1 in the corner; 2x1 at the left edge
    assert changed[0, 2:4, 2:4].all()  # rows cy - size // 2 ... cy - size // 2 + size - 1
    assert out[0, 0, 2, 2] == 1 and out[0, 1, 2, 2] == 2


def test_mixup_is_the_convex_combination_and_its_loss_the_mixed_cross_entropy():
    x = torch.tensor([[0.0, 1.0], [4.0, 3.0], [2.0, 2.0]])
    y = torch.tensor([0, 2, 1])
    perm = torch.tensor([2, 0, 1])
    xm, ym = mix(x, y, 0.25, perm, 3)
    assert xm.tolist() == [[1.5, 1.75], [1.0, 1.5], [3.5, 2.75]]  # 0.25 x + 0.75 x[perm], by hand
    assert ym.tolist() == [[0.25, 0.75, 0.0], [0.75, 0.0, 0.25], [0.0, 0.25, 0.75]]
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0], [0.0, 3.0, 1.0]])
    logp = logits.log_softmax(1)
    by_hand = sum(-0.25 * logp[i, y[i]] - 0.75 * logp[i, y[perm[i]]] for i in range(3)) / 3
    torch.testing.assert_close(F.cross_entropy(logits, ym), by_hand)
    xr, yr = mix(x, torch.tensor([[1.0], [3.0], [5.0]]), 0.5, perm, None)  # regression: the targets mix alike
    assert yr.tolist() == [[3.0], [2.0], [4.0]]


def test_shift_moves_and_zero_fills():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    assert translate(x, torch.tensor([1, -2])).tolist() == [[0, 1, 2, 3], [3, 4, 0, 0]]
    assert translate(x[:, None], torch.tensor([0, 3])).tolist() == [[[1, 2, 3, 4]], [[0, 0, 0, 1]]]


def test_scale_stretches_about_the_centre():
    ramp = torch.arange(5.0).repeat(2, 1)  # centre 2
    out = stretch(ramp, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(out[0], ramp[0])
    torch.testing.assert_close(out[1], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))  # value at 2 + (i - 2) / 2


def splits(kind, shape, task="classification", mean=None, std=None):
    x = torch.zeros(8, *shape, dtype=torch.uint8 if mean is not None else torch.float32)
    y = torch.arange(8) % 2 if task == "classification" else torch.zeros(8, 1)
    return Splits(x, y, x, y, x, y, task, 2 if task == "classification" else 1, kind, mean, std)


@pytest.mark.parametrize("option,kind,shape", [("crop_flip", "tabular", (64,)), ("cutout", "signal", (40,)),
                                               ("shift", "image", (1, 8, 8)), ("scale", "tabular", (5,))])
def test_each_option_refuses_data_it_does_not_fit(option, kind, shape):
    cfg = OmegaConf.create({option: {"crop_flip": {"pad": 2, "flip": True}, "cutout": {"size": 2},
                                     "shift": {"max": 2}, "scale": {"max": 0.2}}[option]})
    with pytest.raises(ConfigError, match=rf"augment={option}: does not fit {kind} data of shape"):
        make_augment(cfg, splits(kind, shape))


def test_bad_settings_are_named():
    data = splits("image", (1, 8, 8), mean=torch.tensor([3.0]), std=torch.tensor([2.0]))
    cases = {"cutout": ({"size": 9}, "augment.cutout.size=9: must be at most the image side 8"),
             "crop_flip": ({"pad": -1, "flip": True}, "augment.crop_flip.pad=-1: must be an integer >= 0"),
             "mixup": ({"alpha": 0}, r"augment.mixup.alpha=0: must be a number > 0"),
             "noise": ({"std": 0.1, "sd": 1}, r"augment.noise.sd: not a setting of noise"),
             "blur": ({}, r"augment.blur: not an augmentation; choose from \['crop_flip'")}
    for name, (params, message) in cases.items():
        with pytest.raises(ConfigError, match=message):
            make_augment(OmegaConf.create({name: params}), data)
    assert make_augment(OmegaConf.create({}), data) is None


def test_options_compose_in_order_and_are_seeded():
    data = splits("image", (1, 8, 8), mean=torch.tensor([3.4]), std=torch.tensor([2.0]))
    augment = make_augment(OmegaConf.create({"crop_flip": {"pad": 2, "flip": True}, "cutout": {"size": 3},
                                             "noise": {"std": 0.5}}), data)
    assert [name for name, _ in augment.ops] == ["crop_flip", "cutout", "noise"]
    assert augment.fill.tolist() == [3]  # cutout fills with the training mean, rounded to the uint8 grid
    x = torch.randint(0, 17, (16, 1, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    a, _ = augment(x, torch.zeros(16, dtype=torch.long))
    torch.manual_seed(0)
    b, _ = augment(x, torch.zeros(16, dtype=torch.long))
    assert torch.equal(a, b) and not torch.equal(a, x.float())
    noise_only = Augment([("noise", {"std": 0.5})], augment.fill, data.std, None)
    many = noise_only(torch.zeros(20000, 1, 1, 1, dtype=torch.uint8), None)[0]
    assert many.std().item() == pytest.approx(0.5 * 2.0, rel=0.03)  # in units of the data's std


def test_training_alone_is_augmented(make_cfg, tmp_path):
    """fit calls augment once per training step with a training batch; evaluation never does."""
    from runner.run import prepare
    from runner.schedule import make_lr_at
    from runner.trainer import evaluate, fit

    cfg = make_cfg("data=digits", "data.image=true", "model=cnn", "model.channels=[8]", "model.kernel_size=3",
                   "trainer.batch_size=100", "augment=crop_flip")
    trainer, stopping, device, data, model, optimizer = prepare(cfg)
    inner = make_augment(cfg.augment, data)
    calls = []

    def counting(x, y):
        calls.append(len(x))
        return inner(x, y)

    before = evaluate(model, data.x_val, data.y_val, data.task)
    torch.manual_seed(0)
    result = fit(model, data, optimizer, make_lr_at(cfg.schedule, 1e-3, 11, 22), trainer, stopping, augment=counting)
    assert calls == [100] * result["steps"] == [100] * 22  # 1197 // 100 steps x 2 epochs, evaluations excluded
    assert len(result["rows"]) == 2 and before != evaluate(model, data.x_val, data.y_val, data.task)


def test_composition_through_the_cli(tmp_path):
    """augment=[crop_flip,cutout] in Hydra 1.3 selects both files of the group, in that order."""
    train = str(Path(sys.executable).with_name("train"))
    proc = subprocess.run([train, "data=digits", "data.image=true", "model=cnn", "model.channels=[8]",
                           "model.kernel_size=3", "trainer.epochs=1", "augment=[crop_flip,cutout]",
                           "augment.crop_flip.flip=false", "augment.cutout.size=2", "hydra.run.dir=run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import yaml

    config = yaml.safe_load((tmp_path / "run" / ".hydra" / "config.yaml").read_text())
    assert config["augment"] == {"crop_flip": {"pad": 4, "flip": False}, "cutout": {"size": 2}}
    refused = subprocess.run([train, "augment=crop_flip", "trainer.epochs=1"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and "augment=crop_flip: does not fit signal data of shape (40,)" in refused.stderr


def test_an_interrupted_augmented_run_resumes_exactly(make_cfg, tmp_path):
    """The augmentations draw from torch's generators, whose states last.pt keeps: a run cut
    after its second evaluation and resumed ends with the metrics of one never interrupted."""
    import os
    import signal

    from runner.run import run

    cfg = make_cfg("data=digits", "data.image=true", "model=cnn", "model.channels=[8]", "model.kernel_size=3",
                   "trainer.epochs=5", "augment=[crop_flip,cutout,mixup]", "augment.cutout.size=3",
                   "augment.crop_flip.pad=1", "diagnostics=off")
    whole = run(cfg, tmp_path / "whole")
    cut = run(cfg, tmp_path / "cut", on_eval=lambda row: row["epoch"] == 2 and os.kill(os.getpid(), signal.SIGINT))
    assert cut["status"] == "interrupted" and cut["steps"] < whole["steps"]
    resumed = run(cfg, tmp_path / "cut", resume=True)

    def rows(name):
        return [line.rsplit(",", 1)[0] for line in (tmp_path / name / "metrics.csv").read_text().splitlines()]

    assert rows("cut") == rows("whole") and resumed["test_loss"] == whole["test_loss"]
