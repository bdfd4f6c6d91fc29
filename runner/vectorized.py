"""Vectorized sweeps: K jobs of a sweep that share a model architecture, data and batch size train
as one batched model. Each member keeps its own nn.Module and its own torch.optim optimizer (fused),
schedule, clipping, early stopping and diagnostics, built exactly as an ordinary run builds them
(runner.run.make_job). During training each of its parameters is a slice of one stacked leaf
(K, ...) per parameter, so the forward and backward pass run once for all members on the stacked
weights (batched products for an MLP, torch.func.vmap for the rest), each member's optimizer steps
its own slices, and the members' weight penalties add their gradients to the stacked ones at once.
Each member's run folder is then written by runner.run.finish, as an ordinary run's is."""

import contextlib
import copy
import json
import logging
import os
import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.func import functional_call, vmap

from runner.build import build
from runner.early_stopping import EarlyStopping
from runner.regularizer import make_stack_penalty
from runner.run import Job
from runner.trainer import LOSSES, METRICS, _is_due, _rng_state, _set_rng_state

log = logging.getLogger(__name__)

STACKABLE_MODELS = ("runner.model.MLP", "runner.model.CNN")
"""Models whose every layer has a batching rule under vmap (BatchNorm's running statistics included)."""

FREE = ("trainer.seed", "regularizer", "init", "schedule", "clip", "early_stopping.patience",
        "early_stopping.min_delta", "lookahead", "paths", "print_config")
"""Config nodes in which the members of one stack may differ (each member builds its own model,
optimizer, schedule, clipping and early stopping from them); the optimizer's numeric
hyperparameters (lr, weight_decay, betas, eps, momentum, ...) are free too."""


def _numeric(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
        isinstance(v, list) and all(_numeric(x) for x in v))


def stack_key(cfg: DictConfig) -> str | None:
    """What a job must share with the others of its stack (as a string), or None when it cannot
    train in a stack and runs as an ordinary job."""
    c = OmegaConf.to_container(cfg, resolve=False)
    c.pop("hydra", None)
    try:
        c = OmegaConf.to_container(OmegaConf.create(c), resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation into hydra's node: not ours to judge, run it alone
        return None
    if (c.get("lr_find", {}).get("enabled") or c["trainer"].get("distributed") or c["trainer"].get("compile")
            or c["model"].get("_target_") not in STACKABLE_MODELS or c.get("augment")):
        return None
    c["optimizer"] = {k: v for k, v in c["optimizer"].items() if not _numeric(v)}
    for key in FREE:
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return json.dumps(c, sort_keys=True, default=str)


def plan(configs: list[DictConfig], max_stack: int | None) -> list[list[int]]:
    """Indices of configs grouped into stacks (in order of first appearance), each at most
    max_stack long; a job that fits no stack is a group of its own."""
    groups: dict[str, list[int]] = {}
    alone = []
    for i, cfg in enumerate(configs):
        key = stack_key(cfg)
        if key is None:
            alone.append([i])
        else:
            groups.setdefault(key, []).append(i)
    size = max_stack or max(len(g) for g in groups.values()) if groups else 1
    stacks = [g[s:s + size] for g in groups.values() for s in range(0, len(g), size)]
    return sorted(stacks + alone, key=lambda g: g[0])


def default_max_stack(job: Job) -> int:
    """Members that fit in half the free memory: parameters with their gradients, optimizer state and
    stacked copies (8 copies), plus activations kept for the backward pass (3 per unit per sample)."""
    acts = []
    hooks = [m.register_forward_hook(lambda m, i, o: acts.append(o.numel())) for m in job.model.modules()
             if not list(m.children())]
    with torch.no_grad():
        was = job.model.training
        job.model.eval()
        job.model(job.data.x_val[:1])
        job.model.train(was)
    for h in hooks:
        h.remove()
    per_member = 4 * (8 * sum(p.numel() for p in job.model.parameters()) + 3 * sum(acts) * job.trainer.batch_size)
    if job.device.type == "cuda":
        free = torch.cuda.mem_get_info(job.device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, min(4096, int(free / 2 // per_member)))


class TensorDropout(nn.Module):
    """Inverted dropout whose p is a buffer, so that each member of a stack has its own p. As torch's
    dropout it multiplies x by one mask already scaled by 1 / (1 - p) (one product in the graph,
    not three). Each 64-bit random draw gives four 16-bit uniforms u, and a unit is kept when
    u >= round(65536 p) - 32768: p is resolved to 1/65536 (0 exactly: nothing dropped). Drawing a
    float per unit took twice as long; in a stack of 8 of the default MLP on one CPU thread a layer's
    mask took 1.1 ms this way, 1.6-2.4 ms from 32-bit draws split in two."""

    def __init__(self, p: float):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)), persistent=False)

    def forward(self, x):
        if not self.training:
            return x
        p = self.p if self.p.dim() == 0 else self.p.view(-1, *[1] * (x.dim() - 1))  # (K,): a direct stack
        n = x.shape[-1]
        bits = torch.randint(-2**63, 2**63 - 1, (*x.shape[:-1], (n + 3) // 4), dtype=torch.int64,
                             device=x.device).view(torch.int16)[..., :n]  # out of place: vmap allows it
        threshold = ((p * 65536).round() - 32768).clamp(max=32767).to(torch.int16)  # compared as int16: no casts
        return x * (bits >= threshold).to(x.dtype).div_(1 - p)


class _StackLinear(torch.autograd.Function):
    """StackLinear's product, x @ weight^T + bias over the stack, with the weight's gradient computed as
    torch computes nn.Linear's: grad^T @ x, in the weight's own (out, in) layout. Autograd's baddbmm
    computes x^T @ grad and transposes it, which costs a strided copy into the stacked leaf's gradient
    (9% of a stack of 8's step on one CPU thread) and rounds differently from nn.Linear in float32 (with
    this product a stack of 2 on one thread ends 2 epochs with the test loss of its ordinary runs to the
    last bit; with autograd's, 6e-5 apart)."""

    @staticmethod
    def forward(x, weight, bias):
        if bias is None:
            return torch.bmm(x, weight.transpose(-1, -2))
        return torch.baddbmm(bias.unsqueeze(-2), x, weight.transpose(-1, -2))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors  # under bf16 autocast the forward's product ran in grad's dtype
        gx = torch.bmm(grad, weight.to(grad.dtype)) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(grad.transpose(-1, -2), x.to(grad.dtype)) if ctx.needs_input_grad[1] else None
        gb = grad.sum(-2) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


class StackLinear(nn.Linear):
    """nn.Linear over a stack without vmap: x (K, B, in), weight (K, out, in), bias (K, out), one batched
    product. On one CPU thread, a stack of 8 members of the default MLP (128 samples, 40-256-256-256-10)
    spent 17.2 ms per step in vmap's batching of F.linear forward and backward, 15.2 ms in baddbmm."""

    def forward(self, x):
        return _StackLinear.apply(x, self.weight, self.bias)


def direct_template(template: nn.Module) -> nn.Module | None:
    """The template with StackLinear for its Linear layers and its Flatten moved one dimension on, which
    takes the stacked weights and a (K, B, ...) batch directly; None when a layer would need vmap:
    a norm (BatchNorm's per-member statistics, LayerNorm's (C,) weight), a convolution, the input's
    Normalize. Activations act elementwise; dropout takes its (K,) p."""
    from runner.model import ACTIVATIONS, MLP, Residual

    elementwise = tuple({type(make(0.01)) for make in ACTIVATIONS.values()})
    if not all(type(m) in (MLP, nn.Sequential, nn.Flatten, nn.Linear, nn.Identity, TensorDropout) or
               isinstance(m, (Residual, *elementwise)) for m in template.modules()):
        return None
    direct = copy.deepcopy(template)
    for parent in list(direct.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, StackLinear(child.in_features, child.out_features, child.bias is not None,
                                                  device="meta"))
            elif isinstance(child, nn.Flatten):
                if child.start_dim != 1 or child.end_dim != -1:
                    return None
                setattr(parent, name, nn.Flatten(2))
    return direct


_HIDDEN, _INPUT = 0.25, 0.125  # marker p's telling a template's hidden-layer dropouts from its input dropout


def stack_template(jobs: list[Job]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A model of the members' architecture whose dropouts take p from a buffer, and the stacked
    per-member p of each dropout buffer. Its own weights are never used: every forward is a
    functional_call with the members' stacked weights and buffers."""
    cfg, data = jobs[0].cfg, jobs[0].data
    hidden = any(j.cfg.regularizer.dropout for j in jobs)
    inputs = any(j.cfg.regularizer.input_dropout for j in jobs)
    template = build(cfg.model)(data.input_shape, data.num_outputs, norm=build(cfg.norm),
                                dropout=_HIDDEN if hidden else 0.0, input_dropout=_INPUT if inputs else 0.0)
    ps = {}
    for parent_name, parent in list(template.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, name, TensorDropout(child.p))
                key = "regularizer.input_dropout" if child.p == _INPUT else "regularizer.dropout"
                ps[f"{parent_name}.{name}.p".lstrip(".")] = torch.tensor(
                    [float(OmegaConf.select(j.cfg, key)) for j in jobs], device=jobs[0].device)
    from runner.model import with_input_norm

    return with_input_norm(template, data.mean, data.std).to(jobs[0].device), {
        (f"1.{name}" if data.mean is not None else name): p for name, p in ps.items()}


def _stack_state(jobs, states, device) -> dict:
    """The loop state shared by the stack (fresh, or each member's from last.pt)."""
    if all(s is None for s in states):
        return {"step": 0, "seconds": 0.0, "perm": None, "seen": 0, "rows": [[] for _ in jobs],
                "best_state": [None] * len(jobs), "run_loss": torch.zeros(len(jobs), device=device),
                "run_hits": torch.zeros(len(jobs), device=device)}
    _set_rng_state(states[0]["rng"])  # dropout masks: one stream for the whole stack
    return {"step": states[0]["step"], "seconds": states[0]["seconds"], "seen": states[0]["seen"],
            "rows": [s["rows"] for s in states], "best_state": [s["best_state"] for s in states],
            "perm": None if states[0]["perm"] is None else torch.stack([s["perm"] for s in states]),
            "run_loss": torch.stack([s["run_loss"] for s in states]),
            "run_hits": torch.stack([s["run_hits"] for s in states])}


@torch.inference_mode()
def evaluate_stack(shared_x, params, buffers, x, y, task, precision, batch_size: int = 8192) -> list[dict]:
    """runner.trainer.evaluate for every member at once: loss and metric per member, eval mode. A chunk
    holds batch_size samples summed over the members (batch_size // K each), so that the stack's
    evaluation keeps as many activations at once as an ordinary run's (a stack of 16 of the default MLP:
    its first evaluation raised the process's peak memory by 78 MB with the whole validation split per
    member at once, by 16 MB in chunks)."""
    k = next(iter(params.values())).shape[0]
    batch_size = max(1, batch_size // k)
    loss, hits = torch.zeros(k, device=x.device), torch.zeros(k, device=x.device)
    with torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16"):
        for i in range(0, len(x), batch_size):
            out, target = shared_x(params, buffers, x[i:i + batch_size]).float(), y[i:i + batch_size]
            target = target.expand(k, *target.shape)
            loss += LOSSES[task](out.flatten(0, 1), target.flatten(0, 1), reduction="none").view(k, -1).sum(1)
            if task == "classification":
                hits += (out.argmax(-1) == target).sum(1)
    if task == "classification":
        return [{"loss": lo / len(x), "acc": h / len(x)} for lo, h in zip(loss.tolist(), hits.tolist())]
    sst = ((y - y.mean(0)) ** 2).sum().item()
    return [{"loss": lo / y.numel(), "r2": 1 - lo / sst} for lo in loss.tolist()]


def fit_stack(jobs: list[Job], states: list[dict | None], interrupted=None,
              on_eval: Callable[[int, dict], None] | None = None) -> list[dict]:
    """runner.trainer.fit for the K jobs of a stack at once, member by member the same updates;
    returns fit's result for each member. A member that stops early or diverges is frozen: it takes
    no more updates, its rows end, and its non-finite numbers never reach the others (the loss is a
    sum of per-member terms, each member's weights only touch its own slice)."""
    j0, K = jobs[0], len(jobs)
    cfg, data, device = j0.trainer, j0.data, j0.device
    n = len(data.x_train)
    bs = min(cfg.batch_size, n)
    spe, loss_fn, metric, clf = n // bs, LOSSES[data.task], METRICS[data.task], data.task == "classification"
    total, var_y = cfg.epochs * spe, data.y_train.float().var(0, unbiased=False).mean().item() if not clf else 1.0
    amp = torch.autocast(device.type, torch.bfloat16) if cfg.precision == "bf16" else contextlib.nullcontext()
    template, ps = stack_template(jobs)
    names = [name for name, _ in template.named_parameters()]
    params = [list(j.model.parameters()) for j in jobs]
    all_params = [p for ps_ in params for p in ps_]
    buffer_names = [name for name, _ in template.named_buffers() if name not in ps]
    buffers = {name: torch.stack(b) for name, *b in zip(buffer_names, *(list(j.model.buffers()) for j in jobs))} | ps
    call = lambda p, b, x: functional_call(template, (p, b), (x,))  # noqa: E731
    direct = direct_template(template) if K > 1 else None
    if K == 1:  # a stack of one (a process's share of a split stack): the plain call on the member's own weights
        own = dict(zip(names, params[0]))
        forward = lambda p, b, x: call(own, {n: v[0] for n, v in b.items()}, x[0])[None]  # noqa: E731
        shared_x = lambda p, b, x: forward(p, b, x[None])  # noqa: E731
    elif direct is not None:  # Linear layers and elementwise ones only: the stacked weights without vmap
        forward = lambda p, b, x: functional_call(direct, (p, b), (x,))  # noqa: E731
        shared_x = lambda p, b, x: forward(p, b, x.expand(K, *x.shape))  # noqa: E731
    else:
        forward, shared_x = vmap(call, randomness="different"), vmap(call, in_dims=(0, 0, None))
    # K > 1: each parameter of the stack is one leaf (K, ...) and each member's parameter a slice of its storage,
    # so the forward takes the leaves as they are and a member's gradient is a view of the leaf's: no stacking
    # copy in the forward, none back into the members' gradients in the backward. Each member's optimizer
    # updates its slices in place. The loop's end gives each member its own storage back (torch.save of a
    # slice would write the whole stack).
    leaves = {} if K == 1 else {name: torch.stack([p[i].detach() for p in params]).requires_grad_()
                                for i, name in enumerate(names)}
    for i, name in enumerate(leaves):
        for k in range(K):
            params[k][i].data = leaves[name].detach()[k]
    penalty = jobs[0].penalty if K == 1 else make_stack_penalty([j.model for j in jobs],
                                                                 [j.cfg.regularizer for j in jobs])
    stops = [EarlyStopping(j.stopping) for j in jobs]
    shuffles = [torch.Generator(device).manual_seed(j.trainer.seed) for j in jobs]
    for k, s in enumerate(states):
        if s is not None:
            stops[k].load_state_dict(s["early_stopping"])
            shuffles[k].set_state(s["shuffle"])
    st = _stack_state(jobs, states, device)
    step, perm, run_loss, run_hits = st["step"], st["perm"], st["run_loss"], st["run_hits"]
    reasons: list[str | None] = [None] * K  # why each member stopped; None while it trains
    ends: list[dict] = [{}] * K  # each member's loop state when it stopped
    start, check_every = time.perf_counter() - st["seconds"], 1 if device.type == "cpu" else 32

    def sync(k):  # the member's running statistics (BatchNorm) back into its own module
        for name, b in zip(buffer_names, jobs[k].model.buffers()):
            b.copy_(buffers[name][k])

    def freeze(k, reason):
        sync(k)
        reasons[k] = reason
        alive[k] = False
        ends[k] = {"step": step, "perm": None if perm is None else perm[k].clone(), "seen": st["seen"],
                   "run_loss": run_loss[k].clone(), "run_hits": run_hits[k].clone()}

    def stacked_params():  # (K, ...) per parameter
        return {name: p[None] for name, p in zip(names, params[0])} if K == 1 else leaves

    alive = torch.ones(K, dtype=torch.bool, device=device)  # members still training; cleared by freeze
    modes = [m for m in (template, direct) if m is not None]  # train/eval mode: dropout's
    for m in modes:
        m.train()
    while step < total and any(r is None for r in reasons) and not (interrupted and interrupted.is_set()):
        live = [k for k in range(K) if reasons[k] is None]
        if step % spe == 0 or perm is None:  # a new epoch: a new shuffle for every member, from its own generator
            perm = torch.stack([torch.randperm(n, generator=g, device=device) for g in shuffles])
        idx = perm[:, step % spe * bs:(step % spe + 1) * bs]
        lrs = [jobs[k].lr_at(step) * (jobs[k].plateau.scale if jobs[k].plateau else 1.0) for k in range(K)]
        for k in live:
            for group in jobs[k].optimizer.param_groups:
                group["lr"] = lrs[k]
        with amp:
            out = forward(stacked_params(), buffers, data.x_train[idx]).float()
        target = data.y_train[idx]
        losses = loss_fn(out.flatten(0, 1), target.flatten(0, 1), reduction="none").view(K, -1).mean(1)
        objective = torch.where(alive, losses, 0.0).sum()
        if penalty and K == 1:
            objective = objective + penalty()
        for p in leaves.values() if K > 1 else params[0]:  # zero_grad(set_to_none=True), without its call overhead
            p.grad = None
        objective.backward()
        if penalty and K > 1:
            penalty(leaves, alive)
        for i, leaf in enumerate(leaves.values()):
            for k in live:
                params[k][i].grad = leaf.grad[k]
        due = _is_due(step + 1, spe, total, cfg)
        grad_norms = {k: torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params[k]])) for k in live} \
            if due else {}
        for k in live:
            if jobs[k].clip:
                jobs[k].clip(params[k])
            if due and jobs[k].diag:
                jobs[k].diag.before_step()
            jobs[k].optimizer.step()
        step += 1
        run_loss += torch.where(alive, losses.detach(), 0.0)
        if clf:
            run_hits += (out.argmax(-1) == target).sum(1)
        st["seen"] += 1
        if step % check_every == 0 or due:
            finite = torch.isfinite(run_loss).tolist()  # one read for the whole stack; NaN stays in the sum
            for k in live:
                if not finite[k]:
                    freeze(k, f"diverged: non-finite loss at step {step}" if check_every == 1 else
                           f"diverged: non-finite loss between steps {step - (step - 1) % check_every} and {step}")
        if not due:
            continue
        for k in live:
            if reasons[k] is None and hasattr(jobs[k].optimizer, "swap"):  # Lookahead: evaluate its slow weights
                jobs[k].optimizer.swap()
        for m in modes:
            m.eval()
        with torch.no_grad():
            vals = evaluate_stack(shared_x, stacked_params(), buffers, data.x_val, data.y_val, data.task,
                                  cfg.precision)
        for m in modes:
            m.train()
        for k in (k for k in live if reasons[k] is None):
            train_loss = run_loss[k].item() / st["seen"]
            row = {"epoch": round(step / spe, 4), "step": step, "lr": lrs[k], "train_loss": train_loss,
                   f"train_{metric}": run_hits[k].item() / (st["seen"] * bs) if clf else 1 - train_loss / var_y,
                   **{f"val_{m}": v for m, v in vals[k].items()}, "grad_norm": grad_norms[k].item(),
                   "seconds": round(time.perf_counter() - start, 4)}
            sync(k)
            if jobs[k].diag:
                jobs[k].diag.collect(row["epoch"], step)
            if stops[k].update(row[jobs[k].stopping.monitor], row["epoch"]):
                st["best_state"][k] = {n: v.detach().clone() for n, v in jobs[k].model.state_dict().items()}
            if hasattr(jobs[k].optimizer, "swap"):  # back to the fast weights
                jobs[k].optimizer.swap()
            if jobs[k].plateau:
                jobs[k].plateau.update(row[jobs[k].plateau.cfg.monitor])
            st["rows"][k].append(row)
            if on_eval:
                on_eval(k, row)
            if stops[k].should_stop:
                s = jobs[k].stopping
                freeze(k, f"early stopping: {s.monitor} did not improve by more than {s.min_delta} "
                          f"for {s.patience} evaluations")
        run_loss.zero_()
        run_hits.zero_()
        st["seen"] = 0
    seconds = time.perf_counter() - start
    for p in all_params if K > 1 else ():  # each member's weights in storage of their own again
        p.data = p.data.clone()
        p.grad = None
    results = []
    for k in range(K):
        if reasons[k] is None:
            freeze(k, f"reached trainer.epochs={cfg.epochs}" if step >= total else f"interrupted at step {step}")
        end = ends[k]
        state = {**end, "rows": st["rows"][k], "best_state": st["best_state"][k], "seconds": seconds,
                 "rng": _rng_state(), "shuffle": shuffles[k].get_state(),
                 "early_stopping": stops[k].state_dict()}
        results.append({"rows": st["rows"][k], "best_state": st["best_state"][k], "best_epoch": stops[k].best_epoch,
                        "best": stops[k].best, "stop_reason": reasons[k], "steps": end["step"],
                        "epochs": round(end["step"] / spe, 4), "seconds": seconds, "state": state})
    return results


@contextlib.contextmanager
def _member_log(run_dir, enabled: bool):
    """Log lines go to the member's own train.log (not to the file of the job Hydra set up last)."""
    if not enabled:
        yield
        return
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    handler = logging.FileHandler(run_dir / "train.log")
    from runner.runfolder import LOG_FORMAT

    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    for h in files:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for h in files:
            root.addHandler(h)


def train_stack(members: list[dict], interrupted=None, on_eval: Callable[[int, dict], None] | None = None,
                on_done: Callable[[int, dict], None] | None = None, max_stack: int | None = None,
                log_files: bool = False) -> list[dict]:
    """Train the members (dicts of cfg, run_dir, meta and resume: whether to continue run_dir/last.pt)
    as one stack (or slices of max_stack, default: what fits in memory) and write each member's run
    folder; return their summaries. log_files: each member's log lines in its train.log, as Hydra
    writes an ordinary job's (the launcher's case). The data is loaded once;
    each member's model, optimizer and the rest are built from its own config as runner.run.run builds
    them. An exception records every member as failed and is raised again."""
    from runner.logger import Trackers
    from runner.run import build_model, finish, make_job, record_row, restore, schema, setup
    from runner.runfolder import record_failure
    from runner.schema import EarlyStoppingConfig, TrainerConfig

    started, done = time.perf_counter(), 0
    try:
        _, device, data = setup(members[0]["cfg"])
        jobs = []
        for m in members:
            trainer = schema(TrainerConfig, m["cfg"].trainer)
            model, optimizer = build_model(m["cfg"], data, device, trainer.seed)
            jobs.append(make_job(m["cfg"], m["run_dir"], m["meta"], trainer,
                                 schema(EarlyStoppingConfig, m["cfg"].early_stopping), device, data, model, optimizer))
            m["run_dir"].mkdir(parents=True, exist_ok=True)
        states = []
        for j, m in zip(jobs, members):
            with _member_log(m["run_dir"], log_files):
                states.append(restore(j) if m["resume"] else None)
        csv_rows = [list(s["rows"]) if s else [] for s in states]
        trackers = [Trackers(m["cfg"], m["run_dir"], m["meta"], m["resume"], m.get("num"), m.get("sweep_dir"))
                    for m in members]  # conf/logger

        def record(k, row):
            record_row(jobs[k], csv_rows[k], row)
            trackers[k].log(row, jobs[k].diag.rows if jobs[k].diag else None)
            if on_eval:
                on_eval(k, row)

        limit = max_stack or default_max_stack(jobs[0])  # more members than fit in memory: one slice after another
        results = []
        for s in range(0, len(jobs), limit):
            results += fit_stack(jobs[s:s + limit], states[s:s + limit], interrupted,
                                 lambda k, row, s=s: record(s + k, row))
        summaries = []
        for k, (job, result) in enumerate(zip(jobs, results)):
            with _member_log(job.run_dir, log_files):
                summaries.append(trackers[k].close(finish(job, result, result["stop_reason"].startswith("interrupted"),
                                                          started)))
            done += 1
            if on_done:
                on_done(k, summaries[-1])
        return summaries
    except Exception as e:
        from runner.check import ConfigError
        from runner.logger import abort

        abort("failed", e)  # trackers' runs end as failed

        for m in members[done:]:  # what finished stays as it was written
            record_failure(m["run_dir"], m["cfg"], "invalid" if isinstance(e, ConfigError) else "failed", e, m["meta"])
        raise
