import math

import pandas as pd
import pytest

from runner.report.stats import best_of, effect, holm


def test_holm_against_a_hand_computation():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_nan():
    # m = 2 (the NaN does not count): 0.2 x 2 = 0.4, 0.7 x 1 -> 0.7; 0.6 x 2 = 1.2 -> 1 in a family of 2
    adjusted = holm([0.7, math.nan, 0.2])
    assert adjusted[0] == pytest.approx(0.7) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.4)
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.03]) == pytest.approx([0.03])  # one test: nothing to correct


def test_effect_is_welchs_interval():
    from scipy import stats

    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    # means 2 and 5; var(a)/3 = 1/3, var(b)/4 = (20/3)/4 = 5/3: se = sqrt(2); df = 4 / ((1/3)^2/2 + (5/3)^2/3) = 216/53
    half = stats.t.ppf(0.975, 216 / 53) * math.sqrt(2)
    e = effect(a, b)
    assert e["diff"] == pytest.approx(-3.0)
    assert (e["diff_ci_low"], e["diff_ci_high"]) == pytest.approx((-3 - half, -3 + half))
    assert 3.85 < half < 3.95  # t(4.08) ~ 2.76 (a t table) times sqrt(2): a 95% interval of about +-3.9


def test_effect_with_too_few_values():
    e = effect([0.5], [0.4, 0.6])
    assert e["diff"] == pytest.approx(0.0) and math.isnan(e["diff_ci_low"])
    assert effect([0.5, 0.5], [0.25, 0.25]) == {"diff": 0.25, "diff_ci_low": 0.25, "diff_ci_high": 0.25}


def frame():
    """Two arms (optimizer) x two lrs x two seeds, where the best validation setting is not the best test one."""
    rows = [  # optimizer, lr, seed, val_acc, test_acc, status
        ("sgd", 0.1, 0, 0.80, 0.50, "completed"), ("sgd", 0.1, 1, 0.90, 0.60, "completed"),
        ("sgd", 0.01, 0, 0.70, 0.90, "completed"), ("sgd", 0.01, 1, 0.70, 0.90, "completed"),
        ("adam", 0.1, 0, 0.95, 0.95, "completed"), ("adam", 0.1, 1, math.nan, math.nan, "diverged"),
        ("adam", 0.01, 0, 0.65, 0.70, "completed"), ("adam", 0.01, 1, 0.75, 0.80, "completed"),
        ("adam", 0.01, 2, 0.99, 0.99, "failed"),  # not finished: left out
    ]
    return pd.DataFrame(rows, columns=["optimizer", "optimizer.lr", "trainer.seed", "val_acc", "test_acc", "status"])


def test_best_of_picks_by_validation_and_reports_test():
    out = best_of(frame(), "optimizer.lr", "val_acc", metrics=["test_acc"]).set_index("optimizer")
    assert sorted(out.index) == ["adam", "sgd"]
    sgd, adam = out.loc["sgd"], out.loc["adam"]
    assert sgd["optimizer.lr"] == 0.1 and sgd["val_acc_mean"] == pytest.approx(0.85)  # > 0.70, though test is worse
    assert sgd["test_acc_mean"] == pytest.approx(0.55) and sgd["test_acc_n"] == 2
    assert sgd["test_acc_std"] == pytest.approx(math.sqrt(0.005))  # (0.05^2 + 0.05^2) / (2 - 1)
    assert adam["optimizer.lr"] == 0.01  # lr 0.1 diverged on seed 1: never chosen over a setting without
    assert adam["test_acc_mean"] == pytest.approx(0.75) and adam["settings"] == 2


def test_best_of_minimizes_a_loss_and_infers_the_arms():
    runs = frame().assign(val_loss=lambda d: 1 - d["val_acc"])
    out = best_of(runs, "optimizer.lr", "val_loss", mode="min").set_index("optimizer")  # keys inferred
    assert out.loc["sgd", "optimizer.lr"] == 0.1 and out.loc["sgd", "val_loss_mean"] == pytest.approx(0.15)


def test_best_of_names_a_missing_column():
    with pytest.raises(ValueError, match="'optimizer.momentum' is not a column"):
        best_of(frame(), "optimizer.momentum", "val_acc")


def test_mixed_threads_flags_only_groups_with_several_thread_counts():
    from runner.report.stats import mixed_threads

    runs = frame().assign(threads=[1, 1, 1, 1, 2, 1, 1, 1, None])  # adam lr 0.1: one run on 2 threads
    flagged = mixed_threads(runs, ["optimizer", "optimizer.lr"])
    assert flagged.to_dict("records") == [{"optimizer": "adam", "optimizer.lr": 0.1, "threads": "1, 2"}]
    assert mixed_threads(frame(), ["optimizer"]).empty  # no thread counts recorded (older runs): nothing to flag


def test_best_of_against_the_baseline_arms_tuned_setting():
    # sgd's tuned runs (lr 0.1): test 0.50, 0.60; adam's (lr 0.01): 0.70, 0.80
    out = best_of(frame(), "optimizer.lr", "val_acc", metrics=["test_acc"], baseline={"optimizer": "sgd"})
    out = out.set_index("optimizer")
    adam = out.loc["adam"]
    assert adam["test_acc_diff"] == pytest.approx(0.75 - 0.55)
    # 2 against 2: 6 splits; only {0.7, 0.8} | {0.5, 0.6} and its mirror are 0.2 apart ({.7,.5}: 0.1, {.7,.6}: 0)
    assert adam["test_acc_p"] == pytest.approx(2 / 6) and adam["test_acc_p_holm"] == pytest.approx(2 / 6)
    # Welch: both variances 0.005, se^2 = 0.005 / 2 + 0.005 / 2, df = 0.005^2 / (2 x 0.0025^2) = 2
    half = 4.302652729911275 * math.sqrt(0.005)  # t(2), 97.5% (a t table)
    assert (adam["test_acc_diff_ci_low"], adam["test_acc_diff_ci_high"]) == pytest.approx((0.2 - half, 0.2 + half))
    assert out.loc["sgd", "baseline"] and out.loc["sgd", "test_acc_diff"] == 0 and not adam["baseline"]
    with pytest.raises(ValueError, match=r"--baseline optimizer=rmsprop matches no finished run"):
        best_of(frame(), "optimizer.lr", "val_acc", baseline={"optimizer": "rmsprop"})
    with pytest.raises(ValueError, match=r"--baseline optimizer.lr=0.1 matches 2 arms of --best-of optimizer.lr"):
        best_of(frame(), "optimizer.lr", "val_acc", baseline={"optimizer.lr": "0.1"})
