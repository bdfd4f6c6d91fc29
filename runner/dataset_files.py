"""MNIST, Fashion-MNIST (IDX files) and CIFAR-10/100 (binary version) from their standard
distribution files: where to get them, their published md5 checksums, the download into
data.root (verified, written atomically), and the parsers. A missing file that cannot be
downloaded, or a file that is not what its format says, is a ConfigError naming the file.
The pickled CIFAR "python version" is never read: unpickling a file runs its code."""

import gzip
import hashlib
import logging
import os
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

from runner.check import ConfigError

log = logging.getLogger(__name__)

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# The locations and md5 checksums torchvision uses (torchvision/datasets/mnist.py); CIFAR's binary
# version from its authors' page (https://www.cs.toronto.edu/~kriz/cifar.html).
SOURCES = {
    "mnist": (["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
              dict(zip((f + ".gz" for f in _IDX), ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                                   "d53e105ee54ea40749a09fcbcd1e9432",
                                                   "9fb629c4189551a2d022fa330f9573f3",
                                                   "ec29112dd5afa0611ce80d1b7f02629c")))),
    "fashion_mnist": (["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
                      dict(zip((f + ".gz" for f in _IDX), ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                                           "25c81989df183df01b3e8a0aad5dffbe",
                                                           "bef4ecab320f06d8554ea6380940ec79",
                                                           "bb300cfdad3c16e7a12a480ee83cd310")))),
    "cifar10": (["https://www.cs.toronto.edu/~kriz/"], {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"}),
    "cifar100": (["https://www.cs.toronto.edu/~kriz/"],
                 {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"}),
}
# The members of each CIFAR archive: (folder, training files, test file, label bytes per record)
CIFAR = {"cifar10": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin", 1),
         "cifar100": ("cifar-100-binary", ["train.bin"], "test.bin", 2)}
_MAGIC = {3: 2051, 1: 2049}  # IDX magic numbers: 0x00000803 for images (3 dims), 0x00000801 for labels


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(name: str, root: Path, timeout: float) -> None:
    """Fetch every distribution file of dataset `name` that root lacks, verify its md5 and
    rename it into place; raise one ConfigError naming all that could not be had."""
    mirrors, files = SOURCES[name]
    missing = []
    for file, checksum in files.items():
        if (root / file).exists():
            continue
        for mirror in mirrors:
            try:
                root.mkdir(parents=True, exist_ok=True)
                tmp = root / f".{file}.{os.getpid()}.part"
                log.info("downloading %s%s into %s", mirror, file, root)
                with urllib.request.urlopen(mirror + file, timeout=timeout) as response, open(tmp, "wb") as out:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                got = md5(tmp)
                if got != checksum:
                    tmp.unlink()
                    log.warning("%s%s: md5 %s, expected %s", mirror, file, got, checksum)
                    continue
                tmp.replace(root / file)
                break
            except OSError as e:
                log.warning("could not download %s%s: %s", mirror, file, e)
        else:
            missing.append(f"  {file} (md5 {checksum}) from {' or '.join(m + file for m in mirrors)}")
    if missing:
        raise ConfigError(f"data.name={name}: these files are missing and could not be downloaded (no network?); "
                          f"download them and put them in {root}:\n" + "\n".join(missing))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes with ndim dimensions, as a uint8 array."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ConfigError(f"{path}: not a readable gzip file ({e})") from None
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big")
    if len(raw) < header or magic != _MAGIC[ndim]:
        raise ConfigError(f"{path}: not an IDX file of {ndim}-D unsigned bytes: magic number {magic}, "
                          f"expected {_MAGIC[ndim]}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise ConfigError(f"{path}: truncated or wrong size: the header says {'x'.join(map(str, shape))} = "
                          f"{int(np.prod(shape))} bytes of data, the file has {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def idx_dataset(name: str, root: Path, timeout: float):
    """(x_train, y_train, x_test, y_test) of MNIST or Fashion-MNIST: images (N, 1, 28, 28) uint8."""
    def find(stem):
        return next((p for p in (root / stem, root / f"{stem}.gz") if p.exists()), None)

    if any(find(stem) is None for stem in _IDX):
        download(name, root, timeout)
    arrays = [read_idx(find(stem), 3 if "images" in stem else 1) for stem in _IDX]
    for (images, labels), split in ((arrays[:2], "train"), (arrays[2:], "t10k")):
        if len(images) != len(labels):
            raise ConfigError(f"{root}: {split}-images has {len(images)} images but {split}-labels "
                              f"{len(labels)} labels")
    x, y, x_test, y_test = arrays
    return x[:, None], y.astype(np.int64), x_test[:, None], y_test.astype(np.int64)


def read_cifar(raw: bytes, where: str, label_bytes: int, label: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary records: label byte(s), then 3072 bytes of a 3x32x32 image (R, G, B planes)."""
    size = label_bytes + 3072
    if not raw or len(raw) % size:
        raise ConfigError(f"{where}: truncated or wrong size: {len(raw)} bytes is not a whole number of "
                          f"{size}-byte CIFAR records ({label_bytes} label byte(s) + 3x32x32 image)")
    records = np.frombuffer(raw, np.uint8).reshape(-1, size)
    y = records[:, label].astype(np.int64)
    if y.max() >= classes:
        raise ConfigError(f"{where}: label {y.max()} found, expected labels below {classes} (is it the right file?)")
    return records[:, label_bytes:].reshape(-1, 3, 32, 32), y


def cifar_dataset(name: str, root: Path, timeout: float, coarse: bool = False):
    """(x_train, y_train, x_test, y_test) of CIFAR-10 or CIFAR-100 (fine labels, or coarse):
    images (N, 3, 32, 32) uint8, read from the extracted folder or straight from the archive."""
    folder, train, test, label_bytes = CIFAR[name]
    archive = root / next(iter(SOURCES[name][1]))
    if not (root / folder).is_dir() and not archive.exists():
        download(name, root, timeout)
    if (root / folder).is_dir():
        def read(member):
            if not (root / folder / member).exists():
                raise ConfigError(f"{root / folder}: {member} is missing; expected {train + [test]}")
            return (root / folder / member).read_bytes(), str(root / folder / member)
    else:
        try:
            tar = tarfile.open(archive)
        except (OSError, tarfile.TarError, EOFError) as e:
            raise ConfigError(f"{archive}: not a readable tar.gz archive ({e})") from None

        def read(member):  # read in memory: nothing is extracted, so no path in the archive is trusted
            try:
                return tar.extractfile(f"{folder}/{member}").read(), f"{archive}:{folder}/{member}"
            except (KeyError, AttributeError, tarfile.TarError, OSError, EOFError) as e:
                raise ConfigError(f"{archive}: cannot read {folder}/{member} ({e}); expected the CIFAR binary "
                                  f"version's members {[f'{folder}/{m}' for m in train + [test]]}") from None
    label, classes = (0, 20) if coarse else (label_bytes - 1, 100 if name == "cifar100" else 10)
    parts = [read_cifar(*read(m), label_bytes, label, classes) for m in train + [test]]
    x, y = np.concatenate([p[0] for p in parts[:-1]]), np.concatenate([p[1] for p in parts[:-1]])
    return x, y, *parts[-1]
