"""The README's commands of "Images, augmentation and your own data", run as written (plus
overrides that make them small), and the offline message through the real `train`."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_dataset_files import write_cifar10

TRAIN = str(Path(sys.executable).with_name("train"))
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    text = README.read_text()
    block = re.search(r"## Images, augmentation and your own data\n\n```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("train ")]


def test_the_section_has_its_commands():
    assert len(readme_commands()) == 5


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(tmp_path, command):
    args = shlex.split(command)[1:]
    small = ["trainer.epochs=1"]
    if "data=cifar10" in args:
        write_cifar10(tmp_path / "data" / "cifar10", archive=True, n=8)
        small += [f"paths.data_dir={tmp_path / 'data'}", "data.val_size=8", "trainer.batch_size=8"]
    if "data=npz" in args:
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "my.npz", x=rng.normal(size=(200, 6)), y=rng.integers(0, 3, 200))
    if "data=csv" in args:
        rng = np.random.default_rng(0)
        rows = [f"{a:.3f},{b},{2 * a + b:.3f}" for a, b in zip(rng.normal(size=200), rng.integers(0, 5, 200))]
        (tmp_path / "my.csv").write_text("area,rooms,price\n" + "\n".join(rows) + "\n")
    if "-m" in args:
        small += ["trainer.seed=0", "hydra.sweep.dir=sweep"]
    proc = subprocess.run([TRAIN, *args, *small], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = list(tmp_path.glob("**/summary.json"))
    assert len(summaries) == (3 if "-m" in args else 1)  # the experiment: pad 0, 1, 2 with one seed


def test_offline_download_exits_2_with_the_message(tmp_path):
    proc = subprocess.run([TRAIN, "data=fashion_mnist", f"paths.data_dir={tmp_path}", "data.download_timeout=2",
                           "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert f"put them in {tmp_path / 'fashion_mnist'}" in message
    assert "t10k-labels-idx1-ubyte.gz (md5 bb300cfdad3c16e7a12a480ee83cd310) from http://fashion-mnist.s3-website" \
           ".eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz" in message
    assert not (tmp_path / "run").exists()  # nothing ran: no folder left behind
