"""A keyed hash standing in for Ed25519 signatures, for the simulator only.

The simulator tests protocol logic, not cryptography, and a thousand nodes checking each
other's statements with Ed25519 would spend most of a run in libsodium (about 55 us a check).
Here a statement's "signature" is BLAKE2b-512 keyed with a secret of the signer over the same
signing input (domain tag, chain id, body), so it is still bound to signer, domain, network
and bytes, and a node that does not hold the secret cannot forge it. The verifier looks the
secret up: only the simulator knows every node's secret. Statements keep their exact format
(64-byte signature), so every parser and size check runs unchanged.

Only overlay statements (peer records, heartbeats, membership notices, gossip the simulator
signs) use this. Consensus votes, blocks and ledger records keep real Ed25519, because the
Tendermint core and the ledger verify them with it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from modelmine import wire
from modelmine.signing import SignatureError, Signed, signing_input


class KeyedSigner:
    """Signs and verifies for every simulated node of one chain."""

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        self._secrets: dict[bytes, bytes] = {}
        self.verified = 0

    def enroll(self, node_id: bytes, secret: bytes) -> None:
        self._secrets[node_id] = secret

    def sign(self, node_id: bytes, domain: str, payload: dict[str, Any]) -> Signed:
        body = wire.encode(payload)
        signature = self._mac(self._secrets[node_id], domain, body)
        raw = wire.encode([domain, node_id, body, signature])
        return Signed(domain, node_id, body, signature, raw)

    def signer_for(self, node_id: bytes) -> Any:
        """A ``Signer`` (domain, payload -> Signed) for one node, as the overlay takes it."""

        def sign(domain: str, payload: dict[str, Any]) -> Signed:
            return self.sign(node_id, domain, payload)

        return sign

    def verify(self, statement: Signed) -> None:
        self.verified += 1
        secret = self._secrets.get(statement.signer)
        if secret is None or self._mac(secret, statement.domain, statement.body) != (
            statement.signature
        ):
            raise SignatureError(
                f"bad signature on {statement.domain} statement from {statement.signer.hex()[:8]}"
            )

    def _mac(self, secret: bytes, domain: str, body: bytes) -> bytes:
        message = signing_input(domain, self.chain_id, body)
        return hashlib.blake2b(message, key=secret, digest_size=64).digest()
