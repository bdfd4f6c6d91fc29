"""`report` on fabricated run folders with known numbers, on a real sweep, and on broken runs."""

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from runner.report import load_runs, main, p_value, report

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
T_975_DF4 = 2.776445105197793  # and 4 degrees of freedom
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


def test_an_experiments_helper_value_is_a_key_and_its_helper_node_is_not(tmp_path):
    """conf/experiment/adam_l2_vs_adamw.yaml sweeps `_strength`, routed through `_arms` into the keys it sets:
    `_strength` groups the runs, `_arms.*` (resolved copies) does not."""
    for job, (opt, strength) in enumerate([("adam", 0.01), ("adam", 0.1), ("adamw", 0.01), ("adamw", 0.1)]):
        fake_run(tmp_path / "sweep", str(job),
                 {"_strength": strength, "_arms": {"adam": {"lambda": strength if opt == "adam" else 0.0}},
                  "optimizer": {"_target_": opt, "weight_decay": strength if opt == "adamw" else 0.0}},
                 {"test_acc": 0.5 + job / 10, "test_loss": 0.5, "epochs": 1}, choices={"optimizer": opt})
    res = report([tmp_path / "sweep"], rows="optimizer", cols="_strength", plots=False)
    assert sorted(res["keys"]) == ["_strength", "optimizer", "optimizer.weight_decay"]
    means = res["pivot_means"]
    assert means.loc["adamw", [c for c in means.columns if float(c) == 0.1][0]] == pytest.approx(0.8)  # job 3
    assert "_strength" in res["shown"].columns  # its header keeps the name (not " strength")


def test_a_baseline_option_named_none_is_that_option(tmp_path):
    """norm=none names the option `none` (whose runs have no norm.momentum), not a null; with --best-of too."""
    job = 0
    for norm, accs in (("none", [0.4, 0.5]), ("batchnorm", [0.7, 0.8])):
        for lr in (0.1, 1.0):
            for seed, acc in enumerate(accs):
                node = {"momentum": 0.1} if norm == "batchnorm" else None
                fake_run(tmp_path / "sweep", str(job), {"norm": node, "optimizer": {"lr": lr}, "trainer": {"seed": seed}},
                         {"test_acc": acc + (lr == 1.0) / 100, "val_acc": acc, "test_loss": 0.5, "epochs": 1},
                         choices={"norm": norm})
                job += 1
    res = report([tmp_path / "sweep"], baseline={"norm": "none"}, best_of_key="optimizer.lr", plots=False)
    tuned = res["tuned"].set_index("norm")
    assert tuned.loc["batchnorm", "test_acc_diff"] == pytest.approx(0.75 - 0.45)  # val ties: the first lr, 0.1


def test_baseline_difference_and_exact_permutation_p(two_arms):
    res = report([two_arms], baseline={"optimizer": "adamw"}, plots=False)
    g = res["groups"].set_index("optimizer")
    assert g.loc["sgd", "test_acc_diff"] == pytest.approx(0.6 - 0.85)
    # all 20 ways to split the 6 values 3/3: only the observed split and its mirror reach |diff| = 0.25
    assert g.loc["sgd", "test_acc_p"] == pytest.approx(2 / 20)
    assert g.loc["sgd", "test_acc_test"] == "permutation"
    assert g.loc["adamw", "test_acc_diff"] == 0 and g.loc["adamw", "test_acc_p"] == 1


def test_holm_and_welch_effect_columns_by_hand(tmp_path):
    """Two arms against a baseline, 3 seeds each: p, Holm's p and the difference's Welch interval."""
    acc = {"a": [0.80, 0.82, 0.84], "b": [0.70, 0.72, 0.74], "c": [0.81, 0.83, 0.85]}
    for name, values in acc.items():
        for seed, v in enumerate(values):
            fake_run(tmp_path / "sweep", f"{name}{seed}", {"o": {"name": name}, "trainer": {"seed": seed}},
                     {"test_acc": v})
    report([tmp_path / "sweep"], out=tmp_path / "out", baseline={"o.name": "a"}, plots=False)
    g = pd.read_csv(tmp_path / "out" / "groups.csv").set_index("o.name")
    # b lies below every baseline value: of the 20 splits 3/3 only the observed one and its mirror are as far apart.
    # c - a = 0.01: in steps of 0.01 above 0.80 the pooled values are 0..5 (sum 15), and a split is as far apart
    # when the sum s of one side's three steps has |2 s - 15| >= 3: s <= 6 (7 splits) or s >= 9 (7 splits)
    assert g.loc["b", "test_acc_p"] == pytest.approx(2 / 20) and g.loc["c", "test_acc_p"] == pytest.approx(14 / 20)
    # Holm over the family {b, c}: the smaller p times 2, the larger times 1 (not below the one before)
    assert g.loc["b", "test_acc_p_holm"] == pytest.approx(0.2) and g.loc["c", "test_acc_p_holm"] == pytest.approx(0.7)
    assert math.isnan(g.loc["a", "test_acc_p_holm"]) and g.loc["a", "baseline"] and not g.loc["b", "baseline"]
    for arm in ("b", "c"):
        x, y = acc[arm], acc["a"]
        diff = statistics.mean(x) - statistics.mean(y)
        se2 = statistics.variance(x) / 3 + statistics.variance(y) / 3  # both variances 0.0004: Welch's df is 4
        df = se2**2 / ((statistics.variance(x) / 3) ** 2 / 2 + (statistics.variance(y) / 3) ** 2 / 2)
        assert df == pytest.approx(4)
        half = T_975_DF4 * math.sqrt(se2)
        assert g.loc[arm, "test_acc_diff"] == pytest.approx(diff)
        assert (g.loc[arm, "test_acc_diff_ci_low"], g.loc[arm, "test_acc_diff_ci_high"]) == pytest.approx(
            (diff - half, diff + half))
    assert g.loc["b", "test_acc_diff_ci_high"] == pytest.approx(-0.1 + 0.0453392)  # 2.776 x sqrt(2 x 0.0004 / 3)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| b | 0.720 ± 0.020 | 3 | [0.670, 0.770] | -0.100 [-0.145, -0.055] | 0.1 | 0.2 |" in md
    assert "| c | 0.830 ± 0.020 | 3 | [0.780, 0.880] | +0.010 [-0.035, 0.055] | 0.7 | 0.7 |" in md
    report([tmp_path / "sweep"], out=tmp_path / "pct", baseline={"o.name": "a"}, plots=False, percent=True)
    assert "| -10.0 [-14.5, -5.5] | 0.1 | 0.2 |" in (tmp_path / "pct" / "report.md").read_text()


def tuned_sweep(root: Path, threads=None) -> Path:
    """optimizer (sgd, adam) x lr (0.1, 0.01) x 3 seeds, where sgd's best lr on validation is not its best on test."""
    val = {("sgd", 0.1): [0.80, 0.82, 0.84], ("sgd", 0.01): [0.78, 0.80, 0.82],
           ("adam", 0.1): [0.60, 0.70, 0.80], ("adam", 0.01): [0.85, 0.86, 0.87]}
    test = {("sgd", 0.1): [0.70, 0.72, 0.74], ("sgd", 0.01): [0.90, 0.90, 0.90],
            ("adam", 0.1): [0.95, 0.95, 0.95], ("adam", 0.01): [0.80, 0.83, 0.86]}
    job = 0
    for (opt, lr), vals in val.items():
        for seed, v in enumerate(vals):
            summary = {"val_acc": v, "test_acc": test[opt, lr][seed], "test_loss": 1 - test[opt, lr][seed]}
            fake_run(root, str(job), {"optimizer": {"_target_": f"torch.optim.{opt}", "lr": lr},
                                      "trainer": {"seed": seed}},
                     summary | ({"threads": threads[job]} if threads else {}), choices={"optimizer": opt})
            job += 1
    return root


def test_best_of_cli_tuned_arms_with_a_baseline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # a terminal wide enough for every header unfolded
    sweep = tuned_sweep(tmp_path / "sweep")
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--no-plots", "--best-of", "optimizer.lr",
                 "--baseline", "optimizer=sgd"]) == 0
    tuned = pd.read_csv(out / "best_of.csv").set_index("optimizer")
    # sgd: mean val_acc 0.82 at lr 0.1 > 0.80 at 0.01 (whose test accuracy, 0.90, is better: not looked at)
    # adam: 0.86 at lr 0.01 > 0.70 at 0.1
    assert tuned.loc["sgd", "optimizer.lr"] == 0.1 and tuned.loc["adam", "optimizer.lr"] == 0.01
    assert tuned.loc["sgd", "val_acc_mean"] == pytest.approx(0.82) and tuned.loc["adam", "settings"] == 2
    sgd, adam = [0.70, 0.72, 0.74], [0.80, 0.83, 0.86]
    assert tuned.loc["sgd", "test_acc_mean"] == pytest.approx(statistics.mean(sgd))
    assert tuned.loc["adam", "test_acc_std"] == pytest.approx(0.03)  # sqrt((0.03^2 + 0 + 0.03^2) / 2)
    assert tuned.loc["adam", "test_loss_mean"] == pytest.approx(1 - 0.83)  # the other test metrics too
    # against the tuned baseline arm (sgd at lr 0.1): every adam value above every sgd one, 2 of 20 splits
    from scipy import stats

    va, vb = statistics.variance(adam) / 3, statistics.variance(sgd) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert tuned.loc["adam", "test_acc_diff"] == pytest.approx(0.11)
    assert (tuned.loc["adam", "test_acc_diff_ci_low"], tuned.loc["adam", "test_acc_diff_ci_high"]) == pytest.approx(
        (0.11 - half, 0.11 + half))
    assert tuned.loc["adam", "test_acc_p"] == pytest.approx(0.1) and tuned.loc["adam", "test_acc_p_holm"] == 0.1
    assert tuned.loc["sgd", "baseline"] and math.isnan(tuned.loc["sgd", "test_acc_p_holm"])
    # the groups' baseline is sgd at its tuned lr (0.1): sgd at 0.01 differs from it by 0.90 - 0.72
    groups = pd.read_csv(out / "groups.csv").set_index(["optimizer", "optimizer.lr"])
    assert groups.loc[("sgd", 0.1), "baseline"] and groups.loc[("sgd", 0.01), "test_acc_diff"] == pytest.approx(0.18)
    md = (out / "report.md").read_text()
    assert "## Tuned arms: best optimizer.lr by mean val_acc" in md and "against the tuned arm optimizer=sgd" in md
    assert "| optimizer | best lr | settings | val acc | test acc | n |" in md
    assert "| adam | 0.01 | 2 | 0.86 | 0.830 ± 0.030 | 3 |" in md
    assert r"\caption{Tuned arms: best optimizer.lr by mean val\_acc" in (out / "report.tex").read_text()
    stdout = capsys.readouterr().out
    tuned_lines = stdout.split("Tuned arms: best optimizer.lr by mean val_acc")[1].splitlines()
    assert any("best lr" in line for line in tuned_lines)
    assert any("adam" in line and "0.01" in line and "+0.110 [" in line for line in tuned_lines)


def test_tables_wider_than_the_terminal_fold_rather_than_lose_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # the tuned table's 10 headers need 94 columns
    sweep = tuned_sweep(tmp_path / "sweep")
    assert main([str(sweep), "--no-plots", "--best-of", "optimizer.lr", "--baseline", "optimizer=sgd",
                 "--percent"]) == 0
    stdout = capsys.readouterr().out
    assert max(len(line.rstrip()) for line in stdout.splitlines() if "written to" not in line) <= 80
    tuned = stdout.split("Tuned arms")[1]
    assert "Holm" in tuned and "…" not in stdout  # the last column is there, nothing cut short


def test_best_of_a_loss_is_minimized_and_the_metric_can_be_chosen(tmp_path):
    sweep = tuned_sweep(tmp_path / "sweep")
    res = report([sweep], out=tmp_path / "out", plots=False, best_of_key="optimizer.lr", select_metric="test_loss")
    tuned = res["tuned"].set_index("optimizer")
    # by test loss (1 - test_acc), lowest mean: sgd 0.10 at lr 0.01 (< 0.28), adam 0.05 at lr 0.1 (< 0.17)
    assert tuned.loc["sgd", "optimizer.lr"] == 0.01 and tuned.loc["sgd", "test_loss_mean"] == pytest.approx(0.10)
    assert tuned.loc["adam", "optimizer.lr"] == 0.1 and tuned.loc["adam", "test_loss_mean"] == pytest.approx(0.05)
    assert "by mean test_loss" in res["tuned_title"] and "lowest mean test_loss" in "\n".join(res["tuned_md"])
    res = report([sweep], out=tmp_path / "out", plots=False, best_of_key="optimizer.lr", select_metric="test_loss",
                 mode="max")  # told: the worst
    assert res["tuned"].set_index("optimizer").loc["sgd", "optimizer.lr"] == 0.1


@pytest.mark.parametrize("argv,says", [
    (["--best-of", "optimizer.momentum"], "--best-of 'optimizer.momentum' is not a config key that varies between "
                                          "these runs; varying keys: optimizer, optimizer.lr"),
    (["--best-of", "trainer.seed"], "--best-of 'trainer.seed' is not a config key that varies"),
    (["--best-of", "optimizer.lr", "--select-metric", "val_r2"], "--select-metric 'val_r2' is not a numeric summary "
                                                                  "field of these runs; choose one of"),
    (["--best-of", "optimizer.lr", "--baseline", "optimizer.lr=0.1"],
     "--baseline optimizer.lr=0.1 matches 2 arms of --best-of optimizer.lr"),
])
def test_best_of_refusals_exit_2_before_any_file(tmp_path, capsys, argv, says):
    sweep = tuned_sweep(tmp_path / "sweep")
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots", *argv]) == 2
    err = capsys.readouterr().err
    assert says in " ".join(err.split()) and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_mixed_thread_counts_are_flagged(tmp_path, capsys):
    # jobs 0-2: sgd lr 0.1 (seeds on 1, 2, 1 threads); 3-5: sgd 0.01; 6-8: adam 0.1; 9-11: adam 0.01 (1, 1, 4)
    sweep = tuned_sweep(tmp_path / "sweep", threads=[1, 2, 1, 1, 1, 1, 2, 2, 2, 1, 1, 4])
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: runs of one group used different torch thread counts" in err
    assert "optimizer=sgd optimizer.lr=0.1 (threads 1, 2); optimizer=adam optimizer.lr=0.01 (threads 1, 4)" in err
    assert "adam optimizer.lr=0.1" not in err  # all on 2 threads: nothing mixed
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| optimizer | lr | test acc | n | 95% CI | threads |" in md
    assert "| sgd | 0.1 | 0.720 ± 0.020 | 3 | [0.670, 0.770] | 1, 2 |" in md
    assert "| adam | 0.1 | 0.95 ± 0 | 3 | [0.95, 0.95] |  |" in md
    assert "threads: the torch thread counts of the groups whose runs used several" in md
    capsys.readouterr()
    tuned_sweep(tmp_path / "same", threads=[1] * 12)
    assert main([str(tmp_path / "same"), "--no-plots"]) == 0
    assert "thread" not in capsys.readouterr().err
    assert "threads" not in (tmp_path / "same" / "report" / "report.md").read_text()


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
    assert "| optimizer | test acc | n | 95% CI | diff [95% CI] | p | Holm p |" in md  # optimizer.lr: in groups.csv
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
    # --best-of on the same folders: one arm (dropout is the only key that varies), its best dropout on validation
    proc = subprocess.run([str(Path(sys.executable).with_name("report")), "outputs", "--out", "tuned", "--no-plots",
                           "--best-of", "regularizer.dropout"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    val = {p: statistics.mean(runs.loc[runs["regularizer.dropout"] == p, "val_acc"]) for p in (0.0, 0.2, 0.5)}
    best = max(val, key=val.get)
    tuned = pd.read_csv(tmp_path / "tuned" / "best_of.csv")
    assert len(tuned) == 1 and tuned.loc[0, "regularizer.dropout"] == best and tuned.loc[0, "settings"] == 3
    assert tuned.loc[0, "val_acc_mean"] == pytest.approx(val[best])
    chosen = list(runs.loc[runs["regularizer.dropout"] == best, "test_acc"])
    assert tuned.loc[0, "test_acc_mean"] == pytest.approx(statistics.mean(chosen))
    assert tuned.loc[0, "test_acc_n"] == len(chosen)
    assert "Tuned arms: best regularizer.dropout by mean val_acc" in proc.stdout


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
