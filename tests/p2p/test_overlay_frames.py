"""The overlay's new frames one at a time, against a single core: what is answered, what is
bounded, and what costs the sender its score."""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from modelmine import wire
from modelmine.p2p.membership import NOTICE_DOMAIN, SUSPECTED, Heartbeat, Notice
from modelmine.p2p.overlay import (
    HEARTBEAT_TOPIC,
    Action,
    Deliver,
    Disconnect,
    Overlay,
    OverlayConfig,
    Send,
    Verdict,
)
from modelmine.signing import Signed, sign

CHAIN = "frames-test"
ME = SigningKey(b"\x01" * 32)
PEER = SigningKey(b"\x02" * 32)
PEER_ID = bytes(PEER.verify_key)
OTHER = SigningKey(b"\x03" * 32)


def _accept(statement: Signed, now: float) -> Verdict:
    return Verdict.ACCEPT


def _overlay(**config: Any) -> Overlay:
    overlay = Overlay(ME, CHAIN, OverlayConfig(**config))
    overlay.register_topic("news", _accept)
    overlay.register_topic("progress/", _accept, followed=True)
    overlay.on_link_up(PEER_ID, initiator=True, now=0.0)
    return overlay


def _frame(**fields: Any) -> bytes:
    return wire.encode(fields)


def _sent(actions: list[Action]) -> list[tuple[bytes, dict[str, Any]]]:
    return [(a.peer, wire.decode(a.frame)) for a in actions if isinstance(a, Send)]


def _heartbeat(key: SigningKey, seq: int) -> Signed:
    hb = Heartbeat(
        bytes(key.verify_key), seq, 0.0, "n", "", "0", "ONLINE", {"slots": 1, "busy": 0}, {}
    )
    return sign(key, "heartbeat", CHAIN, hb.to_payload())


def test_ihave_then_iwant_after_the_graft_timeout_then_the_statement() -> None:
    overlay = _overlay()
    news = sign(OTHER, "news", CHAIN, {"x": 1})
    assert overlay.on_frame(PEER_ID, _frame(t="ihave", ids=[news.message_id]), 1.0) == []
    early = _sent(overlay.tick(1.0 + overlay.config.graft_timeout - 0.01))
    assert [f for _, f in early if f["t"] == "iwant"] == []  # a push may still come
    asked = _sent(overlay.tick(1.0 + overlay.config.graft_timeout))
    assert [(p, f["t"], f["ids"]) for p, f in asked if f["t"] == "iwant"] == [
        (PEER_ID, "iwant", [news.message_id])
    ]
    got = overlay.on_frame(PEER_ID, _frame(t="gossip", topic="news", data=news.raw), 2.0)
    assert [a.topic for a in got if isinstance(a, Deliver)] == ["news"]


def test_iwant_is_answered_only_with_statements_we_hold() -> None:
    overlay = _overlay()
    news = sign(ME, "news", CHAIN, {"x": 2})
    overlay.publish("news", news, 1.0)
    unknown = b"\x07" * 32
    answer = _sent(
        overlay.on_frame(PEER_ID, _frame(t="iwant", ids=[unknown, news.message_id], g=True), 1.1)
    )
    assert [f["data"] for _, f in answer] == [news.raw]


def test_a_second_push_of_one_statement_prunes_that_link() -> None:
    overlay = _overlay()
    news = sign(OTHER, "news", CHAIN, {"x": 3})
    frame = _frame(t="gossip", topic="news", data=news.raw)
    overlay.on_frame(PEER_ID, frame, 1.0)
    assert [f["t"] for _, f in _sent(overlay.on_frame(PEER_ID, frame, 1.1))] == ["prune"]


def test_malformed_announcements_cost_score() -> None:
    overlay = _overlay()
    bad = [
        _frame(t="ihave", ids="nope"),
        _frame(t="ihave", ids=[b"short"]),
        _frame(t="iwant", ids=[b"\x00" * 32] * 65),
    ]
    actions: list[Action] = []
    for frame in bad:
        actions += overlay.on_frame(PEER_ID, frame, 1.0)
    assert any(isinstance(a, Disconnect) and a.banned_until for a in actions)


def test_announcement_spam_is_bounded_and_penalized() -> None:
    overlay = _overlay(max_missing_per_peer=100, frames_per_second=1e6, frame_burst=1e6)
    actions: list[Action] = []
    for i in range(20):
        ids = [i.to_bytes(2, "big") + j.to_bytes(30, "big") for j in range(64)]
        actions += overlay.on_frame(PEER_ID, _frame(t="ihave", ids=ids), 1.0)
    assert overlay.statistics().links == 0  # banned: it announced far more than it delivers
    assert any(isinstance(a, Disconnect) for a in actions)


def test_frame_floods_get_a_node_banned_even_without_a_link() -> None:
    overlay = _overlay()
    stranger = bytes(OTHER.verify_key)
    ping = _frame(t="ping", n=1)
    for _ in range(2000):
        overlay.on_datagram(stranger, ping, 1.0)
    assert overlay.is_banned(stranger, 1.0)
    assert overlay.on_datagram(stranger, ping, 2.0) == []


def test_link_frames_without_a_link_are_dropped_silently() -> None:
    overlay = _overlay()
    stranger = bytes(OTHER.verify_key)
    news = sign(OTHER, "news", CHAIN, {"x": 4})
    assert overlay.on_datagram(stranger, _frame(t="gossip", topic="news", data=news.raw), 1.0) == []
    assert not overlay.is_banned(stranger, 1.0)


def test_ping_is_acked_and_ping_req_relays_are_bounded() -> None:
    overlay = _overlay()
    for key in (PEER, OTHER):
        overlay.publish(HEARTBEAT_TOPIC, _heartbeat(key, 1), 0.5)
    [(to, ack)] = _sent(overlay.on_frame(PEER_ID, _frame(t="ping", n=9), 1.0))
    assert to == PEER_ID and ack["t"] == "ack" and ack["n"] == 9
    target = bytes(OTHER.verify_key)
    relayed = 0
    for n in range(200):
        relayed += len(_sent(overlay.on_frame(PEER_ID, _frame(t="preq", n=n, target=target), 1.0)))
    assert relayed == overlay.members.config.max_relays


def test_too_many_piggybacked_statements_is_a_bad_frame() -> None:
    overlay = _overlay()
    frame = _frame(t="ping", n=1, pb=[_heartbeat(OTHER, i).raw for i in range(17)])
    overlay.on_frame(PEER_ID, frame, 1.0)
    overlay.on_frame(PEER_ID, frame, 1.0)
    assert overlay.statistics().links == 0


def test_a_forged_notice_costs_the_relayer_its_link() -> None:
    overlay = _overlay()
    overlay.publish(HEARTBEAT_TOPIC, _heartbeat(OTHER, 5), 0.5)
    notice = sign(
        PEER, NOTICE_DOMAIN, CHAIN, Notice(bytes(OTHER.verify_key), 5, SUSPECTED, b"").to_payload()
    )
    forged = wire.encode([notice.domain, notice.signer, notice.body, bytes(64)])
    actions = overlay.on_frame(PEER_ID, _frame(t="ping", n=1, pb=[forged]), 1.0)
    assert any(isinstance(a, Disconnect) for a in actions)
    member = overlay.members.get(bytes(OTHER.verify_key))
    assert member is not None and member.state == 0  # the forged suspicion changed nothing


def test_digest_requests_are_answered_at_most_every_few_seconds() -> None:
    overlay = _overlay()
    overlay.publish(HEARTBEAT_TOPIC, _heartbeat(ME, 1), 0.5)
    answers = 0
    for i in range(10):
        sent = _sent(overlay.on_frame(PEER_ID, _frame(t="sync", h=i, n=1), 1.0 + 0.1 * i))
        answers += sum(1 for _, f in sent if f["t"] == "syncd")
    assert answers == 1


def test_follows_are_bounded_and_only_for_followed_topics() -> None:
    overlay = _overlay(max_followers=2)
    overlay.on_frame(PEER_ID, _frame(t="sub", topic="news"), 1.0)  # a broadcast topic
    actions = overlay.on_frame(PEER_ID, _frame(t="sub", topic="news"), 1.1)
    assert any(isinstance(a, Disconnect) for a in actions)
    overlay = _overlay(max_followers=2)
    for key in (PEER, OTHER, SigningKey(b"\x04" * 32)):
        overlay.on_datagram(bytes(key.verify_key), _frame(t="sub", topic="progress/ab"), 1.0)
    assert len(overlay.followers("progress/ab", 1.0)) == 2
    assert overlay.followers("progress/ab", 1.0 + overlay.config.follow_ttl) == []  # lapsed


def test_followed_topics_go_to_followers_only_and_a_stray_gets_an_unsub() -> None:
    publisher = _overlay()
    publisher.on_datagram(PEER_ID, _frame(t="sub", topic="progress/ab"), 1.0)
    report = sign(ME, "progress", CHAIN, {"step": 1})
    sent = _sent(publisher.publish("progress/ab", report, 1.5))
    assert [(p, f["t"]) for p, f in sent] == [(PEER_ID, "msg")]
    follower = Overlay(PEER, CHAIN)
    follower.register_topic("progress/", _accept, followed=True)
    stray = _frame(t="msg", topic="progress/ab", data=report.raw)
    answer = follower.on_datagram(bytes(ME.verify_key), stray, 2.0)
    assert [f["t"] for _, f in _sent(answer)] == ["unsub"]
    follower.follow("progress/ab", bytes(ME.verify_key), 2.0)
    got = follower.on_datagram(bytes(ME.verify_key), stray, 2.1)
    assert [a.topic for a in got if isinstance(a, Deliver)] == ["progress/ab"]


def test_followed_topics_never_travel_as_gossip() -> None:
    overlay = _overlay()
    report = sign(OTHER, "progress", CHAIN, {"step": 1})
    actions = overlay.on_frame(
        PEER_ID, _frame(t="gossip", topic="progress/ab", data=report.raw), 1.0
    )
    assert not any(isinstance(a, Deliver) for a in actions)
