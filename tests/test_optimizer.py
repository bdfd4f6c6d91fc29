"""Each conf/optimizer file against its update rule written out here, and Lookahead."""

import math

import pytest
import torch

from runner.build import build
from runner.optimizer import Lookahead

A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
W0 = torch.tensor([0.3, -0.7, 1.2], dtype=torch.float64)
STEPS = 8


def grad(w):  # gradient of the quadratic w'Aw/2 - b'w
    return A @ w - B


def reference(name, c):
    """The optimizer's first STEPS iterates, from the formulas (torch's conventions where the lectures are loose)."""
    w, out = W0.clone(), []
    m, v, G = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    mu_prod = 1.0
    for t in range(1, STEPS + 1):
        g = grad(w)
        lr = c["lr"]
        if name == "sgd":
            w = w - lr * g
        elif name == "momentum":  # v <- mu v + g; w <- w - lr v
            v = c["momentum"] * v + g
            w = w - lr * v
        elif name == "nesterov":  # v <- mu v + g; w <- w - lr (g + mu v)
            v = c["momentum"] * v + g
            w = w - lr * (g + c["momentum"] * v)
        elif name == "adagrad":  # G <- G + g^2; w <- w - lr g / (sqrt(G) + eps)
            G = G + g**2
            w = w - lr * g / (G.sqrt() + c["eps"])
        elif name == "rmsprop":  # E <- a E + (1 - a) g^2; w <- w - lr g / (sqrt(E) + eps)
            v = c["alpha"] * v + (1 - c["alpha"]) * g**2
            w = w - lr * g / (v.sqrt() + c["eps"])
        else:
            b1, b2 = c["betas"]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            if name == "adam":
                w = w - lr * m_hat / (v_hat.sqrt() + c["eps"])
            elif name == "adamw":  # decoupled: (1 - lr lambda) w - lr m_hat / (sqrt(v_hat) + eps)
                w = (1 - lr * c["weight_decay"]) * w - lr * m_hat / (v_hat.sqrt() + c["eps"])
            elif name == "nadam":  # Dozat (2016) with torch's momentum schedule mu_t = b1 (1 - 0.96^(0.004 t) / 2)
                mu, mu_next = (b1 * (1 - 0.5 * 0.96 ** (s * 0.004)) for s in (t, t + 1))
                mu_prod *= mu
                denom = v_hat.sqrt() + c["eps"]
                w = w - lr * (1 - mu) / (1 - mu_prod) * g / denom - lr * mu_next / (1 - mu_prod * mu_next) * m / denom
            elif name == "radam":  # Liu et al. (2020): SGD with momentum until the variance is tractable
                rho_inf = 2 / (1 - b2) - 1
                rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
                if rho > 5:
                    r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                    w = w - lr * m_hat * r / (v_hat.sqrt() + c["eps"])
                else:
                    w = w - lr * m_hat
        out.append(w)
    return out


OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam", "radam"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_first_steps_follow_the_update_rule(make_cfg, name):
    node = make_cfg(f"optimizer={name}").optimizer
    w = W0.clone().requires_grad_()
    opt = build(node)([w])
    expected = reference(name, node)
    for t in range(STEPS):
        opt.zero_grad()
        w.grad = grad(w.detach())
        opt.step()
        torch.testing.assert_close(w.detach(), expected[t], rtol=1e-6, atol=1e-9, msg=f"{name} step {t + 1}")


def test_every_optimizer_file_is_covered():
    from conftest import CONF

    assert sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")) == sorted(OPTIMIZERS)


def test_lookahead_moves_slow_weights_alpha_of_the_way_every_k_steps():
    lr, k, alpha = 0.1, 3, 0.4
    w = W0.clone().requires_grad_()
    opt = Lookahead(torch.optim.SGD([w], lr=lr), k=k, alpha=alpha)
    slow, fast = W0.clone(), W0.clone()
    for t in range(1, 10):
        opt.zero_grad()
        w.grad = grad(w.detach())
        opt.step()
        fast = fast - lr * grad(fast)
        if t % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow.clone()
        torch.testing.assert_close(w.detach(), fast)
    assert opt.steps == 9


def test_lookahead_state_round_trips():
    w = W0.clone().requires_grad_()
    opt = Lookahead(torch.optim.Adam([w], lr=0.1), k=2)
    for _ in range(3):
        w.grad = grad(w.detach())
        opt.step()
    state = opt.state_dict()
    w2 = W0.clone().requires_grad_()
    opt2 = Lookahead(torch.optim.Adam([w2], lr=0.1), k=2)
    opt2.load_state_dict(state)
    assert opt2.steps == 3
    torch.testing.assert_close(opt2.slow[0], opt.slow[0])


@pytest.mark.parametrize("k,alpha", [(0, 0.5), (5, 0.0), (5, 1.5)])
def test_lookahead_rejects_bad_settings(k, alpha):
    with pytest.raises(ValueError, match="lookahead"):
        Lookahead(torch.optim.SGD([W0.clone().requires_grad_()], lr=0.1), k=k, alpha=alpha)


def test_lookahead_follows_the_inner_optimizers_param_groups_after_loading():
    """torch's load_state_dict replaces param_groups; lr set through Lookahead must still reach it."""
    w = W0.clone().requires_grad_()
    opt = Lookahead(torch.optim.SGD([w], lr=0.1), k=2)
    opt.load_state_dict(opt.state_dict())
    for group in opt.param_groups:
        group["lr"] = 0.5
    assert opt.optimizer.param_groups[0]["lr"] == 0.5


def test_item13_lookahead_run_tests_and_saves_the_slow_weights(make_cfg, tmp_path):
    """3 steps with k=2: the slow weights synced at step 2, the fast ones took one more step. The
    summary's test loss is the slow weights' (evaluated here from last.pt), not the fast ones'."""
    import torch.nn.functional as F

    from runner.build import build
    from runner.data import load
    from runner.run import run

    cfg = make_cfg("data=digits", "trainer.epochs=1", "trainer.batch_size=100", "data.train_size=300",
                   "lookahead.k=2", "diagnostics=off", small=False)
    summary = run(cfg, tmp_path)
    assert summary["steps"] == 3
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    data = load(cfg.data, cfg.paths.data_dir)
    model = build(cfg.model)(data.input_shape, data.num_outputs, norm=build(cfg.norm), dropout=0.2, input_dropout=0.0)
    model.load_state_dict(ckpt["model"])  # the fast weights, what resuming continues from
    model.eval()
    fast_loss = F.cross_entropy(model(data.x_test), data.y_test).item()
    with torch.no_grad():
        for p, slow in zip(model.parameters(), ckpt["optimizer"]["slow"]):
            p.copy_(slow)
    slow_loss = F.cross_entropy(model(data.x_test), data.y_test).item()
    assert fast_loss != pytest.approx(slow_loss, rel=1e-6)  # they differ, so the test can tell them apart
    assert summary["test_loss"] == pytest.approx(slow_loss, rel=1e-5)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())  # best.pt: the slow weights


def test_item14_torch_momentum_equals_the_lectures_rule_only_at_a_constant_lr():
    """torch: v <- mu v + g, w <- w - lr v. Lectures: v <- gamma v + eta g, w <- w - v. Equal while
    lr = eta is constant; when lr changes, torch rescales all past velocity by the new lr."""
    grads = [torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([-1.0])]

    def torch_rule(lrs):
        w = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([w], lr=lrs[0], momentum=0.9)
        for g, lr in zip(grads, lrs):
            opt.param_groups[0]["lr"] = lr
            w.grad = g.clone()
            opt.step()
        return w.item()

    def lecture_rule(lrs):
        w, v = 0.0, 0.0
        for g, eta in zip(grads, lrs):
            v = 0.9 * v + eta * g.item()
            w -= v
        return w

    assert torch_rule([0.1] * 3) == pytest.approx(lecture_rule([0.1] * 3))
    assert torch_rule([0.1, 0.01, 0.001]) != pytest.approx(lecture_rule([0.1, 0.01, 0.001]))
