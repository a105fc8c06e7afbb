"""Network layers with hand-written forward and backward passes.

Contract of every layer: `forward(x, training)` caches what `backward` needs and returns the
output; `backward(dy, need_dx)` writes the parameter gradients into `grads` (same order and
shapes as `params`) and returns the gradient with respect to the input, or None when the
caller does not need it (the first layer). `backward` may overwrite `dy`: each gradient
is used once, by the layer it is handed to. Images are NHWC. Layers keep the dtype of their
parameters, so the same code runs in float32 for training and float64 for gradient checks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

Array = NDArray[Any]


class Layer:
    """A step of a network; parameter-free by default."""

    params: tuple[Array, ...] = ()
    grads: tuple[Array, ...] = ()
    param_names: tuple[str, ...] = ()

    def forward(self, x: Array, training: bool) -> Array:
        raise NotImplementedError

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        raise NotImplementedError


class Dense(Layer):
    """y = x @ W + b for x of shape (n, inputs)."""

    param_names = ("W", "b")

    def __init__(self, weight: Array, bias: Array) -> None:
        self.params = (weight, bias)
        self.grads = (np.zeros_like(weight), np.zeros_like(bias))
        self._x: Array | None = None

    def forward(self, x: Array, training: bool) -> Array:
        if training:
            self._x = x
        y = x @ self.params[0]
        y += self.params[1]
        return y

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        assert self._x is not None, "backward before forward"
        np.matmul(self._x.T, dy, out=self.grads[0])
        np.add.reduce(dy, axis=0, out=self.grads[1])
        self._x = None
        return dy @ self.params[0].T if need_dx else None


class ReLU(Layer):
    def __init__(self) -> None:
        self._y: Array | None = None

    def forward(self, x: Array, training: bool) -> Array:
        # In place: the input is the previous layer's fresh output and nothing else holds it.
        y = np.maximum(x, 0, out=x)
        if training:
            self._y = y
        return y

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        assert self._y is not None, "backward before forward"
        np.multiply(dy, self._y > 0, out=dy)
        self._y = None
        return dy


class Tanh(Layer):
    def __init__(self) -> None:
        self._y: Array | None = None

    def forward(self, x: Array, training: bool) -> Array:
        y = np.tanh(x, out=x)
        if training:
            self._y = y
        return y

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        assert self._y is not None, "backward before forward"
        y = self._y
        self._y = None
        dx: Array = dy * (1 - y * y)
        return dx


_GELU_C = math.sqrt(2 / math.pi)


class GELU(Layer):
    """GELU in its tanh approximation (numpy has no erf); error below 1e-3 everywhere."""

    def __init__(self) -> None:
        self._x: Array | None = None
        self._t: Array | None = None

    def forward(self, x: Array, training: bool) -> Array:
        t = np.tanh(_GELU_C * (x + 0.044715 * x**3))
        if training:
            self._x, self._t = x, t
        y: Array = 0.5 * x * (1 + t)
        return y

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        assert self._x is not None and self._t is not None, "backward before forward"
        x, t = self._x, self._t
        self._x = self._t = None
        inner = _GELU_C * (1 + 3 * 0.044715 * x * x)
        dx: Array = dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner)
        return dx


class Dropout(Layer):
    """Inverted dropout: scales kept units by 1/(1-rate) while training, identity otherwise."""

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        self.rate = rate
        self._rng = rng
        self._mask: Array | None = None

    def forward(self, x: Array, training: bool) -> Array:
        if not training or self.rate == 0:
            return x
        keep = self._rng.random(x.shape, dtype=np.float32) >= self.rate
        self._mask = keep.astype(x.dtype) * x.dtype.type(1 / (1 - self.rate))
        return x * self._mask

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        if self._mask is None:
            return dy
        mask, self._mask = self._mask, None
        return dy * mask


class Reshape(Layer):
    """Reshapes each sample to `shape` (flat rows to images and back)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self._in: tuple[int, ...] | None = None

    def forward(self, x: Array, training: bool) -> Array:
        self._in = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        assert self._in is not None, "backward before forward"
        return dy.reshape(self._in)


class Conv2D(Layer):
    """Same-padded, stride-1 convolution of NHWC images, computed as one matmul (im2col).

    The kernel has shape (in_channels, k, k, out_channels), the order in which
    `sliding_window_view` lays out each patch.
    """

    param_names = ("W", "b")

    def __init__(self, weight: Array, bias: Array) -> None:
        self.params = (weight, bias)
        self.grads = (np.zeros_like(weight), np.zeros_like(bias))
        self.k = weight.shape[1]
        self._cols: Array | None = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: Array, training: bool) -> Array:
        n, h, w, c = x.shape
        k, pad = self.k, self.k // 2
        if pad:
            padded = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype)
            padded[:, pad : pad + h, pad : pad + w, :] = x
        else:
            padded = x
        cols = sliding_window_view(padded, (k, k), axis=(1, 2)).reshape(n * h * w, c * k * k)
        weight, bias = self.params
        y = cols @ weight.reshape(c * k * k, -1)
        y += bias
        if training:
            self._cols, self._shape = cols, x.shape
        return y.reshape(n, h, w, -1)

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        assert self._cols is not None and self._shape is not None, "backward before forward"
        n, h, w, c = self._shape
        k, pad = self.k, self.k // 2
        weight = self.params[0]
        dy2 = dy.reshape(n * h * w, -1)
        np.matmul(self._cols.T, dy2, out=self.grads[0].reshape(c * k * k, -1))
        np.add.reduce(dy2, axis=0, out=self.grads[1])
        self._cols = None
        if not need_dx:
            return None
        dcols = (dy2 @ weight.reshape(c * k * k, -1).T).reshape(n, h, w, c, k, k)
        dpadded = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=dy.dtype)
        # Fold the patches back: k*k shifted adds, each over the whole batch at once.
        for i in range(k):
            for j in range(k):
                dpadded[:, i : i + h, j : j + w, :] += dcols[..., i, j]
        return dpadded[:, pad : pad + h, pad : pad + w, :]


class MaxPool2D(Layer):
    """Non-overlapping max pooling of NHWC images; rows or columns that do not fill a window
    are dropped, as the architecture plan assumes. The gradient goes to the first maximum of
    each window, so ties cannot double it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._winner: Array | None = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: Array, training: bool) -> Array:
        n, h, w, c = x.shape
        s = self.size
        ho, wo = h // s, w // s
        # A view with the window offsets as axes 2 and 4: s*s strided maxima, no copies.
        windows = x[:, : ho * s, : wo * s, :].reshape(n, ho, s, wo, s, c)
        best = windows[:, :, 0, :, 0, :].copy()
        winner = np.zeros(best.shape, dtype=np.int8) if training else None
        for k in range(1, s * s):
            candidate = windows[:, :, k // s, :, k % s, :]
            if winner is not None:
                winner[candidate > best] = k
            np.maximum(best, candidate, out=best)
        if training:
            self._winner, self._shape = winner, x.shape
        return best

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        assert self._winner is not None and self._shape is not None, "backward before forward"
        n, h, w, c = self._shape
        s = self.size
        ho, wo = h // s, w // s
        dx = np.zeros(self._shape, dtype=dy.dtype)
        windows = dx[:, : ho * s, : wo * s, :].reshape(n, ho, s, wo, s, c)
        for k in range(s * s):
            np.multiply(dy, self._winner == k, out=windows[:, :, k // s, :, k % s, :])
        self._winner = None
        return dx
