"""Dataclass schemas of the config nodes the code reads directly (trainer, early_stopping,
paths): a typo or a wrong type fails when Hydra composes the config. Free of torch, so that
`train --help` and config errors answer without importing it."""

from dataclasses import dataclass


@dataclass
class TrainerConfig:
    epochs: int = 30
    """Passes over the training split (the run may stop earlier: early_stopping)."""
    batch_size: int = 128
    """Samples per update; the last incomplete batch of an epoch is dropped (shuffled away next epoch)."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps."""
    seed: int = 0
    """Seeds the run's randomness: weight init and dropout (torch's global RNG) and the batch order (a generator of
    its own, so that batch order does not depend on how much randomness dropout drew: a member of a vectorized
    sweep sees the same batches as the ordinary run of its config). The dataset has its own data.seed."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms: bitwise-repeatable GPU runs, at some speed cost."""
    precision: str = "fp32"
    """fp32 | bf16 (autocast: matrix products in bfloat16; losses, metrics and weights stay fp32)."""
    distributed: bool = False
    """Data-parallel training of this one run (DistributedDataParallel; gloo on CPU, nccl on GPU), started with
    `torchrun --nproc_per_node=N -m runner.train trainer.distributed=true ...`: each process takes every N-th
    sample of each global batch (batch_size is the global batch), only rank 0 writes the run folder."""
    compile: bool = False
    """torch.compile the model (in place, nn.Module.compile). Off: on the default MLP it costs more to compile
    than it saves (README, Speed)."""
    eval_every: int = 1
    """Evaluate on the validation split (a metrics.csv row, an early-stopping check) every this many eval_unit."""
    eval_unit: str = "epoch"
    """epoch | step."""
    num_threads: int | None = None
    """torch CPU threads; null = torch's default (one per core). Set it to cores / jobs when jobs run in parallel."""


@dataclass
class EarlyStoppingConfig:
    monitor: str = "val_loss"
    """Any column of metrics.csv: val_loss, val_acc (val_r2 for regression), train_loss, ..."""
    mode: str = "min"
    """min: lower is better (losses); max: higher is better (accuracy, R^2)."""
    patience: int | None = None
    """Evaluations without improvement before stopping; null = never stop early."""
    min_delta: float = 0.0
    """An evaluation improves only if it beats the best by more than this (absolute, monitor's units)."""
    start_from_epoch: int = 0
    """Evaluations before this epoch are ignored: neither best nor counted (lets warmup pass)."""
    restore_best: bool = True
    """Test and save the best evaluation's weights, whether or not stopping triggered."""


@dataclass
class PathsConfig:
    data_dir: str = "${oc.env:RUNNER_DATA_DIR,'~/.cache/runner'}"
    """Where generated datasets are cached (MNIST-1D takes seconds to generate, then milliseconds to read)."""
