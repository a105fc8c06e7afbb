"""Fuzzing: whatever bytes arrive, the codec raises only WireError and the handshake only
HandshakeError, in every state that reads a frame from the peer.

Four properties feed 12,000 frames, each to the codec and to the three handshake states that
read a peer's frame: 3,000 random byte strings, 3,000 mutations of valid hs1/hs2/hs3, 2,000
handshake-shaped maps with arbitrary field values, and 2,000 arbitrary msgpack values, each
both as encoded and mutated.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import random
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.p2p.handshake import Handshake, HandshakeError

NET = hashlib.sha256(b"fuzz genesis").digest()
ALICE, BOB = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def initiator_awaiting_hs2() -> Handshake:
    initiator = Handshake.initiator(ALICE, NET, rng=rng(1))
    initiator.start()
    return initiator


def responder_awaiting_hs3() -> tuple[Handshake, bytes]:
    responder = Handshake.responder(BOB, NET, rng=rng(2))
    hs2 = responder.receive(HS1)
    assert hs2 is not None
    return responder, hs2


def valid_frames() -> tuple[bytes, bytes, bytes]:
    hs1 = Handshake.initiator(ALICE, NET, rng=rng(1)).start()
    responder, hs2 = responder_awaiting_hs3()
    hs3 = initiator_awaiting_hs2().receive(hs2)
    assert hs3 is not None
    responder.receive(hs3)
    assert responder.done
    return hs1, hs2, hs3


HS1 = Handshake.initiator(ALICE, NET, rng=rng(1)).start()
VALID = HS1, HS2, HS3 = valid_frames()


# The receiving states, rebuilt for each frame by a shallow copy: a handshake step replaces
# its fields and never mutates the objects it shares with the template.
TEMPLATES = (
    Handshake.responder(BOB, NET, rng=rng(2)),
    initiator_awaiting_hs2(),
    responder_awaiting_hs3()[0],
)


def check(frame: bytes) -> None:
    """The property: only the documented error types come out."""
    with contextlib.suppress(wire.WireError):
        wire.decode(frame)
    for template in TEMPLATES:
        with contextlib.suppress(HandshakeError):
            copy.copy(template).receive(frame)


def test_copied_states_behave_like_fresh_ones() -> None:
    responder, initiator, awaiting_hs3 = (copy.copy(t) for t in TEMPLATES)
    assert responder.receive(HS1) == HS2
    assert initiator.receive(HS2) == HS3
    assert awaiting_hs3.receive(HS3) is None
    assert awaiting_hs3.done
    assert not TEMPLATES[2].done


# -- strategies --


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC4, 0xDC, 0xFF]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(VALID))
            start = draw(st.integers(0, len(other)))
            data[at:] = other[start:]
    return bytes(data)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.binary(max_size=80),
    st.sampled_from(["hs1", "hs2", "hs3", "id", "sig"]),
    st.sampled_from([NET, bytes(32), HS1[-32:]]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=5,
)
handshake_maps = st.dictionaries(
    st.sampled_from(["t", "v", "net", "e", "box", "id", "sig", "x"]),
    st.one_of(scalars, st.binary(min_size=32, max_size=32), st.binary(max_size=150)),
    max_size=6,
)


# -- properties --


@fuzz(3_000)
@given(st.binary(max_size=600))
def test_random_bytes(frame: bytes) -> None:
    check(frame)


@fuzz(3_000)
@given(mutated(st.sampled_from(VALID)))
def test_mutated_handshake_frames(frame: bytes) -> None:
    check(frame)


@fuzz(2_000)
@given(handshake_maps)
def test_handshake_shaped_maps(msg: dict[str, object]) -> None:
    check(wire.encode(msg))


@st.composite
def encoded_and_mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    frame = wire.encode(draw(values))
    return frame, draw(mutated(st.just(frame)))


@fuzz(2_000)
@given(encoded_and_mutated())
def test_msgpack_values_and_their_mutations(frames: tuple[bytes, bytes]) -> None:
    for frame in frames:
        check(frame)
