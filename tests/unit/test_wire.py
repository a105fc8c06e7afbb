import collections
import enum
import math
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.signing import (
    SignatureError,
    Signed,
    check,
    parse,
    parse_verified,
    sign,
    statement_bytes,
    verify,
)


def test_canonical_encoding_ignores_key_order() -> None:
    assert wire.encode({"b": 1, "a": [1, {"z": 2, "y": b"x"}]}) == wire.encode(
        {"a": [1, {"y": b"x", "z": 2}], "b": 1}
    )


def test_round_trip_of_every_supported_type() -> None:
    value = {"n": None, "t": True, "i": -(2**40), "f": 1.5, "s": "é", "b": b"\x00", "l": [1, 2]}
    assert wire.decode(wire.encode(value)) == value


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xc1", "malformed"),
        (wire.encode({"a": "long text"})[:-2], "malformed"),
        (wire.encode([1]) + b"\x01", "malformed"),
        (msgpack.packb(msgpack.ExtType(1, b"x")), "ext"),
        (msgpack.packb({1: 2}), "malformed"),
    ],
)
def test_bad_bytes_raise_wire_error(data: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(data)


def test_size_and_depth_limits() -> None:
    with pytest.raises(wire.WireError, match="exceeds the limit"):
        wire.decode(b"\x90" * 100, max_size=10)
    deep: list[object] = []
    for _ in range(40):
        deep = [deep]
    raw = msgpack.packb(deep)
    with pytest.raises(wire.WireError, match="deeper"):
        wire.decode(raw)


def test_unencodable_values_are_refused() -> None:
    with pytest.raises(wire.WireError):
        wire.encode({"x": object()})
    with pytest.raises(wire.WireError, match="not a string"):
        wire.encode({1: 2})


def test_field_helpers_name_the_field() -> None:
    msg = {"n": True, "s": "x" * 10, "b": b"12"}
    with pytest.raises(wire.WireError, match=r"m\.n: expected int, got bool"):
        wire.int_field(msg, "n", 0, 10, "m")
    with pytest.raises(wire.WireError, match="missing field 'q'"):
        wire.field(msg, "q", int, "m")
    with pytest.raises(wire.WireError, match="longer than 5"):
        wire.str_field(msg, "s", 5, "m")
    with pytest.raises(wire.WireError, match="expected 32 bytes"):
        wire.bytes_field(msg, "b", 32, "m")


def test_signatures_bind_domain_chain_and_exact_bytes() -> None:
    key = SigningKey.generate()
    statement = sign(key, "heartbeat", "chain-a", {"x": 1, "f": math.pi})
    again = parse_verified(statement.raw, "chain-a", domains=frozenset({"heartbeat"}))
    assert again.raw == statement.raw and again.message_id == statement.message_id
    assert again.payload() == {"x": 1, "f": math.pi}
    with pytest.raises(SignatureError):
        verify(parse(statement.raw), "chain-b")
    with pytest.raises(wire.WireError, match="unexpected statement domain"):
        parse_verified(statement.raw, "chain-a", domains=frozenset({"vote"}))
    # Same signature presented under another domain: refused.
    moved = wire.encode(["vote", statement.signer, statement.body, statement.signature])
    with pytest.raises(SignatureError):
        verify(parse(moved), "chain-a")
    tampered = wire.encode(
        ["heartbeat", statement.signer, statement.body + b"\x00", statement.signature]
    )
    with pytest.raises(SignatureError):
        verify(parse(tampered), "chain-a")


def test_bytes_map_keys_and_huge_integers_are_wire_errors() -> None:
    with pytest.raises(wire.WireError, match="map key is not a string"):
        wire.decode(msgpack.packb({b"k": 1}, use_bin_type=True))
    with pytest.raises(wire.WireError, match="64-bit"):
        wire.encode({"n": 2**70})


# ---- the codec against its reference: the plain implementation it was optimised from ----


def _reference_canonical(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str or kind is bytes or kind is int or kind is float or value is None:
        return value
    if depth > wire.MAX_DEPTH:
        raise wire.WireError(f"value nested deeper than {wire.MAX_DEPTH}")
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for key in sorted(value):
            if type(key) is not str:
                raise wire.WireError(f"map key {key!r} is not a string")
            out[key] = _reference_canonical(value[key], depth + 1)
        return out
    if kind is list or kind is tuple:
        return [_reference_canonical(item, depth + 1) for item in value]
    if kind is bool:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, bool | int | float | str | bytes):
        return value
    raise wire.WireError(f"cannot encode {type(value).__name__}")


def _reference_encode(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(_reference_canonical(value, 0), use_bin_type=True)
    except OverflowError as exc:
        raise wire.WireError(f"integer out of the 64-bit range: {exc}") from None
    return packed


def _reference_check_shape(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict:
            if depth >= wire.MAX_DEPTH:
                raise wire.WireError(f"message nested deeper than {wire.MAX_DEPTH}")
            for key, child in item.items():
                if type(key) is not str:
                    raise wire.WireError("map key is not a string")
                if type(child) is dict or type(child) is list:
                    stack.append((child, depth + 1))
        elif kind is list:
            if depth >= wire.MAX_DEPTH:
                raise wire.WireError(f"message nested deeper than {wire.MAX_DEPTH}")
            stack.extend((child, depth + 1) for child in item if type(child) in (dict, list))


def _outcome(f: Callable[[Any], Any], value: Any) -> tuple[str, Any]:
    try:
        return "ok", f(value)
    except wire.WireError as exc:
        return "error", str(exc)


class _Color(enum.StrEnum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**65)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=6)
    | st.binary(max_size=4).map(bytearray)
    | st.sampled_from([_Color.RED, _Level.HIGH])
)
_KEYS = st.text(max_size=3)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(_KEYS, children, max_size=5)
        | st.dictionaries(_KEYS, children, max_size=5).map(lambda d: dict(sorted(d.items())))
        | st.dictionaries(_KEYS, children, max_size=3).map(collections.OrderedDict)
    )


_VALUES = st.recursive(_SCALARS, _containers, max_leaves=30)


@st.composite
def _deep_values(draw: st.DrawFn) -> Any:
    """A value wrapped in 13..18 containers: around the depth limit, with scalars of every
    kind (bool too, which counts towards the limit) beside it at each level."""
    value = draw(_VALUES)
    for kind in draw(
        st.lists(st.sampled_from(["list", "tuple", "dict"]), min_size=13, max_size=18)
    ):
        siblings = draw(st.lists(_SCALARS, max_size=2))
        if kind == "dict":
            value = {"": value, **{f"k{i}": s for i, s in enumerate(siblings)}}
        else:
            value = [value, *siblings]
            value = tuple(value) if kind == "tuple" else value
    return value


def _nested(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


@settings(max_examples=600, deadline=None)
@given(st.one_of(_VALUES, _deep_values()))
@example(_nested(True, 17))
@example(_nested(True, 16))
@example(_nested(_Color.RED, 17))
@example(_nested({"a": 1}, 16))
@example(_nested({"a": 1}, 17))
def test_encode_gives_the_reference_bytes_and_refusals(value: Any) -> None:
    assert _outcome(wire.encode, value) == _outcome(_reference_encode, value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _SCALARS | st.lists(_SCALARS, max_size=3), max_size=8))
def test_encode_canonical_form_is_encode_for_sorted_maps(value: dict[str, Any]) -> None:
    ordered = dict(sorted(value.items()))
    assert _outcome(wire.encode_canonical_form, ordered) == _outcome(_reference_encode, value)


def test_non_string_keys_are_refused_whatever_the_other_keys() -> None:
    for value in ({1: 2}, {"a": 1, 2: 3}, {"a": {b"k": 1}}, collections.OrderedDict({3: 1})):
        with pytest.raises(wire.WireError, match="not a string"):
            wire.encode(value)


_RAW_KEYS = st.text(max_size=3) | st.binary(max_size=2)


def _raw_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(_RAW_KEYS, children, max_size=4)


@st.composite
def _packed(draw: st.DrawFn) -> bytes:
    """msgpack of anything the decoder may meet: bytes keys, nesting near the limit."""
    raw_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=4)
    value = draw(st.recursive(raw_scalars | st.binary(max_size=4), _raw_containers, max_leaves=20))
    for wrap in draw(st.lists(st.sampled_from(["list", "map"]), max_size=18)):
        value = [value] if wrap == "list" else {draw(st.text(max_size=2)): value}
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _reference_decode(data: bytes) -> Any:
    value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    _reference_check_shape(value)
    return value


@settings(max_examples=600, deadline=None)
@given(_packed())
@example(msgpack.packb(_nested(1, 16)))
@example(msgpack.packb(_nested(1, 17)))
@example(msgpack.packb(_nested({b"k": 1}, 15), use_bin_type=True))
def test_decode_accepts_and_refuses_as_the_reference(data: bytes) -> None:
    def repacked(f: Callable[[bytes], Any]) -> Callable[[bytes], bytes]:
        return lambda d: bytes(msgpack.packb(f(d), use_bin_type=True))

    assert _outcome(repacked(wire.decode), data) == _outcome(repacked(_reference_decode), data)


def test_statement_bytes_is_the_canonical_statement() -> None:
    parts = ("vote", b"\x01" * 32, b"body", b"\x02" * 64)
    assert statement_bytes(*parts) == wire.encode(list(parts))
    odd = ("vote", bytearray(b"\x01" * 32), b"body", b"\x02" * 64)
    assert statement_bytes(*odd) == wire.encode(list(parts))  # type: ignore[arg-type]


def test_malformed_keys_and_signatures_are_signature_errors() -> None:
    key = SigningKey.generate()
    statement = sign(key, "heartbeat", "chain-a", {"x": 1})
    short_key = Signed(statement.domain, statement.signer[:31], statement.body, b"", b"")
    with pytest.raises(SignatureError):
        verify(short_key, "chain-a")
    short_sig = Signed(statement.domain, statement.signer, statement.body, b"\x00" * 63, b"")
    with pytest.raises(SignatureError):
        verify(short_sig, "chain-a")
    with pytest.raises(SignatureError):
        check("heartbeat", statement.signer, statement.body, bytes(64), "chain-a")
    check("heartbeat", statement.signer, statement.body, statement.signature, "chain-a")
