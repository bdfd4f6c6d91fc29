import numpy as np
import pytest
import torch

from runner.data import load


def test_mnist1d_splits_are_the_requested_sizes_and_disjoint(make_cfg, tmp_path):
    cfg = make_cfg("data=mnist1d").data
    d = load(cfg, tmp_path)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (4000, 1000, 1000)
    assert d.input_shape == (40,) and d.num_outputs == 10 and d.task == "classification"
    rows = {tuple(r) for r in torch.cat([d.x_train, d.x_val, d.x_test]).numpy().round(5)}
    assert len(rows) == 6000
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1  # cached
    again = load(cfg, tmp_path)
    assert torch.equal(again.x_train, d.x_train)


def test_standardization_uses_training_statistics_only(make_cfg, tmp_path):
    d = load(make_cfg("data=digits", "data.standardize=feature").data, tmp_path)
    varying = d.x_train.std(0) > 0
    torch.testing.assert_close(d.x_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.x_train[:, varying].std(0, unbiased=False), torch.ones(int(varying.sum())),
                               atol=1e-4, rtol=0)
    assert d.x_val.mean(0).abs().max() > 1e-3  # val is transformed with train's statistics, not its own


def test_fractions_train_size_and_label_noise(make_cfg, tmp_path):
    clean = load(make_cfg("data=moons", "data.val_size=0.1", "data.test_size=0.2", "data.standardize=none").data,
                 tmp_path)
    assert (len(clean.x_val), len(clean.x_test), len(clean.x_train)) == (200, 400, 1400)
    noisy = load(make_cfg("data=moons", "data.val_size=0.1", "data.test_size=0.2", "data.label_noise=0.3",
                          "data.train_size=1000", "data.standardize=none").data, tmp_path)
    assert len(noisy.x_train) == 1000
    assert torch.equal(noisy.x_train, clean.x_train[:1000])
    flipped = (noisy.y_train != clean.y_train[:1000]).float().mean().item()
    assert flipped == pytest.approx(0.3, abs=0.05)
    assert torch.equal(noisy.y_val, clean.y_val) and torch.equal(noisy.y_test, clean.y_test)  # only train is noisy


def test_data_seed_changes_the_split(make_cfg, tmp_path):
    a = load(make_cfg("data=digits").data, tmp_path)
    b = load(make_cfg("data=digits", "data.seed=1").data, tmp_path)
    assert not torch.equal(a.y_train, b.y_train)


def test_spirals_have_balanced_arms(make_cfg, tmp_path):
    d = load(make_cfg("data=spirals", "data.arms=4").data, tmp_path)
    counts = np.bincount(torch.cat([d.y_train, d.y_val, d.y_test]).numpy())
    assert d.num_outputs == 4 and counts.tolist() == [500] * 4


def test_teacher_is_regression(make_cfg, tmp_path):
    d = load(make_cfg("data=teacher", "data.out_features=2").data, tmp_path)
    assert d.task == "regression" and d.num_outputs == 2 and d.y_train.dtype == torch.float32
    assert d.y_train.shape == (2000, 2)


def test_sizes_that_leave_nothing_are_refused(make_cfg, tmp_path):
    with pytest.raises(ValueError, match="data.val_size=5000"):
        load(make_cfg("data=moons", "data.val_size=5000").data, tmp_path)


def test_unknown_dataset_names_the_choices(make_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"data.name='cifar'.*mnist1d"):
        load(make_cfg("data=moons", "data.name=cifar").data, tmp_path)


def test_standardize_modes_against_a_hand_computation(make_cfg, tmp_path):
    raw = load(make_cfg("data=digits", "data.standardize=none").data, tmp_path)
    x = raw.x_train.double()
    # global: one mean and one std (population) over every pixel of every training image
    n = x.numel()
    mean = x.sum() / n
    std = (((x - mean) ** 2).sum() / n).sqrt()
    g = load(make_cfg("data=digits", "data.standardize=global").data, tmp_path)
    torch.testing.assert_close(g.x_train.double(), (x - mean) / std, atol=1e-5, rtol=0)
    torch.testing.assert_close(g.x_test.double(), (raw.x_test.double() - mean) / std, atol=1e-5, rtol=0)
    # feature: pixel j by its own training mean and std; a pixel constant over the training split is only centred
    f = load(make_cfg("data=digits", "data.standardize=feature").data, tmp_path)
    for j in (0, 5, 20, 36):
        col = x[:, j]
        m, s = col.sum() / len(col), (((col - col.sum() / len(col)) ** 2).sum() / len(col)).sqrt()
        expected = (raw.x_val[:, j].double() - m) / (s if s > 0 else 1.0)
        torch.testing.assert_close(f.x_val[:, j].double(), expected, atol=1e-5, rtol=0)
    assert raw.x_train.max() == 16 and raw.x_train.min() == 0  # none: the raw 0-16 pixel values
    assert g.x_train.dtype == f.x_train.dtype == torch.float32


@pytest.mark.parametrize("value", ["per_feature", False])
def test_unknown_standardize_mode_is_refused(make_cfg, tmp_path, value):
    from runner.check import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"data.standardize=.*must be one of \['feature', 'global', 'none'\]"):
        check_config(make_cfg("data=digits", f"data.standardize={value}"))
    with pytest.raises(ValueError, match="data.standardize"):
        load(make_cfg("data=digits", f"data.standardize={value}").data, tmp_path)
