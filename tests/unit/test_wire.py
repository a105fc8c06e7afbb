import math

import msgpack
import pytest
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.signing import SignatureError, parse, parse_verified, sign, verify


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
