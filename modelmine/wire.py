"""The one codec of ModelMine: canonical msgpack with strict, bounded decoding.

Canonical means: maps are written with their keys sorted, only str map keys, no ext types,
bin for bytes and str for text. Equal values therefore always encode to equal bytes, which is
what lets signatures and content hashes be recomputed by anyone.

Decoding is strict: size, depth, container-length and type limits are enforced, and anything
outside them raises :class:`WireError`, never a msgpack or recursion error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import msgpack

MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
MAX_DEPTH: Final = 16
MAX_CONTAINER_LEN: Final = 100_000

Value = Any  # None | bool | int | float | str | bytes | list[Value] | dict[str, Value]


class WireError(ValueError):
    """Bytes from outside that are not a valid message. The text says what is wrong."""


def _canonical(value: Value, depth: int) -> Value:
    # Exact type checks first: this runs for every value of every message, and isinstance
    # against the Mapping ABC is several times slower than a type identity test.
    kind = type(value)
    if kind is str or kind is bytes or kind is int or kind is float or value is None:
        return value
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH}")
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for key in sorted(value):
            if type(key) is not str:
                raise WireError(f"map key {key!r} is not a string")
            out[key] = _canonical(value[key], depth + 1)
        return out
    if kind is list or kind is tuple:
        return [_canonical(item, depth + 1) for item in value]
    if kind is bool:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, bool | int | float | str | bytes):
        return value
    raise WireError(f"cannot encode {type(value).__name__}")


def encode(value: Value) -> bytes:
    """Canonical msgpack bytes of ``value`` (dicts with str keys, lists, scalars, bytes)."""
    try:
        packed: bytes = msgpack.packb(_canonical(value, 0), use_bin_type=True)
    except OverflowError as exc:
        raise WireError(f"integer out of the 64-bit range: {exc}") from None
    return packed


def _no_ext(code: int, data: bytes) -> Value:
    raise WireError(f"msgpack ext type {code} is not allowed")


def _check_shape(value: Value) -> None:
    """Depth limit, and str-only map keys (msgpack's strict mode also lets bytes through)."""
    stack: list[tuple[Value, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict:
            if depth >= MAX_DEPTH:
                raise WireError(f"message nested deeper than {MAX_DEPTH}")
            for key, child in item.items():
                if type(key) is not str:
                    raise WireError("map key is not a string")
                if type(child) is dict or type(child) is list:
                    stack.append((child, depth + 1))
        elif kind is list:
            if depth >= MAX_DEPTH:
                raise WireError(f"message nested deeper than {MAX_DEPTH}")
            stack.extend((child, depth + 1) for child in item if type(child) in (dict, list))


def decode(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> Value:
    """Decode one msgpack value, enforcing size, depth, length and type limits."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise WireError("empty message")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=0,
        )
    except WireError:
        raise
    except RecursionError as exc:
        raise WireError("message nested too deeply") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # ExtraData, OutOfData (truncated), FormatError, StackError, UnicodeDecodeError ...
        raise WireError(f"malformed msgpack: {type(exc).__name__}: {exc}") from exc
    _check_shape(value)
    return value


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- Field access for decoded messages: every check is explicit and names the field. --


def expect_map(value: Value, what: str) -> dict[str, Value]:
    if not isinstance(value, dict):
        raise WireError(f"{what}: expected a map, got {type(value).__name__}")
    return value


def field(msg: Mapping[str, Value], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``msg[name]`` checked against ``kind``; bool is never accepted as int."""
    if name not in msg:
        raise WireError(f"{what}: missing field '{name}'")
    value = msg[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise WireError(f"{what}.{name}: expected {_names(kinds)}, got bool")
    if not isinstance(value, kinds):
        raise WireError(f"{what}.{name}: expected {_names(kinds)}, got {type(value).__name__}")
    return value


def bytes_field(msg: Mapping[str, Value], name: str, size: int, what: str) -> bytes:
    value: bytes = field(msg, name, bytes, what)
    if len(value) != size:
        raise WireError(f"{what}.{name}: expected {size} bytes, got {len(value)}")
    return value


def int_field(msg: Mapping[str, Value], name: str, lo: int, hi: int, what: str) -> int:
    value: int = field(msg, name, int, what)
    if not lo <= value <= hi:
        raise WireError(f"{what}.{name}: must be {lo}..{hi}, got {value}")
    return value


def str_field(msg: Mapping[str, Value], name: str, max_len: int, what: str) -> str:
    value: str = field(msg, name, str, what)
    if len(value) > max_len:
        raise WireError(f"{what}.{name}: longer than {max_len} characters")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)
