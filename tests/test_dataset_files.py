"""The standard files, written here byte by byte in their published formats (IDX: big-endian
magic number and sizes, then the bytes; CIFAR binary: label byte(s) then 3072 image bytes)."""

import gzip
import io
import struct
import tarfile

import numpy as np
import pytest

from runner.check import ConfigError
from runner.dataset_files import SOURCES, cifar_dataset, idx_dataset, read_idx

RNG = np.random.default_rng(0)


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">I", 0x800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_mnist(root, n_train=20, n_test=10, gz=True):
    """The four IDX files of a tiny MNIST; returns the arrays written."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": RNG.integers(0, 10, n_test, dtype=np.uint8)}
    for name, a in arrays.items():
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(a)))
        else:
            (root / name).write_bytes(idx_bytes(a))
    return arrays


def cifar_records(n, label_bytes, classes):
    labels = RNG.integers(0, classes, (n, label_bytes), dtype=np.uint8)
    images = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes(labels[i]) + images[i].tobytes() for i in range(n))  # record by record, as the format says
    return raw, labels, images


def write_cifar10(root, archive=True, n=4):
    """Five training batches and a test batch of n records each, as the tar.gz or extracted."""
    files = {f"data_batch_{i}.bin": cifar_records(n, 1, 10) for i in range(1, 6)} | {"test_batch.bin":
                                                                                     cifar_records(n, 1, 10)}
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        with tarfile.open(root / "cifar-10-binary.tar.gz", "w:gz") as tar:
            for name, (raw, _, _) in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        (root / "cifar-10-batches-bin").mkdir()
        for name, (raw, _, _) in files.items():
            (root / "cifar-10-batches-bin" / name).write_bytes(raw)
    return files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_read_back(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    x, y, x_test, y_test = idx_dataset("mnist", tmp_path, timeout=1)
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_test[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def test_idx_wrong_magic_and_truncation_name_the_file(tmp_path):
    labels = np.arange(5, dtype=np.uint8)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 2051, 5) + labels.tobytes())  # an images magic number on a labels file
    with pytest.raises(ConfigError, match=rf"{path}: .*magic number 2051, expected 2049"):
        read_idx(path, 1)
    path.write_bytes(idx_bytes(labels)[:-2])
    with pytest.raises(ConfigError, match=rf"{path}: truncated .*5 = 5 bytes of data, the file has 3"):
        read_idx(path, 1)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(idx_bytes(labels))[:-6])
    with pytest.raises(ConfigError, match=rf"{gz}: not a readable gzip file"):
        read_idx(gz, 1)


@pytest.mark.parametrize("archive", [True, False])
def test_cifar10_binary_records_read_back(tmp_path, archive):
    files = write_cifar10(tmp_path, archive=archive)
    x, y, x_test, y_test = cifar_dataset("cifar10", tmp_path, timeout=1)
    train = [files[f"data_batch_{i}.bin"] for i in range(1, 6)]
    np.testing.assert_array_equal(x, np.concatenate([t[2] for t in train]))
    np.testing.assert_array_equal(y, np.concatenate([t[1][:, 0] for t in train]))
    np.testing.assert_array_equal(x_test, files["test_batch.bin"][2])
    np.testing.assert_array_equal(y_test, files["test_batch.bin"][1][:, 0])
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8


def test_cifar100_fine_and_coarse_labels(tmp_path):
    (tmp_path / "cifar-100-binary").mkdir()
    raw_train, labels, images = cifar_records(6, 2, 20)  # coarse < 20, and so valid fine labels too
    raw_test, test_labels, _ = cifar_records(3, 2, 20)
    (tmp_path / "cifar-100-binary" / "train.bin").write_bytes(raw_train)
    (tmp_path / "cifar-100-binary" / "test.bin").write_bytes(raw_test)
    x, fine, _, fine_test = cifar_dataset("cifar100", tmp_path, timeout=1)
    _, coarse, _, _ = cifar_dataset("cifar100", tmp_path, timeout=1, coarse=True)
    np.testing.assert_array_equal(fine, labels[:, 1])  # <1 x coarse label><1 x fine label><3072 x pixel>
    np.testing.assert_array_equal(coarse, labels[:, 0])
    np.testing.assert_array_equal(fine_test, test_labels[:, 1])
    np.testing.assert_array_equal(x, images)


def test_cifar_truncated_or_corrupt_is_refused_with_the_file_named(tmp_path):
    write_cifar10(tmp_path, archive=False)
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=rf"{bad}: truncated or wrong size: 12192 bytes .* 3073-byte"):
        cifar_dataset("cifar10", tmp_path, timeout=1)
    bad.write_bytes(bytes([12]) + bytes(3072))  # label 12 in CIFAR-10
    with pytest.raises(ConfigError, match=rf"{bad}: label 12 found, expected labels below 10"):
        cifar_dataset("cifar10", tmp_path, timeout=1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "cifar-10-binary.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(ConfigError, match="cifar-10-binary.tar.gz: not a readable tar.gz archive"):
        cifar_dataset("cifar10", other, timeout=1)


def test_offline_message_names_each_missing_file_its_checksum_source_and_folder(tmp_path):
    """There is no network here (nor in CI): the real download is attempted and fails."""
    root = tmp_path / "mnist"
    with pytest.raises(ConfigError) as e:
        idx_dataset("mnist", root, timeout=2)
    message = str(e.value)
    assert f"put them in {root}" in message
    for file, md5 in SOURCES["mnist"][1].items():
        assert f"{file} (md5 {md5}) from https://ossci-datasets.s3.amazonaws.com/mnist/{file}" in message
    assert not list(root.glob("*"))  # no partial file left behind
    with pytest.raises(ConfigError, match=r"cifar-100-binary.tar.gz \(md5 03b5dce01913d631647c71ecec9e9cb8\) from "
                                          r"https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"):
        cifar_dataset("cifar100", tmp_path / "c", timeout=2)
