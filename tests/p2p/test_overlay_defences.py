"""The overlay's defences against hostile peers, one frame at a time against a single core:
bounded answers to iwant, the waste budget, prunes that are not repeated for every copy,
announcements that leave with their link, bounded frame and ban tables."""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from modelmine import wire
from modelmine.p2p.overlay import (
    MAX_IDS,
    Action,
    Disconnect,
    Overlay,
    OverlayConfig,
    Send,
    Verdict,
)
from modelmine.signing import Signed, sign

CHAIN = "defences-test"
ME = SigningKey(b"\x01" * 32)
PEER = SigningKey(b"\x02" * 32)
PEER_ID = bytes(PEER.verify_key)
OTHER = SigningKey(b"\x03" * 32)
OTHER_ID = bytes(OTHER.verify_key)
FAST = {"frames_per_second": 1e6, "frame_burst": 1e6}  # frame floods are tested elsewhere


def _accept(statement: Signed, now: float) -> Verdict:
    return Verdict.ACCEPT


def _ignore(statement: Signed, now: float) -> Verdict:
    return Verdict.IGNORE


def _overlay(**config: Any) -> Overlay:
    overlay = Overlay(ME, CHAIN, OverlayConfig(**{**FAST, **config}))
    overlay.register_topic("news", _accept)
    overlay.register_topic("stale", _ignore)
    overlay.on_link_up(PEER_ID, initiator=True, now=0.0)
    return overlay


def _frame(**fields: Any) -> bytes:
    return wire.encode(fields)


def _sent(actions: list[Action], kind: str) -> list[dict[str, Any]]:
    frames = [wire.decode(a.frame) for a in actions if isinstance(a, Send)]
    return [f for f in frames if f["t"] == kind]


def _banned(actions: list[Action]) -> bool:
    return any(isinstance(a, Disconnect) and a.banned_until for a in actions)


def test_a_repeated_iwant_is_answered_only_within_the_waste_budget() -> None:
    overlay = _overlay()
    news = sign(ME, "news", CHAIN, {"x": 1})
    overlay.publish("news", news, 0.5)
    cfg = overlay.config
    answers, actions = 0, []
    for _ in range(1000):
        actions = overlay.on_frame(PEER_ID, _frame(t="iwant", ids=[news.message_id] * 8), 1.0)
        answers += len(_sent(actions, "gossip"))  # each id once per frame
        if _banned(actions):
            break
    assert _banned(actions)
    # Each answer after the first is waste, as are the 7 repeats inside each frame: the budget
    # and the penalties up to the ban (waste_penalty per item) allow this many frames.
    assert answers <= (cfg.waste_burst - cfg.ban_score / cfg.waste_penalty) / 8 + 2
    assert overlay.statistics().iwant_answers == answers


def test_iwant_for_statements_not_held_is_waste_and_gets_banned() -> None:
    overlay = _overlay()
    actions: list[Action] = []
    frames = 0
    while not _banned(actions) and frames < 100:
        ids = [frames.to_bytes(2, "big") + bytes([n]) * 30 for n in range(MAX_IDS)]
        actions = overlay.on_frame(PEER_ID, _frame(t="iwant", ids=ids), 1.0)
        assert _sent(actions, "gossip") == []
        frames += 1
    assert frames == int(overlay.config.waste_burst // MAX_IDS) + 1
    assert overlay.statistics().wasted == frames * MAX_IDS


def test_answers_to_iwant_are_rate_limited_per_link() -> None:
    overlay = _overlay(iwant_answer_burst=10, iwant_answers_per_second=10, waste_burst=1e6)
    held = [sign(ME, "news", CHAIN, {"x": n}) for n in range(40)]
    for statement in held:
        overlay.publish("news", statement, 0.5)
    ids = [s.message_id for s in held]
    first = overlay.on_frame(PEER_ID, _frame(t="iwant", ids=ids), 1.0)
    assert len(_sent(first, "gossip")) == 10
    later = overlay.on_frame(PEER_ID, _frame(t="iwant", ids=ids[10:]), 2.0)
    assert len(_sent(later, "gossip")) == 10  # refilled at 10 per second


def test_waste_within_the_budget_is_free_and_the_budget_refills() -> None:
    overlay = _overlay(waste_burst=10, waste_per_second=10)
    unknown = [bytes([n]) * 32 for n in range(10)]
    assert overlay.on_frame(PEER_ID, _frame(t="iwant", ids=unknown), 1.0) == []
    assert overlay.scores()[PEER_ID] == 0.0
    assert overlay.on_frame(PEER_ID, _frame(t="iwant", ids=unknown), 2.0) == []  # refilled
    overlay.on_frame(PEER_ID, _frame(t="iwant", ids=unknown[:3]), 2.0)
    assert overlay.scores()[PEER_ID] == -3 * overlay.config.waste_penalty


def test_a_statement_pushed_again_on_a_pruned_link_is_waste_and_prunes_are_not_repeated() -> None:
    overlay = _overlay(prune_resend=1.0)
    news = sign(OTHER, "news", CHAIN, {"x": 2})
    frame = _frame(t="gossip", topic="news", data=news.raw)
    overlay.on_frame(PEER_ID, frame, 1.0)
    assert len(_sent(overlay.on_frame(PEER_ID, frame, 1.1), "prune")) == 1  # a cycle: prune
    prunes, actions = 0, []
    for n in range(1000):
        actions = overlay.on_frame(PEER_ID, frame, 1.2 + n * 0.001)
        prunes += len(_sent(actions, "prune"))
        if _banned(actions):
            break
    assert _banned(actions)
    assert prunes <= 1  # said again at most once a second, not for every copy
    assert n <= overlay.config.waste_burst + 30


def test_stale_statements_cost_no_score() -> None:
    overlay = _overlay(waste_burst=5)
    for n in range(50):
        stale = sign(OTHER, "stale", CHAIN, {"n": n})
        actions = overlay.on_frame(PEER_ID, _frame(t="gossip", topic="stale", data=stale.raw), 1.0)
        assert actions == []
    assert overlay.scores()[PEER_ID] == 0.0


def test_the_announcements_of_a_banned_peer_leave_with_it() -> None:
    overlay = _overlay()
    overlay.on_link_up(OTHER_ID, initiator=True, now=0.0)
    shared = b"\xaa" * 32
    overlay.on_frame(OTHER_ID, _frame(t="ihave", ids=[shared]), 0.5)
    ids = [n.to_bytes(32, "big") for n in range(MAX_IDS)]
    overlay.on_frame(PEER_ID, _frame(t="ihave", ids=ids), 1.0)
    overlay.on_frame(PEER_ID, _frame(t="ihave", ids=[shared]), 1.0)
    assert overlay.announced_pending(PEER_ID) == MAX_IDS
    assert overlay.statistics().missing == MAX_IDS + 1
    overlay.penalize(PEER_ID, 1000, "test", 1.1)
    # Its own announcements are gone; the one another peer made too stays, asked of that peer.
    assert overlay.statistics().missing == 1
    asked = _sent(overlay.tick(2.0), "iwant")
    assert [f["ids"] for f in asked] == [[shared]]


def test_every_missing_statement_due_is_asked_for_even_beyond_one_frame() -> None:
    overlay = _overlay()
    ids = [n.to_bytes(32, "big") for n in range(3 * MAX_IDS)]
    for start in range(0, len(ids), MAX_IDS):
        overlay.on_frame(PEER_ID, _frame(t="ihave", ids=ids[start : start + MAX_IDS]), 1.0)
    asked = _sent(overlay.tick(1.0 + overlay.config.graft_timeout), "iwant")
    assert len(asked) == 3
    assert sorted(i for f in asked for i in f["ids"]) == ids


def test_unknown_frame_types_are_refused_and_not_counted() -> None:
    overlay = _overlay()
    before = dict(overlay.frame_kinds)
    actions = overlay.on_frame(PEER_ID, _frame(t="x" * 100_000), 1.0)
    actions += overlay.on_frame(PEER_ID, _frame(t="y" * 100_000), 1.0)
    assert _banned(actions)
    assert overlay.frame_kinds == before
    reasons = [a.reason for a in actions if isinstance(a, Disconnect)]
    assert all(len(r) < 200 for r in reasons)


def test_the_ban_table_is_bounded_and_drops_the_oldest() -> None:
    overlay = _overlay(max_bans=100)
    for n in range(250):
        overlay.ban(n.to_bytes(32, "big"), 1000.0 + n)
    bans = overlay.bans(0.0)
    assert len(bans) == 100
    assert min(bans.values()) == 1150.0
    assert not overlay.is_banned((0).to_bytes(32, "big"), 0.0)
    assert overlay.is_banned((249).to_bytes(32, "big"), 0.0)
