"""Bad input: one line naming the key, the value and what is allowed; exit code 2; no traceback;
no run folder left behind. `train` runs in-process here (the same code path as the console script)."""

import sys

import pytest

from runner import train

INVALID = [
    (["optimizer.lr=0"], "optimizer.lr=0: must be a number > 0"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1"),
    (["regularizer.dropout=1.0"], "regularizer.dropout=1.0: must be a number in [0, 1)"),
    (["regularizer.dropout=-0.1"], "regularizer.dropout=-0.1"),
    (["regularizer.input_dropout=1.5"], "regularizer.input_dropout=1.5"),
    (["optimizer=momentum", "optimizer.momentum=1.0"], "optimizer.momentum=1.0: must be a number in [0, 1)"),
    (["optimizer=sgd", "+optimizer.momentum=-0.5"], "optimizer.momentum=-0.5"),
    (["optimizer.betas=[0.9,1.2]"], "optimizer.betas[1]=1.2"),
    (["regularizer=l2", "regularizer.lambda=-1e-4"], "regularizer.lambda=-0.0001: must be a number >= 0"),
    (["early_stopping=patience", "early_stopping.patience=-1"], "early_stopping.patience=-1: must be an integer >= 0"),
    (["trainer.epochs=0"], "trainer.epochs=0: must be an integer >= 1"),
    (["trainer.batch_size=0"], "trainer.batch_size=0: must be an integer >= 1"),
    (["early_stopping=patience", "early_stopping.monitor=val_accuracy"],
     "early_stopping.monitor='val_accuracy': must be one of ['grad_norm', 'lr', 'train_acc', 'train_loss', 'val_acc'"),
    (["data=teacher", "early_stopping.monitor=val_acc"], "early_stopping.monitor='val_acc'"),
    (["schedule=plateau", "schedule.monitor=test_acc"], "schedule.monitor='test_acc'"),
    (["model.activation=swish"], "model.activation='swish': must be one of ['elu', 'gelu'"),
    (["trainer.device=cuda"], "trainer.device='cuda'"),
    (["trainer.device=tpu"], "trainer.device='tpu'"),
    (["norm=batchnorm", "trainer.batch_size=1"], "trainer.batch_size=1: batchnorm needs batches of 2 or more"),
    (["schedule.warmup=31", "schedule.warmup_unit=epochs"], "schedule.warmup=31 (epochs): must be shorter than training"),
    (["data.label_noise=1.0"], "data.label_noise=1.0"),
    (["data=moons", "data.val_size=0"], "data.val_size=0"),
    (["norm=groupnorm", "norm.num_groups=7"], "norm.num_groups=7: must divide every layer width"),
    (["model=cnn", "model.kernel_size=4"], "model.kernel_size=4: must be odd"),
    (["clip=norm", "clip.max_norm=0"], "clip.max_norm=0"),
    (["schedule=step", "schedule.gamma=1.5"], "schedule.gamma=1.5"),
    (["lookahead.k=5", "lookahead.alpha=0"], "lookahead.alpha=0"),
    (["trainer.precision=fp16"], "trainer.precision='fp16': must be one of ['bf16', 'fp32']"),
    (["init=he", "init.weight.mode=fan_avg"], "init.weight.mode='fan_avg'"),
    (["data.name=imagenet"], "data.name='imagenet'"),
    (["model=resnet", "model.depth=21"], "model.depth=21: must be 6n + 2"),
    (["data=mnist", "data.download_timeout=0"], "data.download_timeout=0: must be a number > 0"),
    (["+schedule.step_size=7"], "schedule.step_size=7: schedule=constant has no such setting"),
    # Hydra's own refusals (a key that does not exist, a wrong type, an unknown option) exit 2 as well
    (["trainer.epoch=5"], "Key 'epoch' not in 'TrainerConfig'"),
    (["trainer.epochs=many"], "trainer.epochs"),
    (["optimizer=adamax"], "Could not find 'optimizer/adamax'"),
]


def run_cli(monkeypatch, tmp_path, *args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train", *args])
    return train.cli()


@pytest.mark.parametrize("overrides,message", INVALID, ids=[" ".join(o) for o, _ in INVALID])
def test_invalid_value_is_refused_with_one_clear_message(monkeypatch, tmp_path, capsys, overrides, message):
    code = run_cli(monkeypatch, tmp_path, *overrides)
    out = capsys.readouterr()
    assert code == train.EXIT_CODES["invalid"] == 2
    assert message in out.err + out.out
    assert "Traceback" not in out.err + out.out
    assert not list(tmp_path.glob("outputs/**/summary.json")) and not list(tmp_path.glob("outputs/*/*"))


def test_several_problems_are_all_listed(monkeypatch, tmp_path, capsys):
    run_cli(monkeypatch, tmp_path, "optimizer.lr=0", "trainer.batch_size=0", "model.activation=swish")
    err = capsys.readouterr().err
    assert "optimizer.lr=0" in err and "trainer.batch_size=0" in err and "model.activation='swish'" in err


def test_a_valid_run_exits_0(monkeypatch, tmp_path):
    assert run_cli(monkeypatch, tmp_path, "data=digits", "trainer.epochs=1") == 0
    assert len(list(tmp_path.glob("outputs/*/*/summary.json"))) == 1
