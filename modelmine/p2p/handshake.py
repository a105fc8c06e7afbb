"""Sans-IO mutual authentication of two nodes (SIGMA-I / Noise-XX-like), three frames.

::

    hs1  I -> R  {"t": "hs1", "v": 1, "net": network_id, "e": e_i}
    hs2  R -> I  {"t": "hs2", "v": 1, "e": e_r, "box": AEAD(k_r, {"id": R, "sig": sig_R})}
    hs3  I -> R  {"t": "hs3", "box": AEAD(k_i, {"id": I, "sig": sig_I})}

``e_i``/``e_r`` are fresh X25519 keys, so the session keys stay secret even if an identity key
leaks later (forward secrecy). Each side signs the running transcript hash with its Ed25519
identity key, bound to the network id and its role, and sends identity and signature inside an
AEAD box keyed from the ephemeral DH secret, which hides identities from passive observers and
ties each identity to this very key exchange. The exact layouts and key schedule are in
``docs/protocol.md`` (section "Handshake and frames"); they are the contract, this module is one implementation of it.

The classes hold no sockets and no clock: the caller moves frames and enforces the deadline.
Every failure is a :class:`HandshakeError` and leaves the handshake failed for good.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from modelmine import wire
from modelmine.p2p.channel import KEY_SIZE, FrameOpener, FrameSealer

VERSION: Final = 1
NETWORK_ID_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
MAX_HANDSHAKE_FRAME: Final = 512

TAG: Final = "modelmine/v1/handshake"
TRANSCRIPT_START: Final = TAG.encode()
BOX_KEYS_INFO: Final = (TAG + "/box-keys").encode()
SESSION_KEYS_INFO: Final = (TAG + "/session-keys").encode()
SIGNATURE_TAG: Final = TAG + "/sig"
# Each box key encrypts exactly one message, so a fixed nonce is safe.
BOX_NONCE: Final = bytes(12)

Rng = Callable[[int], bytes]


class HandshakeError(Exception):
    """The handshake failed; the text says why. The connection must be closed."""


def short_id(node_id: bytes) -> str:
    """The short form of a node id: its first 8 hex digits."""
    return node_id.hex()[:8]


@dataclass(frozen=True)
class Session:
    """The outcome of a handshake: who the peer is and the keys of both directions."""

    peer_id: bytes
    sender: FrameSealer = field(repr=False)
    receiver: FrameOpener = field(repr=False)
    transcript_hash: bytes


class _State(enum.Enum):
    START = "start"  # initiator before start()
    AWAIT_HS1 = "await hs1"  # responder
    AWAIT_HS2 = "await hs2"  # initiator after start()
    AWAIT_HS3 = "await hs3"  # responder after hs2
    DONE = "done"
    FAILED = "failed"


def _mix(transcript: bytes, data: bytes) -> bytes:
    return hashlib.sha256(transcript + data).digest()


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_SIZE, salt=salt, info=info).derive(secret)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


def signature_input(network_id: bytes, role: str, transcript: bytes) -> bytes:
    """The bytes a side signs: domain tag, network id, its role and the transcript hash."""
    return wire.encode([SIGNATURE_TAG, network_id, role, transcript])


def _decode(frame: bytes, kind: str, keys: frozenset[str]) -> dict[str, wire.Value]:
    msg = wire.expect_map(wire.decode(frame, max_size=MAX_HANDSHAKE_FRAME), kind)
    kind_seen = wire.str_field(msg, "t", 8, kind)
    if kind_seen != kind:
        raise wire.WireError(f"expected {kind}, got {kind_seen!r}")
    if "v" in keys and "v" in msg:
        # Before the field check, so that a newer peer hears about versions, not fields.
        version = wire.field(msg, "v", int, kind)
        if version != VERSION:
            raise HandshakeError(f"unsupported handshake version {version} (we speak {VERSION})")
    if msg.keys() != keys:
        raise wire.WireError(
            f"{kind}: expected fields {sorted(keys)}, got {sorted(map(repr, msg))}"
        )
    return msg


_HS1_FIELDS: Final = frozenset({"t", "v", "net", "e"})
_HS2_FIELDS: Final = frozenset({"t", "v", "e", "box"})
_HS3_FIELDS: Final = frozenset({"t", "box"})
_BOX_FIELDS: Final = frozenset({"id", "sig"})


class Handshake:
    """One side of one handshake. Build it with :meth:`initiator` or :meth:`responder`."""

    def __init__(
        self,
        identity: SigningKey,
        network_id: bytes,
        *,
        initiator: bool,
        expected_peer: bytes | None,
        rng: Rng,
    ) -> None:
        if not isinstance(network_id, bytes) or len(network_id) != NETWORK_ID_SIZE:
            raise HandshakeError(f"network id must be {NETWORK_ID_SIZE} bytes")
        if expected_peer is not None and (
            not isinstance(expected_peer, bytes) or len(expected_peer) != PUBLIC_KEY_SIZE
        ):
            raise HandshakeError(f"expected peer id must be {PUBLIC_KEY_SIZE} bytes")
        self._identity = identity
        self._own_id = bytes(identity.verify_key)
        self._network_id = network_id
        self._initiator = initiator
        self._expected_peer = expected_peer
        secret = rng(32)
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise HandshakeError("rng must return the requested number of bytes")
        self._ephemeral = X25519PrivateKey.from_private_bytes(secret)
        self._ephemeral_pub = self._ephemeral.public_key().public_bytes_raw()
        self._transcript = hashlib.sha256(TRANSCRIPT_START).digest()
        self._state = _State.START if initiator else _State.AWAIT_HS1
        self._dh = b""
        self._box_key_i = b""
        self._result: Session | None = None

    @classmethod
    def initiator(
        cls,
        identity: SigningKey,
        network_id: bytes,
        expected_peer: bytes | None = None,
        *,
        rng: Rng = os.urandom,
    ) -> Handshake:
        """The dialing side; ``expected_peer`` pins the responder's identity."""
        return cls(identity, network_id, initiator=True, expected_peer=expected_peer, rng=rng)

    @classmethod
    def responder(
        cls, identity: SigningKey, network_id: bytes, *, rng: Rng = os.urandom
    ) -> Handshake:
        """The accepting side."""
        return cls(identity, network_id, initiator=False, expected_peer=None, rng=rng)

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def result(self) -> Session:
        """The established session; only once :attr:`done`."""
        if self._result is None:
            raise HandshakeError("handshake is not complete")
        return self._result

    def start(self) -> bytes:
        """The initiator's hs1 frame."""
        if self._state is not _State.START:
            raise HandshakeError(f"start() is only for a fresh initiator (state: {self._state})")
        hs1 = wire.encode(
            {"t": "hs1", "v": VERSION, "net": self._network_id, "e": self._ephemeral_pub}
        )
        self._transcript = _mix(self._transcript, hs1)
        self._state = _State.AWAIT_HS2
        return hs1

    def receive(self, frame: bytes) -> bytes | None:
        """Process the peer's next frame; returns the frame to send back, if any."""
        state = self._state
        self._state = _State.FAILED  # until this step succeeds
        if not isinstance(frame, bytes):
            raise HandshakeError(f"handshake frame must be bytes, got {type(frame).__name__}")
        try:
            if state is _State.AWAIT_HS1:
                reply: bytes | None = self._on_hs1(frame)
                self._state = _State.AWAIT_HS3
            elif state is _State.AWAIT_HS2:
                reply = self._on_hs2(frame)
                self._state = _State.DONE
            elif state is _State.AWAIT_HS3:
                self._on_hs3(frame)
                reply = None
                self._state = _State.DONE
            else:
                raise HandshakeError(f"unexpected frame in state {state.value!r}")
        except wire.WireError as exc:
            raise HandshakeError(f"malformed handshake frame: {exc}") from None
        return reply

    # -- steps --

    def _on_hs1(self, frame: bytes) -> bytes:
        msg = _decode(frame, "hs1", _HS1_FIELDS)
        network_id = wire.bytes_field(msg, "net", NETWORK_ID_SIZE, "hs1")
        if network_id != self._network_id:
            raise HandshakeError(
                f"wrong network id {short_id(network_id)} (ours is {short_id(self._network_id)})"
            )
        peer_ephemeral = wire.bytes_field(msg, "e", PUBLIC_KEY_SIZE, "hs1")
        self._transcript = _mix(self._transcript, frame)
        self._dh = self._exchange(peer_ephemeral)
        self._transcript = _mix(self._transcript, self._ephemeral_pub)
        box_key_r, self._box_key_i = _hkdf(
            self._dh, self._network_id, BOX_KEYS_INFO + self._transcript
        )
        box = self._seal_identity(box_key_r, "responder")
        hs2 = wire.encode({"t": "hs2", "v": VERSION, "e": self._ephemeral_pub, "box": box})
        self._transcript = _mix(self._transcript, hs2)
        return hs2

    def _on_hs2(self, frame: bytes) -> bytes:
        msg = _decode(frame, "hs2", _HS2_FIELDS)
        peer_ephemeral = wire.bytes_field(msg, "e", PUBLIC_KEY_SIZE, "hs2")
        box = wire.field(msg, "box", bytes, "hs2")
        if peer_ephemeral == self._ephemeral_pub:
            raise HandshakeError("responder echoed our ephemeral key")
        self._dh = self._exchange(peer_ephemeral)
        self._transcript = _mix(self._transcript, peer_ephemeral)
        box_key_r, box_key_i = _hkdf(self._dh, self._network_id, BOX_KEYS_INFO + self._transcript)
        peer_id = self._open_identity(box_key_r, box, "responder")
        if self._expected_peer is not None and peer_id != self._expected_peer:
            raise HandshakeError(
                f"peer is {short_id(peer_id)}, but we dialed {short_id(self._expected_peer)}"
            )
        self._transcript = _mix(self._transcript, frame)
        hs3 = wire.encode({"t": "hs3", "box": self._seal_identity(box_key_i, "initiator")})
        self._transcript = _mix(self._transcript, hs3)
        self._finish(peer_id)
        return hs3

    def _on_hs3(self, frame: bytes) -> None:
        msg = _decode(frame, "hs3", _HS3_FIELDS)
        box = wire.field(msg, "box", bytes, "hs3")
        peer_id = self._open_identity(self._box_key_i, box, "initiator")
        self._transcript = _mix(self._transcript, frame)
        self._finish(peer_id)

    # -- pieces --

    def _exchange(self, peer_ephemeral: bytes) -> bytes:
        try:
            return self._ephemeral.exchange(X25519PublicKey.from_public_bytes(peer_ephemeral))
        except ValueError:
            # OpenSSL refuses small-order points (all-zero shared secret).
            raise HandshakeError("peer ephemeral key is invalid (small order)") from None

    def _seal_identity(self, key: bytes, role: str) -> bytes:
        signed = signature_input(self._network_id, role, self._transcript)
        signature = self._identity.sign(signed).signature
        inner = wire.encode({"id": self._own_id, "sig": signature})
        return ChaCha20Poly1305(key).encrypt(BOX_NONCE, inner, self._transcript)

    def _open_identity(self, key: bytes, box: bytes, role: str) -> bytes:
        try:
            inner = ChaCha20Poly1305(key).decrypt(BOX_NONCE, box, self._transcript)
        except InvalidTag:
            raise HandshakeError(f"{role} identity box failed to open (tampered?)") from None
        msg = wire.expect_map(wire.decode(inner, max_size=MAX_HANDSHAKE_FRAME), "identity box")
        if msg.keys() != _BOX_FIELDS:
            raise wire.WireError(f"identity box: expected fields {sorted(_BOX_FIELDS)}")
        peer_id = wire.bytes_field(msg, "id", PUBLIC_KEY_SIZE, "identity box")
        signature = wire.bytes_field(msg, "sig", SIGNATURE_SIZE, "identity box")
        if peer_id == self._own_id:
            raise HandshakeError(f"peer presented our own id {short_id(peer_id)} (self-connection)")
        signed = signature_input(self._network_id, role, self._transcript)
        try:
            VerifyKey(peer_id).verify(signed, signature)
        except (CryptoError, ValueError, TypeError):
            raise HandshakeError(f"bad handshake signature from {short_id(peer_id)}") from None
        return peer_id

    def _finish(self, peer_id: bytes) -> None:
        key_i2r, key_r2i = _hkdf(self._dh, self._network_id, SESSION_KEYS_INFO + self._transcript)
        send_key, receive_key = (key_i2r, key_r2i) if self._initiator else (key_r2i, key_i2r)
        self._result = Session(
            peer_id=peer_id,
            sender=FrameSealer(send_key),
            receiver=FrameOpener(receive_key),
            transcript_hash=self._transcript,
        )
        # Nothing secret outlives the handshake except inside the session's AEAD objects.
        self._dh = self._box_key_i = b""
