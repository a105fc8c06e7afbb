"""The handshake and the frame channel, sans-IO.

Malicious peers are built from ``Spec``, an independent rendering of the key schedule in
docs/protocol.md (Handshake and frames): an honest ``Spec`` peer must be accepted (so the document and the
code agree), and every dishonest variant must be refused.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.p2p.channel import (
    COUNTER_LIMIT,
    MAX_FRAME,
    MAX_PLAINTEXT,
    TAG_SIZE,
    ChannelError,
    FrameOpener,
    FrameSealer,
)
from modelmine.p2p.handshake import Handshake, HandshakeError, Session

NET = hashlib.sha256(b"test genesis").digest()
OTHER_NET = hashlib.sha256(b"another genesis").digest()


def key(seed: int) -> SigningKey:
    return SigningKey(bytes([seed]) * 32)


ALICE, BOB, CAROL = key(1), key(2), key(3)


def node_id(k: SigningKey) -> bytes:
    return bytes(k.verify_key)


def fixed_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic rng, so that the same side can be rebuilt in the same state."""
    return random.Random(seed).randbytes


@dataclass
class Pair:
    initiator: Handshake
    responder: Handshake
    hs1: bytes
    hs2: bytes
    hs3: bytes


def run_pair(a: SigningKey = ALICE, b: SigningKey = BOB, *, pin: bytes | None = None) -> Pair:
    initiator = Handshake.initiator(a, NET, pin, rng=fixed_rng(1))
    responder = Handshake.responder(b, NET, rng=fixed_rng(2))
    hs1 = initiator.start()
    hs2 = responder.receive(hs1)
    assert hs2 is not None
    hs3 = initiator.receive(hs2)
    assert hs3 is not None
    assert responder.receive(hs3) is None
    return Pair(initiator, responder, hs1, hs2, hs3)


VALID = run_pair()


def fresh_initiator() -> Handshake:
    """An initiator that has sent VALID.hs1 and now awaits hs2."""
    initiator = Handshake.initiator(ALICE, NET, rng=fixed_rng(1))
    assert initiator.start() == VALID.hs1
    return initiator


def fresh_responder() -> Handshake:
    """A responder that has answered VALID.hs1 with VALID.hs2 and now awaits hs3."""
    responder = Handshake.responder(BOB, NET, rng=fixed_rng(2))
    assert responder.receive(VALID.hs1) == VALID.hs2
    return responder


def flips(frame: bytes) -> Iterator[bytes]:
    for i in range(len(frame)):
        for mask in (0x01, 0x80):
            yield frame[:i] + bytes([frame[i] ^ mask]) + frame[i + 1 :]


# -- an independent rendering of the documented key schedule --


class Spec:
    H0 = hashlib.sha256(b"modelmine/v1/handshake").digest()

    @staticmethod
    def mix(h: bytes, data: bytes) -> bytes:
        return hashlib.sha256(h + data).digest()

    @staticmethod
    def keys(dh: bytes, info: bytes) -> tuple[bytes, bytes]:
        okm = HKDF(hashes.SHA256(), 64, salt=NET, info=info).derive(dh)
        return okm[:32], okm[32:]

    @staticmethod
    def box(k: bytes, claimed: bytes, signer: SigningKey, role: str, h: bytes) -> bytes:
        signed = wire.encode(["modelmine/v1/handshake/sig", NET, role, h])
        inner = wire.encode({"id": claimed, "sig": signer.sign(signed).signature})
        return ChaCha20Poly1305(k).encrypt(bytes(12), inner, h)

    @classmethod
    def responder_hs2(
        cls, hs1: bytes, *, claimed: bytes, signer: SigningKey, role: str = "responder"
    ) -> bytes:
        e_i = wire.decode(hs1)["e"]
        eph = X25519PrivateKey.from_private_bytes(bytes(range(32)))
        e_r = eph.public_key().public_bytes_raw()
        dh = eph.exchange(X25519PublicKey.from_public_bytes(e_i))
        h = cls.mix(cls.mix(cls.H0, hs1), e_r)
        k_r, _ = cls.keys(dh, b"modelmine/v1/handshake/box-keys" + h)
        box = cls.box(k_r, claimed, signer, role, h)
        return wire.encode({"t": "hs2", "v": 1, "e": e_r, "box": box})

    @classmethod
    def initiator_run(
        cls, responder: Handshake, *, claimed: bytes, signer: SigningKey, role: str = "initiator"
    ) -> tuple[bytes, tuple[bytes, bytes]]:
        """Drive ``responder`` with a spec initiator; returns hs3 and (k_i2r, k_r2i)."""
        eph = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
        e_i = eph.public_key().public_bytes_raw()
        hs1 = wire.encode({"t": "hs1", "v": 1, "net": NET, "e": e_i})
        hs2 = responder.receive(hs1)
        assert hs2 is not None
        e_r = wire.decode(hs2)["e"]
        dh = eph.exchange(X25519PublicKey.from_public_bytes(e_r))
        h = cls.mix(cls.mix(cls.H0, hs1), e_r)
        _, k_i = cls.keys(dh, b"modelmine/v1/handshake/box-keys" + h)
        h = cls.mix(h, hs2)
        hs3 = wire.encode({"t": "hs3", "box": cls.box(k_i, claimed, signer, role, h)})
        h = cls.mix(h, hs3)
        return hs3, cls.keys(dh, b"modelmine/v1/handshake/session-keys" + h)


# -- success --


def test_both_sides_learn_each_other_and_share_keys() -> None:
    i, r = VALID.initiator.result, VALID.responder.result
    assert i.peer_id == node_id(BOB)
    assert r.peer_id == node_id(ALICE)
    assert i.transcript_hash == r.transcript_hash
    assert VALID.initiator.done and VALID.responder.done
    # Fresh sessions, since the module-level VALID sessions are shared.
    pair = run_pair()
    a, b = pair.initiator.result, pair.responder.result
    assert b.receiver.open(a.sender.seal(b"to bob")) == b"to bob"
    assert a.receiver.open(b.sender.seal(b"to alice")) == b"to alice"


def test_directions_use_different_keys() -> None:
    a = run_pair().initiator.result
    frame = a.sender.seal(b"reflected")
    with pytest.raises(ChannelError):
        a.receiver.open(frame)


def test_pinned_peer_is_accepted() -> None:
    assert run_pair(pin=node_id(BOB)).initiator.result.peer_id == node_id(BOB)


def test_fresh_ephemerals_give_unrelated_sessions() -> None:
    def session() -> Session:
        initiator, responder = Handshake.initiator(ALICE, NET), Handshake.responder(BOB, NET)
        hs2 = responder.receive(initiator.start())
        assert hs2 is not None
        hs3 = initiator.receive(hs2)
        assert hs3 is not None
        responder.receive(hs3)
        return initiator.result

    first, second = session(), session()
    assert first.transcript_hash != second.transcript_hash
    with pytest.raises(ChannelError):
        second.receiver.open(first.sender.seal(b"x"))


def test_injected_rng_makes_frames_reproducible() -> None:
    again = run_pair()
    assert (again.hs1, again.hs2, again.hs3) == (VALID.hs1, VALID.hs2, VALID.hs3)
    other = Handshake.initiator(ALICE, NET, rng=fixed_rng(99)).start()
    assert other != VALID.hs1


def test_spec_responder_is_accepted() -> None:
    hs2 = Spec.responder_hs2(VALID.hs1, claimed=node_id(CAROL), signer=CAROL)
    initiator = fresh_initiator()
    assert initiator.receive(hs2) is not None
    assert initiator.result.peer_id == node_id(CAROL)


def test_spec_initiator_is_accepted_with_the_documented_session_keys() -> None:
    responder = Handshake.responder(BOB, NET)
    hs3, (k_i2r, k_r2i) = Spec.initiator_run(responder, claimed=node_id(CAROL), signer=CAROL)
    assert responder.receive(hs3) is None
    session = responder.result
    assert session.peer_id == node_id(CAROL)
    assert session.receiver.open(FrameSealer(k_i2r).seal(b"hello")) == b"hello"
    assert FrameOpener(k_r2i).open(session.sender.seal(b"hi")) == b"hi"


# -- refusals --


def test_wrong_network_is_refused() -> None:
    initiator = Handshake.initiator(ALICE, OTHER_NET)
    responder = Handshake.responder(BOB, NET)
    with pytest.raises(HandshakeError, match="wrong network id"):
        responder.receive(initiator.start())


def test_pin_mismatch_names_both_ids() -> None:
    initiator = Handshake.initiator(ALICE, NET, node_id(CAROL))
    responder = Handshake.responder(BOB, NET)
    hs2 = responder.receive(initiator.start())
    assert hs2 is not None
    with pytest.raises(HandshakeError) as info:
        initiator.receive(hs2)
    assert node_id(BOB).hex()[:8] in str(info.value)
    assert node_id(CAROL).hex()[:8] in str(info.value)


def test_initiator_refuses_its_own_id() -> None:
    initiator = Handshake.initiator(ALICE, NET)
    responder = Handshake.responder(ALICE, NET)
    hs2 = responder.receive(initiator.start())
    assert hs2 is not None
    with pytest.raises(HandshakeError, match="own id"):
        initiator.receive(hs2)


def test_responder_refuses_its_own_id() -> None:
    responder = Handshake.responder(BOB, NET)
    hs3, _ = Spec.initiator_run(responder, claimed=node_id(BOB), signer=BOB)
    with pytest.raises(HandshakeError, match="own id"):
        responder.receive(hs3)


def test_responder_signature_by_another_key_is_refused() -> None:
    hs2 = Spec.responder_hs2(VALID.hs1, claimed=node_id(BOB), signer=CAROL)
    with pytest.raises(
        HandshakeError, match="bad handshake signature from " + node_id(BOB).hex()[:8]
    ):
        fresh_initiator().receive(hs2)


def test_initiator_signature_by_another_key_is_refused() -> None:
    responder = Handshake.responder(BOB, NET)
    hs3, _ = Spec.initiator_run(responder, claimed=node_id(ALICE), signer=CAROL)
    with pytest.raises(HandshakeError, match="bad handshake signature"):
        responder.receive(hs3)


@pytest.mark.parametrize("role", ["initiator", "someone"])
def test_signature_for_another_role_is_refused(role: str) -> None:
    hs2 = Spec.responder_hs2(VALID.hs1, claimed=node_id(CAROL), signer=CAROL, role=role)
    with pytest.raises(HandshakeError, match="bad handshake signature"):
        fresh_initiator().receive(hs2)


def test_every_flipped_bit_of_hs2_is_refused() -> None:
    for tampered in flips(VALID.hs2):
        with pytest.raises(HandshakeError):
            fresh_initiator().receive(tampered)


def test_every_flipped_bit_of_hs3_is_refused() -> None:
    for tampered in flips(VALID.hs3):
        with pytest.raises(HandshakeError):
            fresh_responder().receive(tampered)


def test_no_flipped_bit_of_hs1_yields_a_session() -> None:
    for tampered in flips(VALID.hs1):
        initiator = fresh_initiator()
        with pytest.raises(HandshakeError):
            hs2 = Handshake.responder(BOB, NET, rng=fixed_rng(2)).receive(tampered)
            assert hs2 is not None
            initiator.receive(hs2)


@pytest.mark.parametrize("which", ["hs1", "hs2", "hs3"])
def test_truncated_frames_are_refused(which: str) -> None:
    frame = getattr(VALID, which)
    for end in range(len(frame)):
        side = {
            "hs1": lambda: Handshake.responder(BOB, NET),
            "hs2": fresh_initiator,
            "hs3": fresh_responder,
        }[which]()
        with pytest.raises(HandshakeError):
            side.receive(frame[:end])


def _hs1(**changes: object) -> bytes:
    msg = wire.decode(VALID.hs1)
    msg.update(changes)
    return wire.encode({k: v for k, v in msg.items() if v is not None})


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "empty message"),
        (b"\xc1", "malformed msgpack"),
        (wire.encode([1, 2, 3]), "expected a map"),
        (wire.encode("hs1"), "expected a map"),
        (_hs1(extra=1), "expected fields"),
        (_hs1(e=None), "expected fields"),
        (_hs1(e=b"short"), "expected 32 bytes"),
        (_hs1(e="x" * 32), "expected bytes"),
        (_hs1(net=list(NET)), "expected bytes"),
        (_hs1(t="hs2"), "expected hs1"),
        (_hs1(t=1), "expected str"),
        (_hs1(v=2), "unsupported handshake version 2"),
        (_hs1(v=2, e=None, e2=b"new layout"), "unsupported handshake version 2"),
        (_hs1(v=True), "got bool"),
        (_hs1(e=bytes(32)), "small order"),
        (VALID.hs1 + b"\x00", "ExtraData"),
        (wire.encode({"t": "hs1", "pad": bytes(600)}), "exceeds the limit of 512"),
    ],
)
def test_malformed_hs1_is_refused_with_a_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(HandshakeError, match=reason):
        Handshake.responder(BOB, NET).receive(frame)


def test_frames_must_be_bytes() -> None:
    with pytest.raises(HandshakeError, match="must be bytes"):
        Handshake.responder(BOB, NET).receive("hs1")  # type: ignore[arg-type]


def test_echoed_ephemeral_is_refused() -> None:
    msg = wire.decode(VALID.hs2)
    msg["e"] = wire.decode(VALID.hs1)["e"]
    with pytest.raises(HandshakeError, match="echoed"):
        fresh_initiator().receive(wire.encode(msg))


def test_frames_out_of_order_are_refused() -> None:
    with pytest.raises(HandshakeError, match="unexpected frame"):
        Handshake.initiator(ALICE, NET).receive(VALID.hs2)
    with pytest.raises(HandshakeError, match="expected hs1"):
        Handshake.responder(BOB, NET).receive(VALID.hs3)
    with pytest.raises(HandshakeError, match="expected hs3"):
        fresh_responder().receive(VALID.hs1)
    with pytest.raises(HandshakeError, match="start"):
        Handshake.responder(BOB, NET).start()
    done = run_pair()
    with pytest.raises(HandshakeError, match="unexpected frame"):
        done.responder.receive(VALID.hs3)


def test_a_failed_handshake_stays_failed() -> None:
    initiator = fresh_initiator()
    with pytest.raises(HandshakeError):
        initiator.receive(b"garbage")
    with pytest.raises(HandshakeError, match="unexpected frame"):
        initiator.receive(VALID.hs2)
    assert not initiator.done
    with pytest.raises(HandshakeError, match="not complete"):
        _ = initiator.result


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(HandshakeError, match="network id"):
        Handshake.initiator(ALICE, b"short")
    with pytest.raises(HandshakeError, match="expected peer"):
        Handshake.initiator(ALICE, NET, b"short")


# -- channel --

KEY = bytes(range(32))


def test_frame_overhead_is_the_tag_and_the_nonce_is_the_documented_counter() -> None:
    sealer = FrameSealer(KEY)
    frames = [sealer.seal(b"m%d" % n) for n in range(3)]
    assert all(len(f) == 2 + TAG_SIZE for f in frames)
    nonce = bytes(4) + (2).to_bytes(8, "little")
    assert ChaCha20Poly1305(KEY).decrypt(nonce, frames[2], None) == b"m2"


def test_frames_open_in_order_and_count() -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    for n in range(5):
        assert opener.open(sealer.seal(b"%d" % n)) == b"%d" % n
    assert sealer.counter == opener.counter == 5
    assert opener.open(sealer.seal(b"")) == b""


def test_replayed_frame_fails() -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    frame = sealer.seal(b"pay 1")
    opener.open(frame)
    with pytest.raises(ChannelError, match="frame 1 failed to open"):
        opener.open(frame)


def test_reordered_or_dropped_frame_fails_and_poisons_the_channel() -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    first, second = sealer.seal(b"a"), sealer.seal(b"b")
    with pytest.raises(ChannelError, match="frame 0 failed"):
        opener.open(second)
    with pytest.raises(ChannelError, match="already failed"):
        opener.open(first)


def test_every_tampered_byte_fails() -> None:
    frame = FrameSealer(KEY).seal(b"some payload")
    for tampered in flips(frame):
        with pytest.raises(ChannelError):
            FrameOpener(KEY).open(tampered)
    with pytest.raises(ChannelError):
        FrameOpener(bytes(32)).open(frame)


def test_counter_exhaustion_is_an_error() -> None:
    sealer = FrameSealer(KEY, counter=COUNTER_LIMIT - 1)
    opener = FrameOpener(KEY, counter=COUNTER_LIMIT - 1)
    assert opener.open(sealer.seal(b"last")) == b"last"
    with pytest.raises(ChannelError, match="send counter exhausted"):
        sealer.seal(b"one too many")
    with pytest.raises(ChannelError, match="receive counter exhausted"):
        opener.open(bytes(TAG_SIZE))
    with pytest.raises(ChannelError, match="counter must be"):
        FrameSealer(KEY, counter=COUNTER_LIMIT + 1)
    with pytest.raises(ChannelError, match="counter must be"):
        FrameOpener(KEY, counter=-1)


def test_size_limits() -> None:
    with pytest.raises(ChannelError, match="exceeds the limit"):
        FrameSealer(KEY).seal(bytes(MAX_PLAINTEXT + 1))
    big = FrameSealer(KEY).seal(bytes(MAX_PLAINTEXT))
    assert len(big) == MAX_FRAME
    assert len(FrameOpener(KEY).open(big)) == MAX_PLAINTEXT
    with pytest.raises(ChannelError, match="exceeds the limit"):
        FrameOpener(KEY).open(bytes(MAX_FRAME + 1))
    with pytest.raises(ChannelError, match="shorter than the tag"):
        FrameOpener(KEY).open(bytes(TAG_SIZE - 1))
    with pytest.raises(ChannelError, match="32 bytes"):
        FrameSealer(b"short")
