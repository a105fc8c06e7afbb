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

_Packer: Final = msgpack.Packer

MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
MAX_DEPTH: Final = 16
MAX_CONTAINER_LEN: Final = 100_000

Value = Any  # None | bool | int | float | str | bytes | list[Value] | dict[str, Value]


class WireError(ValueError):
    """Bytes from outside that are not a valid message. The text says what is wrong."""


# Types that encode as they are at any depth: ``_canonical`` returns them unchanged. (bool
# too encodes as it is, but like subclasses of these it counts towards the depth limit.)
_SCALARS: Final = frozenset({str, bytes, int, float, type(None)})
_STR: Final = frozenset({str})
_CONTAINERS: Final = frozenset({dict, list})


def _canonical(value: Value, depth: int) -> Value:
    # The value to pack: maps with sorted keys, sequences as lists, bytes-likes as bytes.
    # Hot: it runs for every message made or checked. Exact type tests and set checks over
    # ``map(type, ...)`` (loops in C) keep flat containers of scalars off the Python-level
    # recursion, and a map whose keys are already in order is packed as it is, not copied.
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH}")
    if kind is dict:
        if not _STR.issuperset(map(type, value)):
            _bad_key(value)
        keys = sorted(value)
        if _SCALARS.issuperset(map(type, value.values())):
            return value if keys == list(value) else {key: value[key] for key in keys}
        depth += 1
        out = {}
        for key in keys:
            item = value[key]
            out[key] = item if type(item) in _SCALARS else _canonical(item, depth)
        return out
    if kind is list or kind is tuple:
        # msgpack packs a tuple as an array, just like the list it stands for.
        if _SCALARS.issuperset(map(type, value)):
            return value
        depth += 1
        return [item if type(item) in _SCALARS else _canonical(item, depth) for item in value]
    if isinstance(value, Mapping):
        _bad_key(value)
        return {key: _canonical(value[key], depth + 1) for key in sorted(value)}
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, bool | int | float | str | bytes):
        return value
    raise WireError(f"cannot encode {type(value).__name__}")


def _bad_key(value: Mapping[Any, Value]) -> None:
    """Raise WireError naming a key of ``value`` that is not a str, if there is one."""
    for key in value:
        if type(key) is not str:
            raise WireError(f"map key {key!r} is not a string")


def encode(value: Value) -> bytes:
    """Canonical msgpack bytes of ``value`` (dicts with str keys, lists, scalars, bytes)."""
    try:
        packed: bytes = _Packer(use_bin_type=True).pack(_canonical(value, 0))
    except OverflowError as exc:
        raise WireError(f"integer out of the 64-bit range: {exc}") from None
    return packed


def encode_canonical_form(value: Value) -> bytes:
    """:func:`encode` of a value the caller built in canonical form as it stands: maps with
    str keys inserted in sorted order, lists or tuples, and the scalars None, bool, int,
    float, str and bytes, nested no deeper than ``encode`` allows.

    Such a value needs no canonical copy, so it is packed as it is, without the checks; for
    hot paths that write one fixed form (whose tests compare the bytes with ``encode``).
    """
    try:
        packed: bytes = _Packer(use_bin_type=True).pack(value)
    except OverflowError as exc:
        raise WireError(f"integer out of the 64-bit range: {exc}") from None
    return packed


def _no_ext(code: int, data: bytes) -> Value:
    raise WireError(f"msgpack ext type {code} is not allowed")


def _check_shape(value: Value) -> None:
    """Depth limit, and str-only map keys (msgpack's strict mode also lets bytes through)."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return
    stack: list[tuple[Value, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise WireError(f"message nested deeper than {MAX_DEPTH}")
        if type(item) is dict:
            if not _STR.issuperset(map(type, item)):
                raise WireError("map key is not a string")
            children = item.values()
        else:
            children = item
        # Only containers go on the stack; a flat one is checked in one pass in C.
        if not _CONTAINERS.isdisjoint(map(type, children)):
            depth += 1
            stack.extend((child, depth) for child in children if type(child) in _CONTAINERS)


def decode(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> Value:
    """Decode one msgpack value, enforcing size, depth, length and type limits."""
    if type(data) is not bytes and not isinstance(data, bytes | bytearray | memoryview):
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
    # The common flat message (a list or map of scalars, str keys) passes in one C pass.
    kind = type(value)
    if kind is list:
        if _CONTAINERS.isdisjoint(map(type, value)):
            return value
    elif kind is dict:
        if _STR.issuperset(map(type, value)) and _CONTAINERS.isdisjoint(map(type, value.values())):
            return value
    else:
        return value
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


# The helpers below try the common case (present, of the exact type, in range) first, and
# leave everything else, with its error messages, to ``field``.


def bytes_field(msg: Mapping[str, Value], name: str, size: int, what: str) -> bytes:
    found: object = msg.get(name)
    if type(found) is bytes and len(found) == size:
        return found
    value: bytes = field(msg, name, bytes, what)
    if len(value) != size:
        raise WireError(f"{what}.{name}: expected {size} bytes, got {len(value)}")
    return value


def int_field(msg: Mapping[str, Value], name: str, lo: int, hi: int, what: str) -> int:
    found: object = msg.get(name)
    if type(found) is int and lo <= found <= hi:
        return found
    value: int = field(msg, name, int, what)
    if not lo <= value <= hi:
        raise WireError(f"{what}.{name}: must be {lo}..{hi}, got {value}")
    return value


def str_field(msg: Mapping[str, Value], name: str, max_len: int, what: str) -> str:
    found: object = msg.get(name)
    if type(found) is str and len(found) <= max_len:
        return found
    value: str = field(msg, name, str, what)
    if len(value) > max_len:
        raise WireError(f"{what}.{name}: longer than {max_len} characters")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)
