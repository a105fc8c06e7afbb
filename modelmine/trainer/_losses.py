"""Losses: each returns the mean loss over the batch and its gradient in one call."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def softmax_cross_entropy(logits: Array, labels: NDArray[np.integer[Any]]) -> tuple[float, Array]:
    """Mean cross-entropy of softmax(`logits`) against integer `labels`, and d loss / d logits.

    Stable for any finite logits: the row maximum is subtracted before exponentiating, and the
    log-probabilities come from log-sum-exp rather than from log(softmax).
    """
    n = logits.shape[0]
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_total = np.log(total)
    loss = float((log_total[:, 0] - shifted[rows, labels]).sum()) / n
    grad = exp
    grad /= total
    grad[rows, labels] -= 1
    grad *= grad.dtype.type(1 / n)
    return loss, grad


def mean_squared_error(predictions: Array, targets: Array) -> tuple[float, Array]:
    """Mean over samples of the squared error of single-output `predictions` (n, 1)."""
    diff = predictions[:, 0] - targets
    loss = float((diff * diff).sum()) / diff.shape[0]
    grad = (diff * diff.dtype.type(2 / diff.shape[0]))[:, None]
    return loss, grad


def log_softmax(logits: Array) -> Array:
    """Row-wise log-probabilities, computed stably."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    result: Array = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result
