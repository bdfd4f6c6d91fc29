"""Image training through `train` against a hand-written PyTorch loop (issue 13: speed).

  cnn:    digits as 1x8x8 uint8 images (1197 train / 300 val), CNN 1-32-64 (3x3, stride 2), AdamW lr 1e-3,
          batch 32, no dropout, validation every epoch; on the CPU.
  resnet: ResNet-20 (BatchNorm) on CIFAR-10-shaped random uint8 data (--n images 3x32x32, 10 classes), SGD
          momentum 0.9, batch 128, validation every epoch; on the GPU when there is one, with channels_last and
          bf16 autocast (both paths), else on the CPU (only to check that the script works).
  (a) `train ...` as a user runs it (a subprocess; its summary.json's train_seconds: the loop with evaluations)
  (b) a minimal loop in a fresh process: uint8 tensors on the device, torch.randperm per epoch, slicing, the
      same per-batch normalization (runner.model.Normalize) and model class, evaluation every epoch.
Reported: seconds per epoch, medians over --repeats, and (a) / (b).

    python benchmarks/image_speed.py [--repeats 5] [--epochs 10] [--n 50000] [--which cnn resnet]
    python benchmarks/image_speed.py --repeats 1 --epochs 1 --n 512       # a quick check that it runs
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).with_name("train"))
CNN = ["data=digits", "data.image=true", "model=cnn", "model.channels=[32,64]", "model.kernel_size=3",
       "trainer.batch_size=32", "optimizer=adamw", "optimizer.lr=1e-3"]
RESNET = ["model=resnet", "norm=batchnorm", "trainer.batch_size=128", "optimizer=momentum", "optimizer.lr=0.1",
          "data.val_size=0.1"]
COMMON = ["regularizer=none", "diagnostics=off", "init=default"]


def cifar_like(n: int, path: Path) -> None:
    """Random uint8 images of CIFAR-10's shape, and 1000 test images, as an npz for data=npz."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), y=rng.integers(0, 10, n),
             x_test=rng.integers(0, 256, (1000, 3, 32, 32), dtype=np.uint8), y_test=rng.integers(0, 10, 1000))


def hand_loop(which: str, epochs: int, npz: str) -> None:
    """(b), in a child process; prints its seconds per epoch."""
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf
    from torch import nn

    from runner.data import load
    from runner.model import CNN as CNNModel
    from runner.model import ResNet, with_input_norm

    device = torch.device("cuda" if which == "resnet" and torch.cuda.is_available() else "cpu")
    base = {"val_size": 300, "test_size": 300, "train_size": None, "label_noise": 0.0, "standardize": "global", "seed": 0}
    cfg = base | ({"name": "digits", "image": True} if which == "cnn" else
                  {"name": "npz", "path": npz, "task": None, "val_size": 0.1, "test_size": None})
    d = load(OmegaConf.create(cfg), os.environ.get("RUNNER_DATA_DIR", "~/.cache/runner")).to(device)
    torch.manual_seed(0)
    if which == "cnn":
        model = CNNModel(d.input_shape, 10, channels=(32, 64), kernel_size=3)
        batch, opt_fn = 32, lambda p: torch.optim.AdamW(p, lr=1e-3)
    else:
        model = ResNet(d.input_shape, 10, depth=20, norm=nn.BatchNorm1d)
        batch, opt_fn = 128, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)
    model = with_input_norm(model, d.mean, d.std)
    gpu = device.type == "cuda"
    model.to(device, memory_format=torch.channels_last if gpu else torch.preserve_format)
    opt = opt_fn(model.parameters())
    amp = torch.autocast(device.type, torch.bfloat16, enabled=gpu)
    n = len(d.x_train)
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n, device=device).split(batch):
            if len(idx) < batch:
                continue
            with amp:
                out = model(d.x_train[idx]).float()
            loss = F.cross_entropy(out, d.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode(), amp:
            val = sum(F.cross_entropy(model(d.x_val[i:i + 8192]).float(), d.y_val[i:i + 8192], reduction="sum")
                      for i in range(0, len(d.x_val), 8192)).item()
    if gpu:
        torch.cuda.synchronize()
    print(json.dumps({"epoch_seconds": (time.perf_counter() - start) / epochs, "val_loss": val / len(d.x_val),
                      "device": str(device)}))


def through_train(which: str, epochs: int, npz: str, work: Path) -> dict:
    """(a): `train` in a subprocess; seconds per epoch from its summary.json."""
    import torch

    gpu = which == "resnet" and torch.cuda.is_available()
    args = (CNN if which == "cnn" else RESNET + ["data=npz", f"data.path={npz}"]) + COMMON + [
        f"trainer.epochs={epochs}", f"trainer.device={'cuda' if gpu else 'cpu'}",
        f"trainer.precision={'bf16' if gpu else 'fp32'}", f"hydra.run.dir={work / f'{which}-{time.time_ns()}'}"]
    proc = subprocess.run([TRAIN, *args], capture_output=True, text=True, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((Path(args[-1].split("=", 1)[1]) / "summary.json").read_text())
    return {"epoch_seconds": summary["train_seconds"] / epochs, "val_loss": summary["val_loss"],
            "device": summary["device"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n", type=int, default=50000, help="CIFAR-shaped training images for resnet")
    parser.add_argument("--which", nargs="+", default=["cnn", "resnet"], choices=["cnn", "resnet"])
    parser.add_argument("--child", choices=["cnn", "resnet"], help=argparse.SUPPRESS)
    parser.add_argument("--npz", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return hand_loop(args.child, args.epochs, args.npz)
    work = Path(tempfile.mkdtemp(prefix="image-bench-"))
    npz = work / "cifar_like.npz"
    if "resnet" in args.which:
        cifar_like(args.n, npz)
    rows = []
    for which in args.which:
        times = {"train": [], "hand": []}
        for _ in range(args.repeats):  # interleaved, so that a slow moment of the machine hits both
            times["train"].append(through_train(which, args.epochs, str(npz), work))
            proc = subprocess.run([sys.executable, __file__, "--child", which, "--epochs", str(args.epochs),
                                   "--npz", str(npz)], capture_output=True, text=True, check=True)
            times["hand"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        a = statistics.median(t["epoch_seconds"] for t in times["train"])
        b = statistics.median(t["epoch_seconds"] for t in times["hand"])
        rows.append((which, times["train"][0]["device"], a, b, a / b))
    print("| model | device | train (s/epoch) | hand loop (s/epoch) | ratio |\n| --- | --- | --- | --- | --- |")
    for which, device, a, b, ratio in rows:
        print(f"| {which} | {device} | {a:.4f} | {b:.4f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
