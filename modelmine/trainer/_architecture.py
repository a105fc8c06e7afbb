"""The layer plan of a model: a JSON-able list that both builds networks and describes them.

A plan is computed from the model section of a spec and the data's shape before any weights
exist, so a spec can be checked against the parameter limit without allocating anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

LayerPlan = dict[str, Any]


class ArchitectureError(ValueError):
    """A model section that cannot be built for the data's shape."""


def plan_layers(
    *,
    kind: str,
    hidden: Sequence[int],
    activation: str,
    dropout: float,
    conv: Sequence[int],
    kernel_size: int,
    pool: int,
    feature_shape: Sequence[int],
    n_outputs: int,
) -> list[LayerPlan]:
    """The layers of a `kind` model mapping `feature_shape` inputs to `n_outputs` values."""
    plan: list[LayerPlan] = []
    width = math.prod(feature_shape)
    if kind == "cnn":
        if len(feature_shape) != 3:
            raise ArchitectureError(
                f"a cnn needs image-shaped data (height, width, channels), got {tuple(feature_shape)}"
            )
        height, wide, channels = feature_shape
        plan.append({"type": "reshape", "shape": [height, wide, channels]})
        for filters in conv:
            plan.append({"type": "conv2d", "in": channels, "out": filters, "kernel": kernel_size})
            plan.append({"type": activation})
            if pool > 1:
                height, wide = height // pool, wide // pool
                if height == 0 or wide == 0:
                    raise ArchitectureError(
                        f"{len(conv)} pooling stages of {pool} shrink the "
                        f"{feature_shape[0]}x{feature_shape[1]} input to nothing"
                    )
                plan.append({"type": "maxpool2d", "size": pool})
            channels = filters
        width = height * wide * channels
        plan.append({"type": "reshape", "shape": [width]})
    if kind in ("mlp", "cnn"):
        for units in hidden:
            plan.append({"type": "dense", "in": width, "out": units})
            plan.append({"type": activation})
            if dropout > 0:
                plan.append({"type": "dropout", "rate": dropout})
            width = units
    plan.append({"type": "dense", "in": width, "out": n_outputs})
    return plan


def parameter_count(plan: Sequence[LayerPlan]) -> int:
    """Number of trainable scalars (weights and biases) in `plan`."""
    total = 0
    for layer in plan:
        if layer["type"] == "dense":
            total += (layer["in"] + 1) * layer["out"]
        elif layer["type"] == "conv2d":
            total += (layer["in"] * layer["kernel"] ** 2 + 1) * layer["out"]
    return total


def activation_width(plan: Sequence[LayerPlan], feature_shape: Sequence[int]) -> int:
    """Sum of per-sample activation sizes: what one sample costs in memory while training."""
    total = math.prod(feature_shape)
    spatial = list(feature_shape[:2]) if len(feature_shape) == 3 else [1, 1]
    for layer in plan:
        if layer["type"] == "dense":
            total += 2 * layer["out"]
        elif layer["type"] == "conv2d":
            # The unfolded patches dominate: one row of in*k*k values per output pixel.
            pixels = spatial[0] * spatial[1]
            total += pixels * (layer["in"] * layer["kernel"] ** 2 + 3 * layer["out"])
        elif layer["type"] == "maxpool2d":
            spatial = [spatial[0] // layer["size"], spatial[1] // layer["size"]]
    return total


def check_plan(plan: object, n_inputs: int, *, max_parameters: int) -> int:
    """Check an untrusted plan (from a model file): well-formed layers whose shapes chain from
    rows of `n_inputs` values, within `max_parameters`. Returns the output width."""
    if not isinstance(plan, list) or not plan:
        raise ArchitectureError("architecture must be a non-empty list of layers")
    shape: tuple[int, ...] = (n_inputs,)
    for i, layer in enumerate(plan):
        if not isinstance(layer, dict):
            raise ArchitectureError(f"layer {i} is not a table")
        kind = layer.get("type")
        if kind == "dense":
            size_in, size_out = _ints(layer, i, "in", "out")
            if shape != (size_in,):
                raise ArchitectureError(f"layer {i} expects {size_in} inputs, gets shape {shape}")
            shape = (size_out,)
        elif kind == "conv2d":
            size_in, size_out, kernel = _ints(layer, i, "in", "out", "kernel")
            if len(shape) != 3 or shape[2] != size_in or kernel % 2 == 0:
                raise ArchitectureError(f"layer {i} (conv2d) does not fit input shape {shape}")
            shape = (shape[0], shape[1], size_out)
        elif kind == "maxpool2d":
            (size,) = _ints(layer, i, "size")
            if len(shape) != 3 or shape[0] < size or shape[1] < size:
                raise ArchitectureError(f"layer {i} (maxpool2d) does not fit input shape {shape}")
            shape = (shape[0] // size, shape[1] // size, shape[2])
        elif kind == "reshape":
            dims = layer.get("shape")
            if not isinstance(dims, list) or not 1 <= len(dims) <= 3:
                raise ArchitectureError(f"layer {i} (reshape) needs a shape of 1 to 3 sizes")
            new = _ints({str(j): d for j, d in enumerate(dims)}, i, *map(str, range(len(dims))))
            if math.prod(new) != math.prod(shape):
                raise ArchitectureError(f"layer {i} cannot reshape {shape} to {tuple(new)}")
            shape = tuple(new)
        elif kind == "dropout":
            rate = layer.get("rate")
            if not isinstance(rate, float | int) or not 0 <= rate < 1:
                raise ArchitectureError(f"layer {i} (dropout) needs a rate in [0, 1)")
        elif kind not in ("relu", "tanh", "gelu"):
            raise ArchitectureError(f"layer {i} has unknown type {kind!r}")
    if len(shape) != 1:
        raise ArchitectureError(f"the output must be flat, got shape {shape}")
    count = parameter_count(plan)
    if count > max_parameters:
        raise ArchitectureError(f"{count:,} parameters, more than {max_parameters:,}")
    return shape[0]


def _ints(layer: dict[str, Any], index: int, *keys: str) -> list[int]:
    values = [layer.get(key) for key in keys]
    for key, value in zip(keys, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 24:
            raise ArchitectureError(f"layer {index}: {key!r} must be a positive integer")
    return [int(v) for v in values]  # type: ignore[arg-type]
