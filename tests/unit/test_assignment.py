import collections
import os

from modelmine.jobs.assignment import eligible, preferred, rank, score


def test_everyone_computes_the_same_ranking_in_any_order() -> None:
    job, nodes = os.urandom(32), [os.urandom(32) for _ in range(10)]
    assert rank(job, nodes) == rank(job, list(reversed(nodes)))
    assert rank(job, nodes)[0] == max(nodes, key=lambda n: score(job, n))


def test_removing_a_node_only_moves_its_own_jobs() -> None:
    nodes = [os.urandom(32) for _ in range(8)]
    jobs = [os.urandom(32) for _ in range(400)]
    before = {j: rank(j, nodes)[0] for j in jobs}
    gone = nodes[3]
    after = {j: rank(j, [n for n in nodes if n != gone])[0] for j in jobs}
    moved = [j for j in jobs if before[j] != after[j]]
    assert all(before[j] == gone for j in moved)
    # and the next in rank takes over
    assert all(after[j] == rank(j, nodes)[1] for j in moved)


def test_load_spreads_evenly() -> None:
    nodes = [os.urandom(32) for _ in range(4)]
    counts = collections.Counter(rank(os.urandom(32), nodes)[0] for _ in range(2000))
    assert min(counts.values()) > 400


def test_conflicting_claims_settle_the_same_way_everywhere() -> None:
    job, a, b = os.urandom(32), os.urandom(32), os.urandom(32)
    assert preferred(job, a, b) == preferred(job, b, a) == rank(job, [a, b])[0]


def test_only_online_nodes_with_free_slots_are_eligible() -> None:
    members = [
        (b"a", "ONLINE", 1, 0),
        (b"b", "ONLINE", 1, 1),
        (b"c", "MAINTENANCE", 2, 0),
        (b"d", "BUSY", 1, 1),
        (b"e", "SUSPECT", 1, 0),
        (b"f", "OFFLINE", 1, 0),
        (b"g", "ONLINE", 2, 1),
    ]
    assert eligible(members) == [b"a", b"g"]
