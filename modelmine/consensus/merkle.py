"""The records root of a block: a SHA-256 Merkle tree exactly as in RFC 6962 section 2.1.

Leaves and inner nodes are domain-separated (``0x00 || record`` and ``0x01 || left || right``),
so no leaf can be passed off as an inner node. The root of no records is SHA-256 of the empty
string. An odd node at the end of a level is carried up unchanged, never paired with itself:
this is RFC 6962's split at the largest power of two, and unlike Bitcoin's duplication rule it
gives two different record lists two different roots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(record: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + record).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def merkle_root(records: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle tree hash of ``records`` in order."""
    if not records:
        return EMPTY_ROOT
    # leaf_hash and node_hash, inlined: a block's records are hashed on every check of it.
    sha256 = hashlib.sha256
    level = [sha256(LEAF_PREFIX + record).digest() for record in records]
    while len(level) > 1:
        paired = [
            sha256(NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]
