import csv

import numpy as np
import pytest


def test_suggestion_lands_in_the_decade_of_the_best_constant_lr(make_cfg, tmp_path):
    """Linear regression with SGD is a quadratic: gradient descent's best constant lr is
    2 / (largest + smallest Hessian eigenvalue), and it diverges above 2 / largest."""
    from runner.data import load
    from runner.lr_find import run_lr_find

    cfg = make_cfg("lr_find=on", "data=teacher", "model.depth=0", "optimizer=sgd")
    summary = run_lr_find(cfg, tmp_path)
    d = load(cfg.data, tmp_path)
    x = np.c_[d.x_train.numpy(), np.ones(len(d.x_train))]  # the bias is a weight on a constant input
    eig = np.linalg.eigvalsh(2 * x.T @ x / len(x))  # Hessian of the mean squared error
    best = 2 / (eig[-1] + eig[0])
    assert np.floor(np.log10(summary["suggested_lr"])) == np.floor(np.log10(best))
    assert summary["suggested_lr"] < 2 / eig[-1]
    rows = list(csv.DictReader(open(tmp_path / "lr_find.csv")))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_suggest_on_a_constructed_curve():
    from runner.lr_find import suggest

    lrs = np.logspace(-6, 0, 121)
    loss = 2 - np.tanh(2 * (np.log10(lrs) + 3)) + np.where(lrs > 0.1, 50 * (lrs - 0.1), 0)  # falls at 1e-3, min ~0.1
    found = suggest([{"lr": a, "smoothed_loss": b} for a, b in zip(lrs, loss)])
    assert found["steepest_lr"] == pytest.approx(1e-3, rel=0.15)
    assert found["min_loss_lr"] == pytest.approx(lrs[np.argmin(loss)]) and found["suggested_lr"] == found["min_loss_lr"] / 2


def test_cli_prints_the_suggestion(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([str(Path(sys.executable).with_name("train")), "lr_find=on", "data=digits",
                           "lr_find.steps=100"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "suggested lr" in proc.stdout and list(tmp_path.glob("outputs/*/*/lr_find.png"))
