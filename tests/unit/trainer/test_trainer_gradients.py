"""Finite-difference checks of every layer's and every loss's backward pass (in float64)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from modelmine.trainer._architecture import plan_layers
from modelmine.trainer._layers import (
    GELU,
    Conv2D,
    Dense,
    Dropout,
    Layer,
    MaxPool2D,
    ReLU,
    Reshape,
    Tanh,
)
from modelmine.trainer._losses import mean_squared_error, softmax_cross_entropy
from modelmine.trainer._network import Network

Array = NDArray[Any]
EPS = 1e-6


def numeric_gradient(f: Callable[[], float], x: Array) -> Array:
    """Central differences of f with respect to every entry of x (x is perturbed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + EPS
        up = f()
        x[i] = old - EPS
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * EPS)
    return grad


def assert_close(analytic: Array, numeric: Array) -> None:
    scale = max(np.abs(analytic).max(), np.abs(numeric).max(), 1e-8)
    assert np.abs(analytic - numeric).max() / scale < 1e-6


def check_layer(make: Callable[[], Layer], x: Array, *, seed: int = 0) -> None:
    """Compare backward() with finite differences of sum(forward(x) * r) for a random r."""
    layer = make()
    r = np.random.default_rng(seed).standard_normal(layer.forward(x.copy(), True).shape)

    def loss() -> float:
        return float((layer.forward(x.copy(), True) * r).sum())

    loss()
    dx = layer.backward(r.copy())
    analytic = [g.copy() for g in layer.grads]
    assert dx is not None
    assert_close(dx, numeric_gradient(loss, x))
    for param, grad in zip(layer.params, analytic, strict=True):
        assert_close(grad, numeric_gradient(loss, param))


def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def away_from_zero(shape: tuple[int, ...]) -> Array:
    """Inputs at least 0.1 from zero, where ReLU's kink would fool finite differences."""
    x = rng().standard_normal(shape)
    return np.where(np.abs(x) < 0.1, np.sign(x) * 0.1 + x, x)


def test_dense() -> None:
    g = rng()
    w, b = g.standard_normal((5, 3)), g.standard_normal(3)
    check_layer(lambda: Dense(w, b), g.standard_normal((4, 5)))


@pytest.mark.parametrize("activation", [ReLU, Tanh, GELU])
def test_activations(activation: type[Layer]) -> None:
    check_layer(activation, away_from_zero((4, 6)))


def test_gelu_matches_the_exact_definition_closely() -> None:
    import math

    x = np.linspace(-5, 5, 101)
    exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.abs(GELU().forward(x.copy(), False) - exact).max() < 1e-3


def test_dropout_with_a_fixed_mask() -> None:
    # A fresh generator per forward pass keeps the mask fixed while differencing.
    class FixedDropout(Dropout):
        def forward(self, x: Array, training: bool) -> Array:
            self._rng = np.random.default_rng(7)
            return super().forward(x, training)

    x = rng().standard_normal((6, 8))
    layer = FixedDropout(0.5, np.random.default_rng(7))
    y = layer.forward(x.copy(), True)
    dropped = y == 0
    assert 0 < dropped.mean() < 1
    assert np.allclose(y[~dropped], 2 * x[~dropped])
    assert np.array_equal(layer.forward(x.copy(), False), x)
    check_layer(lambda: FixedDropout(0.5, np.random.default_rng(7)), x)


def test_reshape() -> None:
    check_layer(lambda: Reshape((2, 3, 1)), rng().standard_normal((4, 6)))


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_conv2d(kernel: int) -> None:
    g = rng()
    w, b = g.standard_normal((2, kernel, kernel, 3)), g.standard_normal(3)
    check_layer(lambda: Conv2D(w, b), g.standard_normal((2, 5, 4, 2)))


def test_conv2d_matches_a_direct_convolution() -> None:
    g = rng()
    x, w, b = g.standard_normal((2, 5, 6, 3)), g.standard_normal((3, 3, 3, 4)), g.standard_normal(4)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 5, 6, 4))
    for i in range(5):
        for j in range(6):
            patch = padded[:, i : i + 3, j : j + 3, :]  # (n, kh, kw, c)
            expected[:, i, j, :] = np.einsum("nhwc,chwf->nf", patch, w) + b
    assert np.allclose(Conv2D(w, b).forward(x, False), expected)


@pytest.mark.parametrize(
    ("size", "shape"), [(2, (2, 4, 6, 3)), (2, (2, 5, 5, 2)), (3, (1, 6, 7, 2))]
)
def test_maxpool(size: int, shape: tuple[int, ...]) -> None:
    check_layer(lambda: MaxPool2D(size), rng().standard_normal(shape))


def test_maxpool_gives_a_tied_window_one_gradient() -> None:
    layer = MaxPool2D(2)
    x = np.ones((1, 2, 2, 1))
    assert layer.forward(x, True).item() == 1
    dx = layer.backward(np.ones((1, 1, 1, 1)))
    assert dx is not None and dx.sum() == 1


def check_loss(
    loss_fn: Callable[[Array, Any], tuple[float, Array]], out: Array, target: Any
) -> None:
    _, grad = loss_fn(out, target)
    assert_close(grad, numeric_gradient(lambda: loss_fn(out, target)[0], out))


def test_softmax_cross_entropy() -> None:
    check_loss(softmax_cross_entropy, rng().standard_normal((5, 4)), np.array([0, 3, 1, 1, 2]))


def test_softmax_cross_entropy_is_stable_for_huge_logits() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, 1e4, 0.0]], dtype=np.float32)
    loss, grad = softmax_cross_entropy(logits, np.array([2, 1]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(1000.0, rel=1e-6)


def test_softmax_cross_entropy_value() -> None:
    loss, _ = softmax_cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2]))
    assert loss == pytest.approx(np.log(4))


def test_mean_squared_error() -> None:
    g = rng()
    out, target = g.standard_normal((6, 1)), g.standard_normal(6)
    check_loss(mean_squared_error, out, target)
    assert mean_squared_error(out, target)[0] == pytest.approx(np.mean((out[:, 0] - target) ** 2))


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_whole_cnn(activation: str) -> None:
    """Every parameter of a conv-pool-conv-pool-dense-dense network, through the loss."""
    plan = plan_layers(
        kind="cnn",
        hidden=[5],
        activation=activation,
        dropout=0.0,
        conv=[3, 4],
        kernel_size=3,
        pool=2,
        feature_shape=(6, 5, 2),
        n_outputs=3,
    )
    net = Network.initialize(
        plan,
        init="auto",
        rng=rng(),
        dropout_rng=rng(),
        dtype=np.float64,
    )
    x = rng().standard_normal((3, 60))
    y = np.array([0, 2, 1])

    def loss() -> float:
        return softmax_cross_entropy(net.forward(x, training=True), y)[0]

    _, grad = softmax_cross_entropy(net.forward(x, training=True), y)
    net.backward(grad)
    analytic = [g.copy() for g in net.grads]
    for name, param, expected in zip(net.names, net.params, analytic, strict=True):
        numeric = numeric_gradient(loss, param)
        assert np.abs(expected - numeric).max() < 1e-6 * max(1.0, np.abs(numeric).max()), name
