import numpy as np
import pytest
import torch

from runner.check import ConfigError
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


def test_digits_as_uint8_images_with_training_channel_statistics(make_cfg, tmp_path):
    from sklearn.datasets import load_digits

    d = load(make_cfg("data=digits", "data.image=true").data, tmp_path)
    assert d.kind == "image" and d.input_shape == (1, 8, 8) and d.x_train.dtype == torch.uint8
    flat = load(make_cfg("data=digits", "data.standardize=none").data, tmp_path)
    assert torch.equal(d.x_train.reshape(-1, 64).float(), flat.x_train)  # same split, same pixels
    pixels = load_digits().images
    assert d.x_train.max() == 16 and torch.equal(torch.cat([d.x_train, d.x_val, d.x_test]).sum(),
                                                 torch.tensor(int(pixels.sum())))
    train = d.x_train.double()
    torch.testing.assert_close(d.mean.double(), train.mean().view(1), rtol=1e-6, atol=0)
    torch.testing.assert_close(d.std.double(), train.std(unbiased=False).view(1), rtol=1e-6, atol=0)


def test_mnist_keeps_its_official_test_split(make_cfg, tmp_path):
    from test_dataset_files import write_mnist

    arrays = write_mnist(tmp_path / "mnist", n_train=30, n_test=12)
    d = load(make_cfg("data=mnist", "data.val_size=10").data, tmp_path)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (20, 10, 12)
    assert torch.equal(d.x_test[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert d.input_shape == (1, 28, 28) and d.x_train.dtype == torch.uint8 and d.num_outputs == 10
    with pytest.raises(ConfigError, match=r"data.test_size=0.2: mnist has its own test split.*leave data.test_size null"):
        load(make_cfg("data=mnist", "data.val_size=10", "data.test_size=0.2").data, tmp_path)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_with_and_without_a_test_split(make_cfg, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 5)).astype(np.float32), rng.integers(3, 6, 100)  # labels 3, 4, 5
    path = write_npz(tmp_path / "d.npz", x=x, y=y, x_test=x[:7], y_test=y[:7])
    d = load(make_cfg("data=npz", f"data.path={path}", "data.val_size=20").data, tmp_path)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (80, 20, 7)
    assert d.task == "classification" and d.num_outputs == 3 and torch.equal(d.y_test, torch.from_numpy(y[:7] - 3))
    path = write_npz(tmp_path / "r.npz", x=x, y=x.sum(1))  # float target: regression
    d = load(make_cfg("data=npz", f"data.path={path}", "data.test_size=0.1").data, tmp_path)
    assert d.task == "regression" and d.y_train.shape == (75, 1) and len(d.x_test) == 10
    images = write_npz(tmp_path / "i.npz", x=rng.integers(0, 256, (50, 3, 4, 4), dtype=np.uint8), y=np.arange(50) % 2)
    d = load(make_cfg("data=npz", f"data.path={images}", "data.val_size=5", "data.test_size=5").data, tmp_path)
    assert d.kind == "image" and d.x_train.dtype == torch.uint8 and d.mean.shape == (3,)


def test_npz_bad_inputs(make_cfg, tmp_path):
    x = np.ones((10, 3), np.float32)
    cases = {
        "data.path=None: give the npz file": None,
        "no such file": str(tmp_path / "missing.npz"),
        r"holds arrays \['x'\]; expected x and y": write_npz(tmp_path / "a.npz", x=x),
        "array x has 1 NaN or infinite values": write_npz(tmp_path / "b.npz", x=np.where(np.eye(10, 3) * np.eye(10, 1),
                                                                                         np.nan, x), y=np.arange(10) % 2),
        "target has one class": write_npz(tmp_path / "c.npz", x=x, y=np.zeros(10, int)),
        "x has 10 rows but y 9": write_npz(tmp_path / "d.npz", x=x, y=np.arange(9)),
        "not a readable .npz file": str((tmp_path / "e.npz").write_text("text") and tmp_path / "e.npz"),
    }
    for message, path in cases.items():
        with pytest.raises(ConfigError, match=message):
            load(make_cfg("data=npz", f"data.path={path}" if path else "data.path=null", "data.test_size=2",
                          "data.val_size=2").data, tmp_path)


def test_csv_classification_regression_and_text_labels(make_cfg, tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=60), "b": rng.integers(0, 9, 60), "kind": ["cat", "dog", "eel"] * 20})
    table["price"] = 2.0 * table.a + 0.5
    table.to_csv(tmp_path / "t.csv", index=False)
    clf = load(make_cfg("data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=kind").data, tmp_path)
    assert clf.task == "classification" and clf.num_outputs == 3 and clf.input_shape == (3,)  # a, b, price
    table.drop(columns="kind").to_csv(tmp_path / "r.csv", index=False)
    reg = load(make_cfg("data=csv", f"data.path={tmp_path / 'r.csv'}", "data.target=price").data, tmp_path)
    assert reg.task == "regression" and reg.input_shape == (2,) and len(reg.x_test) == 9  # 15% of 60
    as_classes = load(make_cfg("data=csv", f"data.path={tmp_path / 'r.csv'}", "data.target=b",
                               "data.task=classification").data, tmp_path)
    assert as_classes.num_outputs == len(np.unique(table.b))


def test_csv_bad_inputs(make_cfg, tmp_path):
    (tmp_path / "text.csv").write_text("a,colour,y\n1,red,0\n2,blue,1\n3,red,0\n4,red,1\n5,red,1\n")
    (tmp_path / "nan.csv").write_text("a,b,y\n1,,0\n2,3,1\n3,4,0\n4,5,1\n,6,1\n")
    (tmp_path / "one.csv").write_text("a,y\n1,7\n2,7\n3,7\n4,7\n5,7\n")
    cases = {"text.csv:y": r"columns \['colour'\] are not numeric",
             "text.csv:label": r"data.target='label': text.csv has no such column; its columns are \['a', 'colour', 'y'\]",
             "nan.csv:y": r"missing \(NaN\) values in columns \{'a': 1, 'b': 1\}",
             "one.csv:y": r"the target has one class \(7\)",
             "none.csv:y": "no such file"}
    for case, message in cases.items():
        file, target = case.split(":")
        with pytest.raises(ConfigError, match=message):
            load(make_cfg("data=csv", f"data.path={tmp_path / file}", f"data.target={target}", "data.val_size=1",
                          "data.test_size=1").data, tmp_path)


def test_a_short_run_on_digits_images_beats_chance_by_far(make_cfg, tmp_path):
    from runner.run import run

    summary = run(make_cfg("data=digits", "data.image=true", "model=cnn", "model.channels=[16,32]",
                           "model.kernel_size=3", "trainer.epochs=8", "trainer.batch_size=32", "regularizer=none"),
                  tmp_path)
    assert summary["test_acc"] > 0.8  # chance: 0.1
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
