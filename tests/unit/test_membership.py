"""Membership timing, with time passed in explicitly (no clock, no sleeps)."""

from nacl.signing import SigningKey

from modelmine.p2p.membership import Heartbeat, Membership, Status


def _hb(node: bytes, seq: int, status: str = "ONLINE") -> Heartbeat:
    return Heartbeat(node, seq, 0.0, "n", "", "0", status, {"slots": 1, "busy": 0}, {})


NODE = bytes(SigningKey.generate().verify_key)


def test_suspect_after_three_missed_intervals_offline_after_six() -> None:
    m = Membership(b"\x00" * 32, interval=5.0)
    m.observe(_hb(NODE, 1), now=100.0)
    assert m.tick(114.9) == []
    change = m.tick(115.0)
    assert [(c.old, c.new) for c in change] == [(Status.ONLINE, Status.SUSPECT)]
    assert m.tick(129.9) == []
    assert [c.new for c in m.tick(130.0)] == [Status.OFFLINE]


def test_newer_heartbeat_refutes_suspicion_and_old_ones_change_nothing() -> None:
    m = Membership(b"\x00" * 32, interval=5.0)
    m.observe(_hb(NODE, 10), now=0.0)
    m.tick(16.0)
    assert m.get(NODE) is not None and m.get(NODE).status is Status.SUSPECT  # type: ignore[union-attr]
    assert m.observe(_hb(NODE, 9), now=17.0) is None
    change = m.observe(_hb(NODE, 11), now=17.0)
    assert change is not None and change.new is Status.ONLINE


def test_closed_connection_speeds_suspicion() -> None:
    m = Membership(b"\x00" * 32, interval=5.0)
    m.observe(_hb(NODE, 1), now=0.0)
    change = m.connection_lost(NODE, now=1.0)
    assert change is not None and change.new is Status.SUSPECT
    assert [c.new for c in m.tick(16.0)] == [Status.OFFLINE]  # 3 intervals after the loss


def test_restarted_node_comes_back_online_under_the_same_id() -> None:
    m = Membership(b"\x00" * 32, interval=5.0)
    m.observe(_hb(NODE, 1_000), now=0.0)
    m.tick(40.0)
    assert m.get(NODE).status is Status.OFFLINE  # type: ignore[union-attr]
    change = m.observe(_hb(NODE, 2_000, "BUSY"), now=41.0)
    assert change is not None and change.new is Status.BUSY
    assert len(m) == 1
