"""`report` on fabricated run folders with known numbers, on a real sweep, and on broken runs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from runner.report import load_runs, main, p_value, report

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, name: str, config: dict, summary: dict | None = None, curve: list | None = None,
             choices: dict | None = None) -> Path:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra/config.yaml").write_text(yaml.safe_dump(config))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps({"status": "completed", "choices": choices or {}, **summary}))
    if curve is not None:
        rows = ["epoch,step,val_acc,val_loss"] + [f"{e},{10 * e},{a},{1 - a}" for e, a in enumerate(curve, 1)]
        (d / "metrics.csv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture
def two_arms(tmp_path):
    """sgd (lr 0.1) and adamw (lr 0.001), 3 seeds each, known test accuracies."""
    acc = {"sgd": [0.5, 0.6, 0.7], "adamw": [0.8, 0.85, 0.9]}
    lr = {"sgd": 0.1, "adamw": 0.001}
    job = 0
    for opt in ("sgd", "adamw"):
        for seed, a in enumerate(acc[opt]):
            fake_run(tmp_path / "sweep", str(job),
                     {"optimizer": {"_target_": f"torch.optim.{opt}", "lr": lr[opt]}, "trainer": {"seed": seed},
                      "paths": {"data_dir": "/x"}},
                     {"test_acc": a, "test_loss": 1 - a, "epochs": 10}, curve=[a - 0.2, a - 0.1, a],
                     choices={"optimizer": opt, "trainer": "schema"})
            job += 1
    return tmp_path / "sweep"


def test_varying_keys_groups_and_confidence_intervals(two_arms):
    res = report([two_arms], plots=False)
    assert res["keys"] == ["optimizer", "optimizer.lr"]  # the choice and its hyperparameter; not the seed
    g = res["groups"].set_index("optimizer")
    assert g.loc["sgd", "test_acc_mean"] == pytest.approx(0.6)
    assert g.loc["sgd", "test_acc_std"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + 0 + .1^2) / 2)
    assert g.loc["sgd", "test_acc_n"] == 3 and g.loc["adamw", "runs"] == 3
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert (g.loc["sgd", "test_acc_ci_low"], g.loc["sgd", "test_acc_ci_high"]) == pytest.approx((0.6 - half, 0.6 + half))
    assert g.loc["adamw", "test_acc_std"] == pytest.approx(0.05)
    assert list(res["runs"]["run"]) == [str(i) for i in range(6)]


def test_baseline_difference_and_exact_permutation_p(two_arms):
    res = report([two_arms], baseline={"optimizer": "adamw"}, plots=False)
    g = res["groups"].set_index("optimizer")
    assert g.loc["sgd", "test_acc_diff"] == pytest.approx(0.6 - 0.85)
    # all 20 ways to split the 6 values 3/3: only the observed split and its mirror reach |diff| = 0.25
    assert g.loc["sgd", "test_acc_p"] == pytest.approx(2 / 20)
    assert g.loc["sgd", "test_acc_test"] == "permutation"
    assert g.loc["adamw", "test_acc_diff"] == 0 and g.loc["adamw", "test_acc_p"] == 1


def test_welch_for_larger_groups():
    from scipy import stats

    a, b = [0.1 * i for i in range(8)], [0.3 + 0.05 * i for i in range(7)]
    ma, mb = sum(a) / 8, sum(b) / 7
    va, vb = (sum((x - ma) ** 2 for x in a) / 7), (sum((x - mb) ** 2 for x in b) / 6)
    t = (ma - mb) / math.sqrt(va / 8 + vb / 7)
    df = (va / 8 + vb / 7) ** 2 / ((va / 8) ** 2 / 7 + (vb / 7) ** 2 / 6)  # Welch-Satterthwaite
    p, test = p_value(a, b)
    assert test == "welch" and p == pytest.approx(2 * stats.t.sf(abs(t), df))


def test_markdown_latex_csv_and_plots(two_arms, tmp_path):
    out = tmp_path / "out"
    report([two_arms], out=out, baseline={"optimizer": "adamw"})
    md = (out / "report.md").read_text()
    assert "| optimizer | test acc | n | 95% CI | diff | p |" in md  # optimizer.lr: in groups.csv
    assert "| sgd | 0.60 ± 0.10 | 3 |" in md  # std 0.1 to 2 significant digits, the mean to its place
    tex = (out / "report.tex").read_text()
    assert r"\begin{tabular}" in tex and "test acc" in tex and r"0.60 $\pm$ 0.10" in tex
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and {"optimizer", "trainer.seed", "status", "test_acc"} <= set(runs.columns)
    groups = pd.read_csv(out / "groups.csv")
    assert len(groups) == 2 and "test_acc_ci_low" in groups
    for png in ["curves.png"]:
        assert (out / png).read_bytes()[:8] == PNG


def grid(root: Path):
    """lambda in {0, 1e-4, 1e-3} x dropout in {0, 0.5}, 2 seeds; acc = 0.9 - 100 lambda - 0.1 p + 0.01 seed."""
    job = 0
    for lam in (0.0, 1e-4, 1e-3):
        for p in (0.0, 0.5):
            for seed in (0, 1):
                acc = 0.9 - 100 * lam - 0.1 * p + 0.01 * seed
                fake_run(root, str(job), {"regularizer": {"lambda": lam, "dropout": p}, "trainer": {"seed": seed}},
                         {"test_acc": acc}, curve=[acc])
                job += 1


def test_pivot_shape_cells_heatmap_and_log_axis_plot(tmp_path):
    grid(tmp_path / "sweep")
    res = report([tmp_path / "sweep"], rows="regularizer.lambda", cols="regularizer.dropout")
    table = res["pivot"]
    assert table.shape == (3, 2)
    std = math.sqrt(2 * 0.005**2)  # two seeds 0.01 apart: 0.0070711, to 2 significant digits 0.0071
    assert table.loc["0.0001", "0.5"] == f"{0.9 - 0.01 - 0.05 + 0.005:.4f} ± 0.0071" and std == pytest.approx(0.0071, 1e-2)
    out = tmp_path / "sweep" / "report"
    assert (out / "pivot.png").read_bytes()[:8] == PNG
    assert (out / "test_acc_vs_regularizer.lambda.png").read_bytes()[:8] == PNG
    assert "## test_acc: regularizer.lambda x regularizer.dropout" in (out / "report.md").read_text()
    assert list(table.index) == ["0", "0.0001", "0.001"] and list(table.columns) == ["0", "0.5"]  # one way both


def test_broken_runs_are_marked_not_fatal(tmp_path, capsys):
    root = tmp_path / "sweep"
    fake_run(root, "0", {"a": {"x": 1}}, {"test_acc": 0.7}, curve=[0.7])
    fake_run(root, "1", {"a": {"x": 2}}, {"test_acc": 0.8})  # no metrics.csv
    fake_run(root, "2", {"a": {"x": 3}}, None, curve=[0.1, 0.2])  # still running: no summary yet
    bad = fake_run(root, "3", {"a": {"x": 4}}, None)
    (bad / "summary.json").write_text('{"status": "compl')  # cut off
    fake_run(root, "4", {"a": {"x": 5}}, {"status": "diverged", "test_acc": 0.1})
    warnings = []
    res = report([root], warn=warnings.append)
    status = dict(zip(res["runs"]["run"], res["runs"]["status"]))
    assert status == {"0": "completed", "1": "completed", "2": "unfinished", "3": "unreadable", "4": "diverged"}
    assert res["runs"].set_index("run").loc["2", "epochs"] == 2
    assert len(warnings) == 1 and str(bad / "summary.json") in warnings[0]
    assert (root / "report" / "report.md").exists() and (root / "report" / "curves.png").exists()


def test_cli_reports_a_real_sweep_and_a_single_run(tmp_path):
    train = str(Path(sys.executable).with_name("train"))
    fast = ["trainer.epochs=2", "data=digits"]
    subprocess.run([train, "-m", *fast, "regularizer.dropout=0,0.5", "trainer.seed=0,1"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    subprocess.run([train, *fast], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    proc = subprocess.run([str(Path(sys.executable).with_name("report")), "outputs", "--out", "rep",
                           "--baseline", "regularizer.dropout=0"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = load_runs(tmp_path / "outputs")
    assert len(runs) == 5 and set(runs["status"]) == {"completed"}
    groups = pd.read_csv(tmp_path / "rep" / "groups.csv")
    assert sorted(groups["runs"]) == [1, 2, 2]  # dropout 0.2 (the single default run), 0 and 0.5 over 2 seeds
    assert "5 runs in 3 groups" in proc.stdout


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2


def test_ensemble_of_a_groups_seeds_by_hand(tmp_path):
    import numpy as np

    targets = np.array([0, 1, 2, 1])
    probs = [np.array([[.6, .3, .1], [.5, .4, .1], [.2, .3, .5], [.1, .8, .1]]),  # right on 0, 2, 3: acc 0.75
             np.array([[.4, .5, .1], [.1, .8, .1], [.3, .4, .3], [.2, .7, .1]]),  # right on 1, 3: acc 0.5
             np.array([[.7, .2, .1], [.2, .7, .1], [.1, .6, .3], [.6, .3, .1]])]  # right on 0, 1: acc 0.5
    for seed, p in enumerate(probs):
        d = fake_run(tmp_path / "sweep", str(seed), {"trainer": {"seed": seed}},
                     {"test_acc": float((p.argmax(1) == targets).mean())})
        np.savez(d / "predictions.npz", predictions=p, targets=targets)
    # mean probabilities: [.567 .333 .1], [.267 .633 .1], [.2 .433 .367], [.3 .6 .1] -> classes 0, 1, 1, 1
    res = report([tmp_path / "sweep"], plots=False)
    g = res["groups"].iloc[0]
    assert g["ensemble_test_acc"] == pytest.approx(0.75) and g["ensemble_n"] == 3
    assert g["test_acc_mean"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert "ensemble" in res["shown"].columns


# issue 12, items 9-11 and 15-17: report on partial folders, single seeds, and as a paper shows it

def test_item9_pivot_on_a_single_seed_sweep_and_no_half_report(tmp_path):
    """The README's 9-run lambda x p sweep, one seed each: a pivot of means (no std), no KeyError."""
    root = tmp_path / "sweep"
    job = 0
    for lam in (0.0, 1e-4, 1e-3):
        for p in (0.0, 0.25, 0.5):
            fake_run(root, str(job), {"regularizer": {"lambda": lam, "dropout": p}, "trainer": {"seed": 0}},
                     {"test_acc": 0.9 - 100 * lam - 0.1 * p}, curve=[0.5, 0.6])
            job += 1
    res = report([root], rows="regularizer.lambda", cols="regularizer.dropout")
    assert res["pivot"].loc["0.001", "0.25"] == f"{0.9 - 0.1 - 0.025:.4g}"  # one run: its value alone
    assert (root / "report" / "pivot.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="--value 'test_accuracy'"):  # refused before a file is written
        report([root], out=tmp_path / "half", rows="regularizer.lambda", cols="regularizer.dropout",
               value="test_accuracy")
    assert not (tmp_path / "half").exists()


def test_item10_baseline_of_one_run_and_a_baseline_naming_several_groups(tmp_path):
    root = tmp_path / "sweep"
    fake_run(root, "base", {"o": {"name": "a"}, "trainer": {"seed": 0}}, {"test_acc": 0.5})
    others = [0.6 + 0.01 * i for i in range(12)]
    for i, v in enumerate(others):
        fake_run(root, f"b{i}", {"o": {"name": "b"}, "trainer": {"seed": i}}, {"test_acc": v})
    res = report([root], baseline={"o.name": "a"}, plots=False)
    g = res["groups"].set_index("o.name")
    # 1 run against 12: 13 splits, one per value left alone; the extreme ones are as far from the rest's mean
    pooled = [0.5, *others]
    far = [abs(v - (sum(pooled) - v) / 12) for v in pooled]
    assert g.loc["b", "test_acc_p"] == pytest.approx(sum(f >= far[0] - 1e-12 for f in far) / 13)
    assert g.loc["b", "test_acc_test"] == "permutation"
    # a baseline that names two groups (o.name=b alone would pool runs of both lr values) is refused
    for i, lr in enumerate((0.1, 0.2)):
        fake_run(tmp_path / "two", str(i), {"o": {"name": "b", "lr": lr}}, {"test_acc": 0.5 + i})
    with pytest.raises(ValueError, match=r"matches 2 groups .*add a value for o.lr"):
        report([tmp_path / "two"], baseline={"o.name": "b"}, plots=False)
    assert main([str(tmp_path / "two"), "--baseline", "o.name=b", "--no-plots"]) == 2


def test_item11_partial_folders_never_break_report(tmp_path, capsys):
    root = tmp_path / "sweep"
    for i in range(3):  # a live sweep: no metrics.csv yet anywhere, no summary
        fake_run(root, f"live{i}", {"a": {"x": i}})
    res = report([root])
    assert set(res["runs"]["status"]) == {"unfinished"}
    cut = fake_run(root, "cut", {"a": {"x": 9}}, {"test_acc": 0.7})
    (cut / "metrics.csv").write_text("epoch,step,val_acc,val_loss\n1,10,0.5,0.5\n2,20,0.6,0.4\n3,30,0.6")  # cut off
    for i, junk in enumerate(["[1, 2]", '"completed"', "null"]):
        fake_run(root, f"junk{i}", {"a": {"x": 20 + i}}, {"test_acc": 0.1})
        (root / f"junk{i}" / "summary.json").write_text(junk)
    warnings = []
    res = report([root], warn=warnings.append)
    status = dict(zip(res["runs"]["run"], res["runs"]["status"]))
    assert status["cut"] == "completed" and [status[f"junk{i}"] for i in range(3)] == ["unreadable"] * 3
    assert len(warnings) == 3 and "JSON list" in warnings[0]
    from runner.runfolder import read_metrics

    assert [r["epoch"] for r in read_metrics(cut / "metrics.csv")] == [1.0, 2.0]  # the cut row is left out
    for value in ("train_acc", "wall_seconds"):  # summary fields beyond METRICS
        done = fake_run(tmp_path / value, "0", {"a": {"x": 1}}, {"test_acc": 0.5, "train_acc": 0.75,
                                                                 "wall_seconds": 3.25})
        res = report([done.parent], value=value, plots=False)
        assert res["groups"][f"{value}_mean"].iloc[0] == {"train_acc": 0.75, "wall_seconds": 3.25}[value]
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main([str(tmp_path / "train_acc"), "--out", str(blocker / "rep"), "--no-plots"]) == 1  # one line, exit 1
    err = capsys.readouterr().err
    assert "cannot write the report" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_item11_read_only_out(tmp_path, capsys):
    """--out on a read-only file system (a real one: tmpfs mounted ro; needs root to mount)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        fake_run(tmp_path / "sweep", "0", {"a": {"x": 1}}, {"test_acc": 0.5})
        assert main([str(tmp_path / "sweep"), "--out", str(ro / "rep")]) == 1
        assert "Read-only file system" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.parametrize("mean,std,want", [(0.356, 0.0014, "0.3560 ± 0.0014"), (0.4945, 0.0064, "0.4945 ± 0.0064"),
                                           (0.3615, 0.00071, "0.36150 ± 0.00071"), (0.6, 0.1, "0.60 ± 0.10"),
                                           (0.85, 0.0996, "0.85 ± 0.10"), (123.4, 12.3, "123 ± 12"),
                                           (1234.0, 156.0, "1230 ± 160"), (0.5, math.nan, "0.5")])
def test_item15_std_to_two_significant_digits_mean_to_its_place(mean, std, want):
    from runner.report.tables import mean_std

    assert mean_std(mean, std) == want


def test_item15_percent_and_no_float_artefacts(tmp_path):
    root = tmp_path / "sweep"
    for seed, a in enumerate([0.8, 0.81, 0.82]):
        fake_run(root, str(seed), {"trainer": {"seed": seed}}, {"test_acc": a, "wall_seconds": 0.1 + 0.00425})
    res = report([root], percent=True, plots=False)
    assert list(res["shown"].columns[:1]) == ["test acc (%)"] and res["shown"].iloc[0, 0] == "81.0 ± 1.0"
    assert "0.10425," in (root / "report" / "runs.csv").read_text().replace("\n", ",")  # not 0.10425000000000001


def test_item16_headers_diagnostics_table_latex_and_plots(tmp_path):
    root = tmp_path / "sweep"
    job = 0
    for lam in (0.0, 1e-4, 1e-3):
        for p in (0.0, 0.5):
            fake_run(root, str(job), {"regularizer": {"lambda": lam, "dropout": p}, "trainer": {"seed": 0}},
                     {"test_acc": 0.9 - 100 * lam - 0.1 * p, "diag_grad_ratio": 2.0}, curve=[0.5, 0.6, 0.7])
            job += 1
    res = report([root], rows="regularizer.lambda", cols="regularizer.dropout")
    assert list(res["shown"].columns) == ["dropout", "lambda", "test acc", "n", "95% CI"]  # no `runs` beside n
    assert list(res["diagnostics"].columns) == ["dropout", "lambda", "grad ratio"]  # their own table
    tex = (root / "report" / "report.tex").read_text()
    assert tex.count(r"\toprule") == 4 and r"\hline" not in tex  # groups, diagnostics, pivot, runs
    assert r"\begin{tabular}{rrrrr}" in tex and r"\caption{Runs}" in tex  # numbers right-aligned, keys too
    assert r"\begin{tabular}{rrrlrr}" in tex  # runs: run, dropout, lambda, status, test acc, grad ratio
    md = (root / "report" / "report.md").read_text()
    assert "| dropout | lambda | test acc | n | 95% CI |\n|---:|---:|---:|---:|---:|" in md
    from runner.report.plots import axis_scale

    assert axis_scale([0, 1e-4, 1e-3]) == "symlog" and axis_scale([1e-4, 1e-2]) == "log"
    assert axis_scale([0, 0.25, 0.5]) == "linear"
    for png in ("curves.png", "pivot.png", "test_acc_vs_regularizer.lambda.png"):
        assert (root / "report" / png).read_bytes()[:8] == PNG


def test_item16_heatmap_text_reads_on_every_cell():
    """Black text on the bright end of viridis (yellow), white on the dark end (purple)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps

    yellow, purple = colormaps["viridis"](1.0), colormaps["viridis"](0.0)
    luminance = [0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] for c in (yellow, purple)]
    assert luminance[0] > 0.5 > luminance[1]  # the rule plot_heatmap applies


def test_item17_report_terminal_at_80_columns(two_arms):
    env = {**__import__("os").environ, "COLUMNS": "80"}
    proc = subprocess.run([str(Path(sys.executable).with_name("report")), str(two_arms), "--no-plots",
                           "--baseline", "optimizer=adamw"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "status: 6 completed" in proc.stdout and "{" not in proc.stdout
    assert "…" not in proc.stdout and "..." not in proc.stdout  # no header cut short
    assert "optimizer" in proc.stdout and "test acc" in proc.stdout
