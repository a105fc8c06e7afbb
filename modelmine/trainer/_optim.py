"""Optimizers, learning-rate schedules and gradient clipping, all updating arrays in place.

An optimizer's whole state is its `state()` arrays plus the step count; restoring both gives
bitwise the same updates afterwards, which checkpoint resumption relies on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._spec import Hyperparameters

Array = NDArray[Any]


class Optimizer:
    """Updates `params` from `grads` (parallel lists) once per `step(lr)`."""

    slots: tuple[str, ...] = ()

    def __init__(
        self, hp: Hyperparameters, params: Sequence[Array], decays: Sequence[bool]
    ) -> None:
        self.hp = hp
        self.params = list(params)
        self.decays = list(decays)
        self.t = 0
        self.buffers = {slot: [np.zeros_like(p) for p in params] for slot in self.slots}

    def step(self, grads: Sequence[Array], lr: float) -> None:
        self.t += 1
        wd = self.hp.weight_decay
        for i, (p, g, decay) in enumerate(zip(self.params, grads, self.decays, strict=True)):
            if wd and decay:
                # Coupled (L2) decay; AdamW overrides this with decoupled decay.
                g = g + wd * p
            self._update(i, p, g, lr)

    def _update(self, i: int, p: Array, g: Array, lr: float) -> None:
        p -= lr * g

    def state(self) -> dict[str, Array]:
        return {f"{slot}/{i}": b for slot, bufs in self.buffers.items() for i, b in enumerate(bufs)}

    def load_state(self, t: int, arrays: Mapping[str, Array]) -> None:
        """Restore from `state()`; raises ValueError if a buffer is missing or misshapen."""
        for slot, bufs in self.buffers.items():
            for i, buf in enumerate(bufs):
                saved = arrays.get(f"{slot}/{i}")
                if saved is None or saved.shape != buf.shape or saved.dtype != buf.dtype:
                    raise ValueError(f"optimizer state {slot}/{i} is missing or misshapen")
                buf[...] = saved
        if set(arrays) != set(self.state()):
            raise ValueError("optimizer state has unexpected buffers")
        self.t = t


class Momentum(Optimizer):
    """Heavy-ball momentum: v = mu v + g; p -= lr v."""

    slots = ("velocity",)

    def _update(self, i: int, p: Array, g: Array, lr: float) -> None:
        v = self.buffers["velocity"][i]
        v *= self.hp.momentum
        v += g
        p -= lr * v


class Nesterov(Momentum):
    """Nesterov momentum in the form used by PyTorch: p -= lr (g + mu v) after updating v."""

    def _update(self, i: int, p: Array, g: Array, lr: float) -> None:
        v = self.buffers["velocity"][i]
        v *= self.hp.momentum
        v += g
        p -= lr * (g + self.hp.momentum * v)


class Adam(Optimizer):
    slots = ("m", "v")
    _eps = 1e-8

    def _update(self, i: int, p: Array, g: Array, lr: float) -> None:
        b1, b2 = self.hp.beta1, self.hp.beta2
        m, v = self.buffers["m"][i], self.buffers["v"][i]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        # Bias corrections folded into scalars: one fewer pass over each array.
        c2 = math.sqrt(1 - b2**self.t)
        denom = np.sqrt(v)
        denom += self._eps * c2
        p -= (lr * c2 / (1 - b1**self.t)) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): p -= lr wd p, outside Adam."""

    def step(self, grads: Sequence[Array], lr: float) -> None:
        wd = self.hp.weight_decay
        if wd:
            for p, decay in zip(self.params, self.decays, strict=True):
                if decay:
                    p *= 1 - lr * wd
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            self._update(i, p, g, lr)


_KINDS: dict[str, type[Optimizer]] = {
    "sgd": Optimizer,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adam": Adam,
    "adamw": AdamW,
}


def make_optimizer(
    hp: Hyperparameters, params: Sequence[Array], decays: Sequence[bool]
) -> Optimizer:
    return _KINDS[hp.optimizer](hp, params, decays)


def learning_rate(hp: Hyperparameters, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The rate for 0-based `step`: constant, x gamma every step_epochs epochs, or cosine to 0."""
    if hp.schedule == "step":
        return hp.learning_rate * hp.gamma ** ((step // steps_per_epoch) // hp.step_epochs)
    if hp.schedule == "cosine":
        return hp.learning_rate * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    return hp.learning_rate


def clip_gradients(grads: Sequence[Array], max_norm: float) -> float:
    """Scale `grads` in place so their global L2 norm is at most `max_norm`; returns the norm."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if norm > max_norm:
        scale = max_norm / norm
        for g in grads:
            g *= scale
    return norm
