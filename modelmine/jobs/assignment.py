"""Who trains a job: rendezvous (highest-random-weight) hashing over eligible nodes.

Every node computes the same ranking from the job id and the node ids alone, so no
coordinator is needed: the top eligible node claims the job, the next one takes over if it
stops, and two conflicting claims are settled by comparing the claimers' scores, which any node
can recompute without knowing anyone's view of the membership.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

ELIGIBLE = frozenset({"ONLINE"})


def score(job_id: bytes, node_id: bytes) -> bytes:
    """The node's weight for this job; larger wins. Comparable as bytes."""
    return hashlib.sha256(b"modelmine/v1/assign" + job_id + node_id).digest()


def rank(job_id: bytes, nodes: Iterable[bytes]) -> list[bytes]:
    """Node ids from first choice to last."""
    return sorted(set(nodes), key=lambda n: score(job_id, n), reverse=True)


def preferred(job_id: bytes, a: bytes, b: bytes) -> bytes:
    """Of two claimers, the one the ranking prefers."""
    return a if score(job_id, a) >= score(job_id, b) else b


def eligible(members: Iterable[tuple[bytes, str, int, int]]) -> list[bytes]:
    """Node ids that may take a job now: (node_id, status, slots, busy) with a free slot.
    MAINTENANCE, BUSY, SUSPECT and OFFLINE nodes take no jobs."""
    return [node for node, status, slots, busy in members if status in ELIGIBLE and busy < slots]
