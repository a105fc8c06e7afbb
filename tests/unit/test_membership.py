"""Membership timing and the SWIM failure detector, with time passed in explicitly (no clock,
no sleeps, no network: frames are read from the outbox and answered by hand)."""

from __future__ import annotations

import random
from typing import Any

from nacl.signing import SigningKey

from modelmine import wire
from modelmine.p2p.membership import (
    DEAD,
    NOTICE_DOMAIN,
    SUSPECTED,
    Heartbeat,
    Membership,
    Notice,
    Status,
    SwimConfig,
)
from modelmine.signing import Signed, sign

CHAIN = "membership-test"
SELF = SigningKey(b"\x01" * 32)
SELF_ID = bytes(SELF.verify_key)
OTHERS = [SigningKey(bytes([i]) * 32) for i in range(2, 8)]
IDS = [bytes(k.verify_key) for k in OTHERS]
NODE = IDS[0]


def _hb(node: bytes, seq: int, status: str = "ONLINE") -> Heartbeat:
    return Heartbeat(node, seq, 0.0, "n", "", "0", status, {"slots": 1, "busy": 0}, {})


def _signer(key: SigningKey) -> Any:
    return lambda domain, payload: sign(key, domain, CHAIN, payload)


def _notice(by: SigningKey, node: bytes, seq: int, state: int) -> tuple[Notice, bytes]:
    signed: Signed = sign(by, NOTICE_DOMAIN, CHAIN, Notice(node, seq, state, b"").to_payload())
    return Notice.from_statement(signed), signed.raw


def _table(n: int = 6, **config: Any) -> Membership:
    """Us plus ``n`` members, as after a join."""
    m = Membership(
        SELF_ID, interval=5.0, config=SwimConfig(**config), rng=random.Random(1), sign=_signer(SELF)
    )
    m.observe(_hb(SELF_ID, 1), now=0.0, raw=b"self")
    for node in IDS[:n]:
        m.observe(_hb(node, 10), now=0.0, raw=b"hb-" + node)
    m.take_frames()
    return m


def _frames(m: Membership) -> list[tuple[bytes, dict[str, Any]]]:
    return [(peer, wire.decode(frame)) for peer, frame in m.take_frames()]


# ---- the heartbeat-age backstop (what small networks had before SWIM) ----


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


def test_restarted_node_comes_back_online_under_the_same_id() -> None:
    m = Membership(b"\x00" * 32, interval=5.0)
    m.observe(_hb(NODE, 1_000), now=0.0)
    m.tick(40.0)
    assert m.get(NODE).status is Status.OFFLINE  # type: ignore[union-attr]
    change = m.observe(_hb(NODE, 2_000, "BUSY"), now=41.0)
    assert change is not None and change.new is Status.BUSY
    assert len(m) == 1


def test_heartbeats_slow_down_as_the_network_grows_and_come_at_once_on_a_change() -> None:
    m = _table(6, metrics_budget=4)
    assert m.heartbeat_every() == 5.0 * 7 / 4  # 7 members, 4 heartbeats per interval in all
    m.mark_heartbeat(100.0, "ONLINE", {"slots": 1, "busy": 0})
    assert not m.heartbeat_due(101.0, "ONLINE", {"slots": 1, "busy": 0})
    assert m.heartbeat_due(101.0, "BUSY", {"slots": 1, "busy": 1})  # a change goes at once
    assert m.heartbeat_due(100.0 + 5.0 * 7 / 4, "ONLINE", {"slots": 1, "busy": 0})


# ---- SWIM ----


def test_a_probe_answered_by_ack_changes_nothing() -> None:
    m = _table()
    m.tick(1.0)
    [(target, ping)] = _frames(m)
    assert ping["t"] == "ping"
    m.on_ack(target, ping["n"], 1.05)
    m.tick(1.6)
    assert _frames(m) == []  # no ping-req: the ack came in time
    assert all(member.status is Status.ONLINE for member in m)


def test_silence_leads_to_ping_req_then_a_second_probe_then_suspicion() -> None:
    m = _table(indirect_checks=3)
    m.tick(1.0)
    [(target, _ping)] = _frames(m)
    m.tick(1.5)  # probe timeout: ask three others, and ping once more ourselves
    asked = _frames(m)
    kinds = sorted(frame["t"] for _, frame in asked)
    assert kinds == ["ping", "preq", "preq", "preq"]
    assert all(f["target"] == target for _, f in asked if f["t"] == "preq")
    for helper, frame in asked:
        if frame["t"] == "preq":  # the helpers could not reach it either, and say so
            m.on_nack(helper, frame["n"], 1.9)
    m.tick(2.0)  # end of the period without any ack: probe it again first, no suspicion yet
    [(again, second)] = _frames(m)
    assert again == target and second["t"] == "ping"
    assert m.get(target).status is Status.ONLINE  # type: ignore[union-attr]
    assert m.awareness == 0  # the nacks show our own link to the others is fine
    m.tick(2.5)
    for helper, frame in _frames(m):
        if frame["t"] == "preq":
            m.on_nack(helper, frame["n"], 2.9)
    changes = m.tick(3.0)
    assert [(c.node_id, c.new) for c in changes] == [(target, Status.SUSPECT)]
    member = m.get(target)
    assert member is not None and member.state == SUSPECTED and member.notice


def test_missing_nacks_slow_our_own_probing() -> None:
    m = _table(indirect_checks=3)
    m.tick(1.0)
    m.tick(1.5)  # nobody answers at all: we may be the one in trouble (Lifeguard)
    m.tick(2.0)
    assert m.awareness == 3
    _frames(m)
    assert m.next_deadline() == 2.0 + 0.5 * 4  # probe timeout scaled by awareness + 1


def test_an_indirect_ack_saves_the_member_and_a_helper_relays() -> None:
    m = _table()
    m.tick(1.0)
    [(target, ping)] = _frames(m)
    m.tick(1.5)
    helper = next(peer for peer, f in _frames(m) if f["t"] == "preq")
    m.on_ack(helper, ping["n"], 1.7)  # the helper reached it for us
    m.tick(2.0)
    assert m.get(target).status is Status.ONLINE  # type: ignore[union-attr]
    # As a helper ourselves: a ping-req becomes our own ping, and its ack goes back.
    other = _table()
    other.on_ping_req(IDS[1], 77, IDS[2], 5.0)
    [(to, relay)] = _frames(other)
    assert to == IDS[2] and relay["t"] == "ping"
    other.on_ack(IDS[2], relay["n"], 5.1)
    [(back, ack)] = _frames(other)
    assert back == IDS[1] and ack == {"t": "ack", "n": 77}
    # ... and a nack if the target stays silent.
    other.on_ping_req(IDS[1], 78, IDS[3], 6.0)
    _frames(other)
    other.tick(6.6)
    assert ("nack", 78) in [(f["t"], f["n"]) for _, f in _frames(other) if f["t"] == "nack"]


def test_lifeguard_suspicion_timeout_shrinks_with_independent_confirmations() -> None:
    m = _table(6, suspicion_mult=4, suspicion_max_mult=6)
    low = 4 * 1.0  # suspicion_mult x max(1, log10(7)) x probe period
    notice, raw = _notice(OTHERS[1], NODE, 10, SUSPECTED)
    [change] = m.on_notice(notice, raw, now=1.0)
    assert change.new is Status.SUSPECT
    member = m.get(NODE)
    assert member is not None and member.deadline == 1.0 + 6 * low  # alone: the maximum
    notice2, raw2 = _notice(OTHERS[2], NODE, 10, SUSPECTED)
    m.on_notice(notice2, raw2, now=2.0)
    notice3, raw3 = _notice(OTHERS[3], NODE, 10, SUSPECTED)
    m.on_notice(notice3, raw3, now=3.0)
    assert member.deadline == 1.0 + low  # two confirmations: the minimum
    assert NODE not in [c.node_id for c in m.tick(1.0 + low - 0.01)]
    assert (NODE, Status.OFFLINE) in [(c.node_id, c.new) for c in m.tick(1.0 + low)]
    assert member.state == DEAD and member.notice  # we signed and spread the death


def test_notices_count_only_for_the_incarnation_they_name_and_a_newer_one_refutes() -> None:
    m = _table()
    stale, raw = _notice(OTHERS[1], NODE, 9, DEAD)
    assert m.on_notice(stale, raw, now=1.0) == []
    ahead, raw = _notice(OTHERS[1], NODE, 11, DEAD)  # an incarnation nobody has seen
    assert m.on_notice(ahead, raw, now=1.0) == []
    dead, raw = _notice(OTHERS[1], NODE, 10, DEAD)
    assert [c.new for c in m.on_notice(dead, raw, now=1.0)] == [Status.OFFLINE]
    change = m.observe(_hb(NODE, 11), now=2.0, raw=b"newer")
    assert change is not None and change.new is Status.ONLINE


def test_a_node_refutes_what_others_say_about_it() -> None:
    m = _table()
    m.mark_heartbeat(0.0, "ONLINE", {"slots": 1, "busy": 0})
    assert not m.heartbeat_due(1.0, "ONLINE", {"slots": 1, "busy": 0})
    notice, raw = _notice(OTHERS[1], SELF_ID, 1, SUSPECTED)
    m.on_notice(notice, raw, now=1.0)
    assert m.heartbeat_due(1.0, "ONLINE", {"slots": 1, "busy": 0})
    assert m.awareness == 1  # being doubted makes us more careful, too
    m.observe(_hb(SELF_ID, 2), now=1.2, raw=b"self2")
    assert not m.heartbeat_due(1.3, "ONLINE", {"slots": 1, "busy": 0})


def test_a_ping_to_a_suspect_carries_the_suspicion_first() -> None:
    m = _table(1)
    notice, raw = _notice(OTHERS[1], NODE, 10, SUSPECTED)
    m.on_notice(notice, raw, now=0.5)
    m.tick(1.0)
    [(target, ping)] = _frames(m)
    assert target == NODE and ping["pb"][0] == raw  # Lifeguard's buddy system


def test_changes_ride_on_probe_messages_a_bounded_number_of_times() -> None:
    m = _table(6, retransmit_mult=2)
    m.observe(_hb(IDS[5], 11), now=0.5, raw=b"fresh")
    limit = m.retransmit_limit()
    assert limit == 2  # 2 x ceil(log10(7 + 1))
    carried = 0
    for i in range(6):
        m.on_ping(IDS[0], i, 1.0 + i)
        [(_, ack)] = _frames(m)
        carried += b"fresh" in ack.get("pb", [])
    assert carried == limit


def test_a_closed_link_gets_that_member_probed_next() -> None:
    m = _table()
    m.tick(1.0)
    [(target, ping)] = _frames(m)
    m.on_ack(target, ping["n"], 1.1)
    m.connection_lost(IDS[4], now=1.2)
    m.tick(2.0)
    pings = [peer for peer, f in _frames(m) if f["t"] == "ping"]
    assert pings == [IDS[4]]


def test_push_pull_digests_and_what_each_side_sends() -> None:
    a, b = _table(3), _table(3)
    assert a.digest == b.digest
    b.observe(_hb(IDS[4], 10), now=0.0, raw=b"only-b")  # b knows one more member
    a.start_sync(SELF_ID)
    [(_, offer)] = _frames(a)
    b.on_sync(SELF_ID, offer["h"], now=1.0)
    [(_, digest)] = _frames(b)
    assert digest["t"] == "syncd"
    a.on_sync_digest(SELF_ID, digest["e"], now=1.0)
    sent = {f["t"]: f for _, f in _frames(a)}
    assert sent["syncw"]["ids"] == [IDS[4]]  # a asks for what it lacks
    b.on_sync_want(SELF_ID, sent["syncw"]["ids"], now=1.1)
    [(_, push)] = _frames(b)
    assert push["pb"] == [b"only-b"]
    b.on_sync(SELF_ID, b.digest, now=20.0)
    assert _frames(b) == []  # equal digests: nothing to say
