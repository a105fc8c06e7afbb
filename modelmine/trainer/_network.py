"""A feed-forward network: the layers of an architecture plan, with named parameters."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._architecture import LayerPlan
from ._layers import GELU, Conv2D, Dense, Dropout, Layer, MaxPool2D, ReLU, Reshape, Tanh

Array = NDArray[Any]

_ACTIVATIONS: dict[str, type[Layer]] = {"relu": ReLU, "tanh": Tanh, "gelu": GELU}


class Network:
    """Layers applied in order; parameters are named "<layer index>.<W|b>"."""

    def __init__(self, plan: Sequence[LayerPlan], layers: Sequence[Layer]) -> None:
        self.plan = [dict(layer) for layer in plan]
        self.layers = list(layers)
        self.names = [f"{i}.{n}" for i, layer in enumerate(layers) for n in layer.param_names]
        self.params = [p for layer in layers for p in layer.params]
        self.grads = [g for layer in layers for g in layer.grads]
        # Biases are not decayed: shrinking them toward zero regularizes nothing useful.
        self.decays = [name.endswith(".W") for name in self.names]
        self._first = next(i for i, layer in enumerate(layers) if layer.params)

    @classmethod
    def initialize(
        cls,
        plan: Sequence[LayerPlan],
        *,
        init: str,
        rng: np.random.Generator,
        dropout_rng: np.random.Generator,
        dtype: DTypeLike = np.float32,
    ) -> Network:
        """Fresh weights drawn from `rng`: He or Xavier for hidden layers, Xavier for the output."""
        arrays: dict[str, Array] = {}
        last = max(i for i, layer in enumerate(plan) if layer["type"] in ("dense", "conv2d"))
        for i, layer in enumerate(plan):
            if layer["type"] not in ("dense", "conv2d"):
                continue
            k2 = layer.get("kernel", 1) ** 2
            fan_in, fan_out = layer["in"] * k2, layer["out"] * k2
            shape = (
                (layer["in"], layer["out"])
                if layer["type"] == "dense"
                else (layer["in"], layer["kernel"], layer["kernel"], layer["out"])
            )
            activation = plan[i + 1]["type"] if i < last else "identity"
            he = i < last and (init == "he" or (init == "auto" and activation in ("relu", "gelu")))
            if he:
                weight = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                weight = rng.uniform(-limit, limit, shape)
            arrays[f"{i}.W"] = weight.astype(dtype)
            arrays[f"{i}.b"] = np.zeros(layer["out"], dtype=dtype)
        return cls.from_arrays(plan, arrays, dropout_rng=dropout_rng)

    @classmethod
    def from_arrays(
        cls,
        plan: Sequence[LayerPlan],
        arrays: Mapping[str, Array],
        *,
        dropout_rng: np.random.Generator | None = None,
    ) -> Network:
        """A network with the given parameters; raises ValueError if any is missing or misshapen."""
        layers: list[Layer] = []
        expected: set[str] = set()
        for i, layer in enumerate(plan):
            kind = layer["type"]
            if kind in ("dense", "conv2d"):
                k = layer.get("kernel", 1)
                shape = (
                    (layer["in"], layer["out"])
                    if kind == "dense"
                    else (layer["in"], k, k, layer["out"])
                )
                weight = _param(arrays, f"{i}.W", shape)
                bias = _param(arrays, f"{i}.b", (layer["out"],))
                if bias.dtype != weight.dtype:
                    raise ValueError(f"parameter {i}.b has dtype {bias.dtype}, not {weight.dtype}")
                expected |= {f"{i}.W", f"{i}.b"}
                layers.append(Dense(weight, bias) if kind == "dense" else Conv2D(weight, bias))
            elif kind in _ACTIVATIONS:
                layers.append(_ACTIVATIONS[kind]())
            elif kind == "dropout":
                # A loaded model only predicts, and dropout draws nothing outside training.
                rng = dropout_rng if dropout_rng is not None else np.random.default_rng(0)
                layers.append(Dropout(float(layer["rate"]), rng))
            elif kind == "reshape":
                layers.append(Reshape(tuple(int(d) for d in layer["shape"])))
            elif kind == "maxpool2d":
                layers.append(MaxPool2D(int(layer["size"])))
            else:
                raise ValueError(f"unknown layer type {kind!r}")
        extra = set(arrays) - expected
        if extra:
            raise ValueError(f"unexpected parameters: {', '.join(sorted(extra))}")
        return cls(plan, layers)

    def forward(self, x: Array, training: bool = False) -> Array:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad: Array) -> None:
        """Fill `grads` from d loss / d output, after a `forward(..., training=True)`."""
        for i in range(len(self.layers) - 1, self._first, -1):
            result = self.layers[i].backward(grad)
            assert result is not None
            grad = result
        # The input needs no gradient, which saves the largest matmul of the first layer.
        self.layers[self._first].backward(grad, need_dx=False)

    def arrays(self) -> dict[str, Array]:
        return dict(zip(self.names, self.params, strict=True))


def _param(arrays: Mapping[str, Array], name: str, shape: tuple[int, ...]) -> Array:
    if name not in arrays:
        raise ValueError(f"missing parameter {name}")
    array = arrays[name]
    if array.shape != shape or array.dtype.kind != "f":
        raise ValueError(
            f"parameter {name} has shape {array.shape} {array.dtype}, expected {shape}"
        )
    return array
