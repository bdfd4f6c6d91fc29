import csv
import json

import pytest

from runner.early_stopping import EarlyStopping, EarlyStoppingConfig


def feed(values, **kw):
    es = EarlyStopping(EarlyStoppingConfig(**kw))
    for epoch, v in enumerate(values, 1):
        es.update(v, epoch)
        if es.should_stop:
            return es, epoch
    return es, None


def test_stops_after_patience_evaluations_without_improvement():
    es, stopped = feed([5, 4, 4.5, 4.2, 4.1, 3.0], patience=3)
    assert stopped == 5 and es.best == 4 and es.best_epoch == 2


def test_improvement_resets_the_counter():
    es, stopped = feed([5, 4, 4.5, 3.9, 4.0, 4.0, 4.0], patience=3)
    assert stopped == 7 and es.best_epoch == 4


def test_min_delta_and_max_mode():
    es, stopped = feed([0.5, 0.6, 0.605, 0.609, 0.7], mode="max", patience=2, min_delta=0.01)
    assert stopped == 4 and es.best == 0.6  # +0.005 and +0.009 are not improvements by more than 0.01


def test_start_from_epoch_ignores_early_evaluations():
    es, stopped = feed([1, 2, 3, 4, 5, 6], patience=2, start_from_epoch=3)
    assert es.best == 3 and stopped == 5


def test_no_patience_never_stops():
    es, stopped = feed([1, 2, 3, 4, 5, 6, 7])
    assert stopped is None and es.best == 1


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="early_stopping.mode='up'"):
        EarlyStopping(EarlyStoppingConfig(mode="up"))


def test_run_stops_and_restores_the_best_weights(make_cfg, tmp_path):
    """A tiny noisy training set overfits fast; the run stops `patience` evaluations after
    its best one, and the weights it tests are the best evaluation's (same val loss)."""
    from runner.run import run

    patience = 3
    cfg = make_cfg("early_stopping=patience", f"early_stopping.patience={patience}", "regularizer=none",
                   "data.train_size=200", "data.label_noise=0.3", "optimizer.lr=0.01", "trainer.epochs=200",
                   "trainer.batch_size=50")
    summary = run(cfg, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    val = [float(r["val_loss"]) for r in rows]
    best = min(range(len(val)), key=val.__getitem__)
    assert summary["stop_reason"].startswith("early stopping")
    assert len(rows) == best + 1 + patience
    assert summary["best_epoch"] == float(rows[best]["epoch"])
    assert summary["val_loss"] == pytest.approx(val[best], rel=1e-5)
    assert summary["restored_best"] and json.load(open(tmp_path / "summary.json"))["epochs"] == len(rows)


def test_restores_best_weights_even_without_stopping(make_cfg, tmp_path):
    from runner.run import run

    cfg = make_cfg("early_stopping=patience", "early_stopping.patience=1000", "regularizer=none",
                   "data.train_size=200", "data.label_noise=0.3", "optimizer.lr=0.01", "trainer.epochs=15",
                   "trainer.batch_size=50")
    summary = run(cfg, tmp_path)
    val = [float(r["val_loss"]) for r in csv.DictReader(open(tmp_path / "metrics.csv"))]
    assert summary["stop_reason"] == "reached trainer.epochs=15"
    assert min(val) < val[-1]  # the last epoch is not the best, so restoring matters
    assert summary["val_loss"] == pytest.approx(min(val), rel=1e-5)
