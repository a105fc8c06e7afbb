"""Signed statements: the one way anything in ModelMine is signed and verified.

A statement is ``[domain, signer, body, signature]`` encoded with the canonical codec, where
``body`` is the canonical msgpack of the payload. The signature covers the domain tag
``modelmine/v1/<domain>``, the chain id and the body, so a signature made for one purpose or
one network is useless for any other. Relays forward the exact bytes they received (``raw``);
the message id is SHA-256 of those bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from modelmine import wire

PROTOCOL_TAG: Final = "modelmine/v1/"
MAX_DOMAIN_LEN: Final = 64
KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64


class SignatureError(wire.WireError):
    """A statement whose signature does not verify."""


def signing_input(domain: str, chain_id: str, body: bytes) -> bytes:
    # A list of two strings and bytes is canonical as it stands: pack it directly, since
    # this runs for every signature made or checked.
    packed: bytes = msgpack.Packer(use_bin_type=True).pack([PROTOCOL_TAG + domain, chain_id, body])
    return packed


def statement_bytes(domain: str, signer: bytes, body: bytes, signature: bytes) -> bytes:
    """The canonical bytes of a statement: ``wire.encode([domain, signer, body, signature])``."""
    if (
        type(domain) is str
        and type(signer) is bytes
        and type(body) is bytes
        and type(signature) is bytes
    ):
        # A str and three bytes are canonical as they stand: pack them directly.
        packed: bytes = msgpack.Packer(use_bin_type=True).pack([domain, signer, body, signature])
        return packed
    return wire.encode([domain, signer, body, signature])


@dataclass(frozen=True)
class Signed:
    domain: str
    signer: bytes
    body: bytes
    signature: bytes
    raw: bytes = field(repr=False)

    @property
    def message_id(self) -> bytes:
        return wire.sha256(self.raw)

    def payload(self) -> dict[str, Any]:
        return wire.expect_map(wire.decode(self.body), f"{self.domain} payload")


def sign(key: SigningKey, domain: str, chain_id: str, payload: dict[str, Any]) -> Signed:
    body = wire.encode(payload)
    signature = key.sign(signing_input(domain, chain_id, body)).signature
    signer = bytes(key.verify_key)
    raw = statement_bytes(domain, signer, body, signature)
    return Signed(domain, signer, body, signature, raw)


def parse(raw: bytes, *, max_size: int = wire.MAX_MESSAGE_SIZE) -> Signed:
    """Split ``raw`` into a statement without checking the signature."""
    domain, signer, body, signature = split(raw, max_size=max_size)
    return Signed(domain, signer, body, signature, bytes(raw))


def split(raw: bytes, *, max_size: int = wire.MAX_MESSAGE_SIZE) -> tuple[str, bytes, bytes, bytes]:
    """``(domain, signer, body, signature)`` of ``raw``, checked as :func:`parse` checks them."""
    value = wire.decode(raw, max_size=max_size)
    if not isinstance(value, list) or len(value) != 4:
        raise wire.WireError("signed statement: expected a list of 4 items")
    domain, signer, body, signature = value
    if not isinstance(domain, str) or not 0 < len(domain) <= MAX_DOMAIN_LEN:
        raise wire.WireError("signed statement: bad domain")
    if not isinstance(signer, bytes) or len(signer) != KEY_SIZE:
        raise wire.WireError("signed statement: signer must be 32 bytes")
    if not isinstance(body, bytes):
        raise wire.WireError("signed statement: body must be bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise wire.WireError("signed statement: signature must be 64 bytes")
    return domain, signer, body, signature


def verify(statement: Signed, chain_id: str) -> None:
    check(statement.domain, statement.signer, statement.body, statement.signature, chain_id)


def check(domain: str, signer: bytes, body: bytes, signature: bytes, chain_id: str) -> None:
    """:func:`verify` of the statement with these parts; raises SignatureError."""
    try:
        # What ``VerifyKey(signer).verify(message, signature)`` does, without a key object
        # per signature: the same libsodium call, with the sizes checked here first.
        if not (
            isinstance(signer, bytes)
            and len(signer) == KEY_SIZE
            and isinstance(signature, bytes)
            and len(signature) == SIGNATURE_SIZE
        ):
            raise ValueError("bad key or signature size")
        crypto_sign_open(signature + signing_input(domain, chain_id, body), signer)
    except (BadSignatureError, ValueError) as exc:
        who = signer.hex()[:8] if isinstance(signer, bytes) else "?"
        raise SignatureError(f"bad signature on {domain} statement from {who}") from exc


def parse_verified(raw: bytes, chain_id: str, *, domains: frozenset[str] | None = None) -> Signed:
    """Parse and verify; ``domains`` restricts which statement kinds are acceptable."""
    statement = parse(raw)
    if domains is not None and statement.domain not in domains:
        raise wire.WireError(f"unexpected statement domain {statement.domain!r}")
    verify(statement, chain_id)
    return statement
