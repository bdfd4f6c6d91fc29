"""Bad input: one line naming the key, the value and what is allowed; exit code 2; no traceback;
no run folder left behind. `train` runs in-process here (the same code path as the console script)."""

import sys

import pytest
from omegaconf import OmegaConf

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
    # issue 12: refused at run time before (exit 1 and a folder left), now here
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9]: must be a list of 2 numbers in [0, 1)"),
    (["data.seed=-1"], "data.seed=-1: must be an integer >= 0"),
    (["data.seed=abc"], "data.seed='abc': must be an integer >= 0"),
    (["data.seed=1.5"], "data.seed=1.5: must be an integer >= 0"),
    (["data.val_size=5999"], "leave none of the 6000 for training"),
    (["+optimizer.foo=1"], "optimizer.foo=1: torch.optim.AdamW takes no such argument"),
    (["optimizer.lr=inf"], "optimizer.lr=inf: must be finite, a number > 0"),
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


def test_betas_given_as_a_word_is_one_message(monkeypatch, tmp_path, capsys):
    assert run_cli(monkeypatch, tmp_path, "optimizer.betas=abc") == 2
    err = capsys.readouterr().err
    assert err.count("optimizer.betas") == 1 and "must be a list of 2 numbers" in err


def test_item3_lambda_without_a_penalty_is_refused(monkeypatch, tmp_path, capsys):
    """regularizer.lambda=0.1 under the default regularizer=dropout would change nothing."""
    assert run_cli(monkeypatch, tmp_path, "regularizer.lambda=0.1") == 2
    assert "regularizer.lambda=0.1: regularizer has no weight penalty" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").glob("*/*"))


def test_item4_unknown_top_level_key_is_refused(monkeypatch, tmp_path, capsys):
    """`+optimiser=adam`, Hydra's own suggestion for the misspelt `optimiser=adam`, trained AdamW."""
    assert run_cli(monkeypatch, tmp_path, "+optimiser=adam") == 2
    assert "optimiser='adam': not a config key, nothing would read it; did you mean optimizer?" in \
        capsys.readouterr().err


def test_item5_two_weight_penalties_warn_and_are_recorded(monkeypatch, tmp_path, capsys):
    import json

    from runner.check import config_warnings

    assert run_cli(monkeypatch, tmp_path, "data=digits", "trainer.epochs=1", "regularizer=l2") == 0
    (summary,) = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/*/*/summary.json")]
    assert len(summary["warnings"]) == 1 and "optimizer.weight_decay=0.01" in summary["warnings"][0]
    out = capsys.readouterr()
    assert "two weight penalties at once" in out.out + out.err  # Hydra's console log handler: stdout
    assert summary["warnings"] == config_warnings(OmegaConf.create(summary["config"]))


def test_item14_norm_momentum_null_is_allowed(make_cfg):
    """torch's cumulative average (momentum=None): the lectures' plain average of the batch statistics."""
    import torch

    from runner.build import build
    from runner.check import check_config

    cfg = make_cfg("norm=batchnorm", "norm.momentum=null", "data=digits")
    check_config(cfg)
    bn = build(cfg.norm)(3)
    batches = [torch.randn(8, 3) + i for i in range(3)]
    for b in batches:
        bn(b)
    assert torch.allclose(bn.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0), atol=1e-6)
