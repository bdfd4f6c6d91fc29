"""The run folder's format, owned here and used by `train`, the launchers and `report`:
the file names, atomic writes (a temporary name, then a rename, so a reader never sees half a
file), the config hash that identifies a run's experiment, and what a folder already holds."""

import csv
import hashlib
import io
import json
import math
import os
import pickle
import platform
import shutil
import tempfile
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import runner
from runner.check import ConfigError

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
"""train.log's line format: Hydra's job logging, also where the vectorized launcher writes a member's lines."""


def write_atomic(path: Path, payload: bytes | str) -> None:
    """Write to a temporary name, then rename; on any error (a full disk) the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(payload.encode() if isinstance(payload, str) else payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(obj, path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def write_csv(rows: list[dict], path: Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, out.getvalue())


def config_hash(cfg: DictConfig) -> str:
    """Identifies a run's experiment: the resolved config without where files go and which trackers watch it."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in ("paths", "print_config", "logger"):
        c.pop(key, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CheckpointError(RuntimeError):
    pass


def load_checkpoint(path: Path) -> dict:
    """A checkpoint of tensors and plain values; anything that needs unpickling code is refused."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load, it holds pickled Python objects besides tensors and plain "
                              f"values, and unpickling them could run code ({str(e).splitlines()[0][:200]})") from None


class UnreadableError(ValueError):
    """A run folder's file that exists but cannot be read as what it should hold."""


def read_summary(run_dir: Path) -> dict | None:
    """summary.json as a dict; None when there is none yet; UnreadableError when it is cut off,
    not JSON, or JSON of another shape (a list, a string, null)."""
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UnreadableError(f"{path}: {e}") from None
    if not isinstance(summary, dict):
        raise UnreadableError(f"{path}: holds a JSON {type(summary).__name__}, not an object")
    return summary


def read_metrics(path: Path) -> list[dict]:
    """metrics.csv's rows as {column: float}: [] when absent; a row cut off by a crash (too few
    fields, or a field that is not a number) ends the rows read."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            rows.append({k: float(v) for k, v in row.items() if k is not None and v != ""})
        except (TypeError, ValueError):
            break
        if None in row or None in row.values() or len(rows[-1]) < 2:
            rows.pop()
            break
    return rows


def hydra_subdir(run_dir: str) -> str:
    """Where Hydra writes a job's .hydra/ files (config.yaml, hydra.yaml, overrides.yaml), which it does
    before `train` can look at the folder: `.hydra` in a new folder; a folder of this process's own
    under the temporary directory when run_dir already holds a summary.json, so that a re-run never
    rewrites a finished or interrupted run's files. `train` moves them in once the run goes ahead
    (adopt_hydra_files). The hydra.output_subdir resolver."""
    if not (Path(run_dir) / "summary.json").exists():
        return ".hydra"
    digest = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]
    return str(Path(tempfile.gettempdir()) / f"runner-hydra-{os.getpid()}-{digest}")


def adopt_hydra_files(staged: Path, run_dir: Path) -> None:
    """Move Hydra's files from where hydra_subdir staged them into run_dir/.hydra (a no-op when
    Hydra wrote them there itself)."""
    if staged.resolve() == (run_dir / ".hydra").resolve() or not staged.is_dir():
        return
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    for f in staged.iterdir():
        write_atomic(run_dir / ".hydra" / f.name, f.read_bytes())
    discard_hydra_files(staged, run_dir)


def discard_hydra_files(staged: Path, run_dir: Path) -> None:
    if staged.resolve() != (run_dir / ".hydra").resolve():
        shutil.rmtree(staged, ignore_errors=True)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for k in sorted(set(a) | set(b), key=str):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def previous_outcome(run_dir: Path, cfg: DictConfig) -> tuple[str, dict | None]:
    """What a run folder already holds for cfg: 'skip' (finished with this config), 'resume'
    (interrupted with this config, last.pt present), 'extend' (interrupted, last.pt present, and
    only trainer.epochs differs: run() resumes to the new length where that is exact) or 'fresh'
    (nothing, failed, or unreadable). ConfigError for a finished or interrupted run of another config:
    neither is ever overwritten."""
    try:
        summary = read_summary(run_dir)
    except UnreadableError:
        return "fresh", None
    if summary is None:
        return "fresh", None
    same = summary.get("config_hash") == config_hash(cfg)
    if summary.get("status") in FINISHED:
        if not same:
            raise ConfigError(f"hydra.run.dir={run_dir}: holds a finished run of another config; refusing to "
                              "overwrite it (choose another hydra.run.dir or hydra.sweep.dir)")
        return "skip", summary
    if summary.get("status") == "interrupted" and (run_dir / "last.pt").exists():
        if same:
            return "resume", summary
        old = {k: v for k, v in (summary.get("config") or {}).items() if k not in ("paths", "print_config")}
        new = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in ("paths", "print_config")}
        differ = _differences(old, new)
        if differ == ["trainer.epochs"]:
            return "extend", summary
        raise ConfigError(f"hydra.run.dir={run_dir}: holds an interrupted run (step {summary.get('steps')}) of "
                          f"another config (differs in {', '.join(differ) or 'its hash'}); resume it with its own "
                          "overrides (only trainer.epochs may change), or choose another hydra.run.dir")
    return "fresh", summary


FINISHED = ("completed", "diverged")


def _plain(x):
    """JSON-safe: non-finite floats become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return [_plain(v) for v in x] if isinstance(x, list) else x


def write_summary(run_dir: Path, summary: dict) -> dict:
    """Write summary.json; return what was written (non-finite numbers as None)."""
    summary = _plain(summary)
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _identity(cfg: DictConfig, meta: dict | None) -> dict:
    """The summary fields that say which run this is."""
    import torch

    return {"config_hash": config_hash(cfg),
            "versions": {"runner": runner.__version__, "torch": torch.__version__, "python": platform.python_version(),
                         "cuda": torch.version.cuda},  # None on a CPU build
            "threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            **(meta or {}), "config": OmegaConf.to_container(cfg, resolve=True)}  # = .hydra/config.yaml


def record_failure(run_dir: Path, cfg: DictConfig, status: str, error: BaseException, meta: dict | None = None) -> dict:
    """summary.json with status (failed, invalid, interrupted) and the error; the traceback in error.txt."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if status == "failed":
        write_atomic(run_dir / "error.txt", "".join(traceback.format_exception(error)))
    reason = str(error) if status == "invalid" else f"{type(error).__name__}: {error}"
    return write_summary(run_dir, {"status": status, "stop_reason": reason, **_identity(cfg, meta)})
