"""Each schedule's lr at chosen steps, against the formula or torch's own scheduler."""

import math

import pytest
import torch

from runner.schedule import Plateau, make_lr_at

LR, SPE, TOTAL = 0.1, 10, 300  # base lr, steps per epoch, total steps (30 epochs)


def lr_at(make_cfg, name, *overrides, spe=SPE, total=TOTAL):
    return make_lr_at(make_cfg(f"schedule={name}", *overrides).schedule, LR, spe, total)


def torch_lrs(scheduler_cls, n, **kw):
    """torch's scheduler stepped once per epoch (spe=1): its lr before each step."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    sched, out = scheduler_cls(opt, **kw), []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant(make_cfg):
    f = lr_at(make_cfg, "constant")
    assert {f(s) for s in (0, 17, 299)} == {LR}


def test_step(make_cfg):
    f = lr_at(make_cfg, "step")  # step_size 10 epochs, gamma 0.1
    assert [f(99), f(100), f(199), f(200)] == pytest.approx([LR, LR * 0.1, LR * 0.1, LR * 0.01])
    g = lr_at(make_cfg, "step", spe=1, total=30)
    assert [g(s) for s in range(30)] == pytest.approx(torch_lrs(torch.optim.lr_scheduler.StepLR, 30, step_size=10,
                                                                 gamma=0.1))


def test_multistep(make_cfg):
    f = lr_at(make_cfg, "multistep", spe=1, total=30)  # milestones 15, 25
    assert [f(s) for s in range(30)] == pytest.approx(
        torch_lrs(torch.optim.lr_scheduler.MultiStepLR, 30, milestones=[15, 25], gamma=0.1))


def test_exponential_decays_within_epochs(make_cfg):
    f = lr_at(make_cfg, "exponential")  # gamma 0.9 per epoch
    assert f(25) == pytest.approx(LR * 0.9**2.5)
    assert f(30) == pytest.approx(LR * math.exp(-(-math.log(0.9)) * 3))


def test_cosine(make_cfg):
    f = lr_at(make_cfg, "cosine", spe=1, total=30)
    assert [f(s) for s in range(30)] == pytest.approx(
        torch_lrs(torch.optim.lr_scheduler.CosineAnnealingLR, 30, T_max=30))
    g = lr_at(make_cfg, "cosine", "schedule.min_ratio=0.1")
    assert g(150) == pytest.approx(0.1 * LR + 0.9 * LR * (1 + math.cos(math.pi * 0.5)) / 2)
    assert g(300) == pytest.approx(0.1 * LR)


@pytest.mark.parametrize("mult", [1, 2])
def test_cosine_restarts(make_cfg, mult):
    f = lr_at(make_cfg, "cosine_restarts", f"schedule.mult={mult}", spe=1, total=60)
    assert [f(s) for s in range(60)] == pytest.approx(
        torch_lrs(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts, 60, T_0=10, T_mult=mult))


def test_onecycle(make_cfg):
    f = lr_at(make_cfg, "onecycle")  # pct_start 0.3, div 25, final_div 1e4, 30 epochs
    assert f(0) == pytest.approx(LR / 25)
    assert f(90) == pytest.approx(LR)  # the peak at 30% of training
    assert f(45) == pytest.approx(LR / 25 + (LR - LR / 25) * (1 - math.cos(math.pi * 0.5)) / 2)
    assert f(300) == pytest.approx(LR / (25 * 1e4))


def test_inverse_time(make_cfg):
    f = lr_at(make_cfg, "inverse_time")  # decay 0.5 per epoch
    assert [f(0), f(40), f(15)] == pytest.approx([LR, LR / (1 + 0.5 * 4), LR / (1 + 0.5 * 1.5)])


def test_linear_warmup_then_schedule_from_its_start(make_cfg):
    f = lr_at(make_cfg, "step", "schedule.warmup=10")
    assert [f(0), f(4), f(9)] == pytest.approx([LR * 1 / 10, LR * 5 / 10, LR])
    assert f(10) == LR and f(109) == LR and f(110) == pytest.approx(LR * 0.1)  # step_size counts after warmup


def test_cosine_warmup_in_epochs(make_cfg):
    f = lr_at(make_cfg, "cosine", "schedule.warmup=2", "schedule.warmup_unit=epochs", "schedule.warmup_shape=cosine")
    assert f(9) == pytest.approx(LR * (1 + math.cos(math.pi * (1 - 10 / 20))) / 2)
    assert f(19) == pytest.approx(LR)
    assert f(20) == pytest.approx(LR)  # cosine restarts its own clock after the 20 warmup steps
    assert f(20 + 140) == pytest.approx(LR * (1 + math.cos(math.pi * 0.5)) / 2)


def test_plateau_matches_torch_reduce_lr_on_plateau(make_cfg):
    cfg = make_cfg("schedule=plateau", "schedule.patience=2", "schedule.cooldown=1", "schedule.factor=0.5",
                   "schedule.min_lr=0.02").schedule
    losses = [1.0, 0.9, 0.9, 0.95, 0.91, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]
    plateau = Plateau(cfg, LR)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.02)
    for loss in losses:
        plateau.update(loss)
        reference.step(loss)
        assert LR * plateau.scale == pytest.approx(opt.param_groups[0]["lr"])
    assert LR * plateau.scale == pytest.approx(0.02)  # 0.1 -> 0.05 -> 0.025 -> 0.0125 floored at min_lr


def test_plateau_with_warmup(make_cfg):
    f = lr_at(make_cfg, "plateau", "schedule.warmup=4")
    assert [f(0), f(3), f(50)] == pytest.approx([LR / 4, LR, LR])


def test_unknown_schedule_names_the_choices(make_cfg):
    cfg = make_cfg("schedule=constant", "schedule.name=triangle").schedule
    with pytest.raises(ValueError, match=r"schedule.name='triangle'.*cosine"):
        make_lr_at(cfg, LR, SPE, TOTAL)


@pytest.mark.parametrize("mult", [3, 10])
def test_item12_cosine_restarts_restart_at_full_lr_for_any_mult(mult):
    """Cycle starts by hand: mult 3 -> 0, 1, 4, 13, 40, 121, 364 periods; mult 10 -> 0, 1, 11, 111, 1111, 11111.
    At each start the lr is the full lr; just before it, the cycle's minimum (floor(log(243, 3)) = 4 put
    the start at 121 at the minimum)."""
    from runner.schedule import cosine_restarts

    starts = {3: [0, 1, 4, 13, 40, 121, 364], 10: [0, 1, 11, 111, 1111, 11111]}[mult]
    for s, nxt in zip(starts, starts[1:]):
        assert cosine_restarts(s, 10**6, period=1, mult=mult) == 1.0
        mid = (s + nxt) / 2  # halfway through cycle of length nxt - s: (1 + cos(pi / 2)) / 2
        assert cosine_restarts(mid, 10**6, period=1, mult=mult) == pytest.approx(0.5)
        assert cosine_restarts(nxt - 1e-6, 10**6, period=1, mult=mult) == pytest.approx(0.0, abs=1e-9)
    assert cosine_restarts(121 * 7, 10**6, period=7, mult=3) == 1.0  # a period of 7 epochs: starts x 7
