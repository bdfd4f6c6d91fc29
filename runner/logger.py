"""Experiment trackers (conf/logger): TensorBoard, MLflow and W&B as windows onto the run folder,
which stays the source of truth. `+logger=tensorboard` or `+logger=[tensorboard,mlflow]`.

Each tracker is an optional extra, imported only when chosen (check_config refuses a missing one
before training, with the pip command). Their calls run on one background thread, so the training
loop never waits on a disk or a server; a tracker's first error is one warning line, and that
tracker is dropped for the rest of the run while training goes on."""

import contextlib
import logging
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

STATUS = {"completed": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "invalid": "FAILED",
          "interrupted": "KILLED"}
"""summary.json's status -> MLflow's run status (W&B: exit code 0 for FINISHED, 1 otherwise)."""
DIAG_STATS = ("grad_norm", "weight_norm", "update_ratio", "act_mean", "act_std", "dead_frac", "saturated_frac")
ARTIFACTS = ("summary.json", "metrics.csv", "diagnostics.csv", "error.txt", "*.png")
_open: list["Trackers"] = []  # this process's open trackers, closed as failed or killed by train.py on an exception


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _diag_metrics(rows: list[dict]):
    """(tag, value, step) of each finite per-layer diagnostic: diag/<stat>/<layer index>_<layer name>."""
    return [(f"diag/{k}/{r['layer']}_{r['name']}", r[k], r["step"]) for r in rows for k in DIAG_STATS
            if _finite(r[k])]


def _final(summary: dict) -> dict:
    """The summary's finite numbers (test_acc, gap_loss, best_value, ...) as final/<key>: the run's final metrics
    (final/train_loss is the final weights' on the whole split, train_loss the running mean during training)."""
    return {f"final/{k}": float(v) for k, v in summary.items() if _finite(v) and k not in ("seed", "params", "world_size")}


class TensorBoard:
    def __init__(self, ctx, subdir: str = "tb", diagnostics: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        self.ctx, self.diagnostics = ctx, diagnostics
        self.writer = SummaryWriter(str(ctx.run_dir / subdir))

    def log(self, row: dict, diag: list[dict]) -> None:
        for k, v in row.items():
            if k != "step":
                self.writer.add_scalar(k, v, row["step"])
        for tag, v, step in _diag_metrics(diag) if self.diagnostics else []:
            self.writer.add_scalar(tag, v, step)

    def close(self, summary: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = _final(summary)
        for summ in hparams(self.ctx.hparams or {"run": self.ctx.name}, final):  # what the HParams view lists
            self.writer.file_writer.add_summary(summ)
        for k, v in final.items():
            self.writer.add_scalar(k, v, summary.get("steps") or 0)
        self.writer.add_text("status", f"{summary['status']}: {summary.get('stop_reason', '')}")
        self.writer.close()


@contextlib.contextmanager
def _file_lock(uri: str):
    """An exclusive lock on <database>.lock for a SQLite store (MLflow's migrations race between processes)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(uri.removeprefix("sqlite:///") + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MLflow:
    def __init__(self, ctx, tracking_uri: str | None = None, experiment: str | None = None,
                 log_checkpoint: bool = False, diagnostics: bool = True, http_retries: int = 2,
                 flush_seconds: float = 30.0):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(http_retries))
        from mlflow import MlflowClient
        from mlflow.entities import Param

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its INFO lines about creating a database
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # nor a line per retry: one per failure
        warnings.filterwarnings("ignore", category=UserWarning, module=r"alembic\.")  # creating the database
        self.ctx, self.log_checkpoint, self.diagnostics = ctx, log_checkpoint, diagnostics
        self.flush_seconds, self.pending, self.flushed = flush_seconds, [], time.monotonic()
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        name = experiment or (str(ctx.sweep_dir) if ctx.sweep_dir else "runner")
        with _file_lock(uri):  # parallel jobs: one creates the database and the experiment, the others wait
            self.client = MlflowClient(uri)
            found = self.client.get_experiment_by_name(name)
            try:
                eid = found.experiment_id if found else self.client.create_experiment(name)
            except Exception:  # noqa: BLE001 - a server: another job of the sweep created it in between
                eid = self.client.get_experiment_by_name(name).experiment_id
        before = self.client.search_runs([eid], f"tags.`runner.run_dir` = '{ctx.run_dir}'") if ctx.resume else []
        if before:  # resuming an interrupted run: its MLflow run goes on
            self.run_id = before[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"runner.run_dir": str(ctx.run_dir), **({"runner.job": str(ctx.job)} if ctx.job is not None else {})}
        self.run_id = self.client.create_run(eid, run_name=ctx.name, tags=tags).info.run_id
        params = [Param(k[:250], str(v)[:6000]) for k, v in ctx.params.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per request
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _metrics(self, items, flush: bool = False) -> None:
        """Buffer the metrics and send them every flush_seconds (and at the end) as few log_batch requests:
        a request to the SQLite store costs about 17 ms of Python whatever its size, which sent per evaluation
        took 18% of the default run's training loop from the thread it shares the interpreter with."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, int(step)) for k, v, step in items if _finite(v)]
        if not flush and time.monotonic() - self.flushed < self.flush_seconds:
            return
        metrics, self.pending, self.flushed = self.pending, [], time.monotonic()
        for i in range(0, len(metrics), 1000):  # at most 1000 metrics per request
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log(self, row: dict, diag: list[dict]) -> None:
        self._metrics([(k, v, row["step"]) for k, v in row.items() if k != "step"] +
                      (_diag_metrics(diag) if self.diagnostics else []))

    def close(self, summary: dict) -> None:
        self._metrics([(k, v, summary.get("steps") or 0) for k, v in _final(summary).items()], flush=True)
        for key in ("status", "stop_reason", "diag_flags"):
            if summary.get(key):
                self.client.set_tag(self.run_id, f"runner.{key}", str(summary[key])[:5000])
        run_dir = self.ctx.run_dir
        files = [p for pattern in ARTIFACTS + (("best.pt",) if self.log_checkpoint else ()) for p in run_dir.glob(pattern)]
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, STATUS.get(summary["status"], "FAILED"))


class WandB:
    def __init__(self, ctx, mode: str = "offline", project: str = "runner", group: str | None = None,
                 diagnostics: bool = True):
        import wandb

        self.diagnostics = diagnostics
        os.environ.setdefault("WANDB_SILENT", "true")  # no banner lines on the terminal
        self.run = wandb.init(dir=str(ctx.run_dir), mode=os.environ.get("WANDB_MODE", mode), project=project,
                              group=group or (str(ctx.sweep_dir) if ctx.sweep_dir else None), name=ctx.name,
                              config=ctx.params, reinit="create_new")

    def log(self, row: dict, diag: list[dict]) -> None:
        values = {k: v for k, v in row.items() if k != "step"}
        values |= {tag: v for tag, v, _ in _diag_metrics(diag)} if self.diagnostics else {}
        self.run.log(values, step=row["step"])

    def close(self, summary: dict) -> None:
        self.run.summary.update(_final(summary) | {"status": summary["status"]})
        self.run.finish(exit_code=0 if summary["status"] == "completed" else 1)


LOGGERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}
"""The options of conf/logger: each file's node (cfg.logger.<name>) holds the keyword arguments."""
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
"""The module each option imports, installed by the extra of the same name (pip install "runner[mlflow]")."""


def problems(cfg: DictConfig) -> list[str]:
    """check_config's lines for cfg.logger: unknown trackers and missing extras."""
    out = []
    for name in cfg.get("logger") or {}:
        if name not in LOGGERS:
            out.append(f"logger.{name}: no such tracker; +logger= takes {sorted(LOGGERS)}")
            continue
        flush = (cfg.logger[name] or {}).get("flush_seconds", 0) if name == "mlflow" else 0
        if isinstance(flush, bool) or not isinstance(flush, (int, float)) or flush < 0:
            out.append(f"logger.mlflow.flush_seconds={flush!r}: seconds between sends, a number >= 0 "
                       f"(0: each evaluation at once)")
        try:
            __import__(EXTRAS[name])
        except ImportError as e:
            out.append(f"logger={name}: the {EXTRAS[name]} package is not installed ({e}); "
                       f"pip install \"runner[{name}]\" (in a checkout: pip install -e \".[{name}]\")")
    return out


def _hparams(cfg: DictConfig, overrides: list[str]) -> dict:
    """The job's overrides as {key: value}: what varies across a sweep (group choices as their name)."""
    out = {}
    for item in overrides:
        key, _, raw = item.lstrip("+~").partition("=")
        if key.startswith(("hydra.", "logger")):
            continue
        value = OmegaConf.select(cfg, key, default=raw)
        out[key] = raw if isinstance(value, (DictConfig, ListConfig)) or value is None else value
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in out.items()}


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _context(cfg: DictConfig, run_dir: Path, meta: dict | None, resume: bool, job: int | None = None,
             sweep_dir: str | None = None) -> SimpleNamespace:
    """The run as the trackers name it. job and sweep_dir: a vectorized stack's member (whose Hydra
    config is not the current one); by default Hydra's current job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if job is None and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        job, sweep_dir = HydraConfig.get().job.num, HydraConfig.get().sweep.dir
    sweep = job is not None
    overrides = list((meta or {}).get("overrides") or [])
    name = f"{job}: {' '.join(o for o in overrides if not o.lstrip('+').startswith('logger')) or '(defaults)'}" \
        if sweep else run_dir.name
    config = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "logger"}
    return SimpleNamespace(run_dir=run_dir.resolve(), sweep_dir=Path(sweep_dir) if sweep else None, job=job,
                           name=name, resume=resume, params=_flatten(config), hparams=_hparams(cfg, overrides))


class Trackers:
    """The trackers cfg.logger names (none: every method does nothing), fed on a background thread."""

    def __init__(self, cfg: DictConfig, run_dir: Path, meta: dict | None = None, resume: bool = False,
                 job: int | None = None, sweep_dir: str | None = None):
        self.open, self.failed, self.pool = {}, set(), None
        self.names = names = list(cfg.get("logger") or {})
        if not names or int(os.environ.get("RANK", "0")) > 0:  # data-parallel: rank 0 alone reports
            return
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="logger")
        ctx = _context(cfg, run_dir, meta, resume, job, sweep_dir)
        for name in names:
            kwargs = OmegaConf.to_container(cfg.logger[name], resolve=True)
            self._submit(name, lambda name=name, kwargs=kwargs: self.open.__setitem__(name, LOGGERS[name](ctx, **kwargs)))
        _open.append(self)

    def _submit(self, name: str, fn) -> None:
        def call():
            if name in self.failed:
                return
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a tracker never breaks a run
                self.failed.add(name)
                first = (str(e).strip().splitlines() or [""])[0][:300]
                log.warning("logger=%s: %s: %s; the run goes on without it", name, type(e).__name__, first)

        self.pool.submit(call)

    def log(self, row: dict, diag_rows: list[dict] | None = None) -> None:
        """One metrics.csv row and the diagnostics rows of its evaluation (the tail of diag_rows at its step)."""
        if not self.pool:
            return
        diag = []
        for r in reversed(diag_rows or []):
            if r["step"] != row["step"]:
                break
            diag.insert(0, r)
        for name in self.names:
            self._submit(name, lambda name=name: self.open[name].log(dict(row), diag))

    def close(self, summary: dict) -> dict:
        """End every tracker's run with the summary (its status mapped to the tracker's); wait for the
        background thread. Returns summary, so that run() can end with `return trackers.close(...)`."""
        if self.pool:
            for name in self.names:
                self._submit(name, lambda name=name: self.open.pop(name).close(summary))
            self.pool.shutdown(wait=True)
            self.pool = None
            _open.remove(self)
        return summary


def abort(status: str, error: BaseException) -> None:
    """Close the trackers still open in this process: a run that raised (failed) or was stopped at once (interrupted)."""
    for trackers in list(_open):
        trackers.close({"status": status, "stop_reason": f"{type(error).__name__}: {error}"})
