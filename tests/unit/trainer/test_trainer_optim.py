"""Optimizers against their textbook update rules, schedules, clipping, state round trip."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from modelmine.trainer import Hyperparameters
from modelmine.trainer._optim import clip_gradients, learning_rate, make_optimizer


def hp(**fields: Any) -> Hyperparameters:
    return Hyperparameters(**fields)


def run_steps(h: Hyperparameters, grads: list[float], lr: float = 0.1) -> tuple[float, float]:
    """Apply the optimizer to a weight (decayed) and a bias (never decayed), both from 1.0."""
    weight, bias = np.array([1.0]), np.array([1.0])
    opt = make_optimizer(h, [weight, bias], [True, False])
    for g in grads:
        opt.step([np.array([g]), np.array([g])], lr)
    return float(weight[0]), float(bias[0])


GRADS = [0.5, -0.2, 0.3, 0.1]


def test_sgd_with_l2_decay() -> None:
    w = b = 1.0
    for g in GRADS:
        w -= 0.1 * (g + 0.01 * w)
        b -= 0.1 * g
    assert run_steps(hp(optimizer="sgd", weight_decay=0.01), GRADS) == pytest.approx((w, b))


def test_momentum_and_nesterov() -> None:
    w, v = 1.0, 0.0
    for g in GRADS:
        v = 0.9 * v + g
        w -= 0.1 * v
    assert run_steps(hp(optimizer="momentum"), GRADS)[0] == pytest.approx(w)
    w, v = 1.0, 0.0
    for g in GRADS:
        v = 0.9 * v + g
        w -= 0.1 * (g + 0.9 * v)
    assert run_steps(hp(optimizer="nesterov"), GRADS)[0] == pytest.approx(w)


def adam_reference(grads: list[float], decoupled: float = 0.0) -> float:
    w, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        w -= 0.1 * decoupled * w
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= 0.1 * (m / (1 - 0.9**t)) / (math.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def test_adam() -> None:
    assert run_steps(hp(optimizer="adam"), GRADS)[0] == pytest.approx(adam_reference(GRADS))


def test_adamw_decays_weights_but_not_biases() -> None:
    weight, bias = run_steps(hp(optimizer="adamw", weight_decay=0.1), GRADS)
    assert weight == pytest.approx(adam_reference(GRADS, decoupled=0.1))
    assert bias == pytest.approx(adam_reference(GRADS))


def test_state_round_trip_continues_identically() -> None:
    h = hp(optimizer="adam")
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(3).astype(np.float32) for _ in range(6)]
    p1 = np.ones(3, dtype=np.float32)
    a = make_optimizer(h, [p1], [True])
    for g in grads[:3]:
        a.step([g], 0.01)
    p2 = p1.copy()
    b = make_optimizer(h, [p2], [True])
    b.load_state(a.t, {k: v.copy() for k, v in a.state().items()})
    for g in grads[3:]:
        a.step([g], 0.01)
        b.step([g], 0.01)
    assert p1.tobytes() == p2.tobytes()
    with pytest.raises(ValueError, match="missing or misshapen"):
        b.load_state(1, {"m/0": np.zeros(2, dtype=np.float32)})


def test_schedules() -> None:
    constant = hp(learning_rate=0.1)
    assert learning_rate(constant, 999, 10, 1000) == 0.1
    step = hp(learning_rate=0.1, schedule="step", step_epochs=2, gamma=0.5)
    rates = [learning_rate(step, s, 10, 100) for s in (0, 19, 20, 39, 40, 99)]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.00625])
    cosine = hp(learning_rate=0.1, schedule="cosine")
    assert learning_rate(cosine, 0, 10, 100) == pytest.approx(0.1)
    assert learning_rate(cosine, 50, 10, 100) == pytest.approx(0.05)
    assert learning_rate(cosine, 99, 10, 100) < 0.001


def test_gradient_clipping_by_global_norm() -> None:
    grads = [np.array([3.0]), np.array([4.0])]
    assert clip_gradients(grads, 1.0) == pytest.approx(5.0)
    assert [g[0] for g in grads] == pytest.approx([0.6, 0.8])
    small = [np.array([0.3]), np.array([0.4])]
    clip_gradients(small, 1.0)
    assert [g[0] for g in small] == pytest.approx([0.3, 0.4])
