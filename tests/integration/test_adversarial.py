"""Adversarial peers against real node processes (issue 7, item 5).

One test per attack, all against one cluster of four validator processes on loopback (its
genesis makes an idle block every 2 s, so "the ledger keeps committing" is a rising height).
Each test checks three things: the honest network keeps working during and after the attack,
the offender ends up banned or cut off, and the victim's memory stays bounded: its RSS (psutil)
before and after a sustained attack grows by less than ``RSS_BOUND``, and the sizes of its
bounded tables (``net.stats`` on the control API) stay under their caps.

The attackers are raw clients that speak the real handshake and then send whatever plaintext
frames they like (see ``Mallory``). They all connect from 127.0.0.1, like the honest nodes, so
the per-address connection caps (8 handshakes, 32 connections) apply to them too: attackers
here open at most a few connections at once, except in the many-connections test, which is
about exactly that cap.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
import trio
import trio_websocket
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.consensus.service import BLOCKS_TIMEOUT, SYNC_EVERY, WITHHOLD_PENALTY
from modelmine.consensus.types import Vote, VoteType
from modelmine.genesis import GENESIS_FILE
from modelmine.ledger import make_register
from modelmine.p2p.channel import MAX_FRAME
from modelmine.p2p.handshake import Handshake, Session
from modelmine.p2p.membership import HEARTBEAT_DOMAIN
from modelmine.p2p.overlay import OverlayConfig, sign_peer_record
from modelmine.signing import sign
from tests.integration.cluster import (
    Cluster,
    call,
    only,
    peer_statuses,
    raw_websocket,
    submit,
    try_call,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    # Attack clients are cut off mid-stream by the node; they are closed here, but trio's
    # sockets may still reach the garbage collector first. They are the test's, not the node's.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

IDLE_BLOCK = 2.0  # seconds between empty blocks in this cluster's genesis
RSS_BOUND = 30 * 2**20  # allowed RSS growth of the victim over one attack
OVERLAY = OverlayConfig()  # the node's defaults (it only raises the frame rate limit)


# ---- the cluster ----


@pytest.fixture(scope="module")
def net(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    failed = request.session.testsfailed
    c = Cluster(tmp_path_factory.mktemp("adversarial") / "net", 4)
    consensus = dataclasses.replace(c.genesis.consensus, idle_block_interval=IDLE_BLOCK)
    c.genesis = dataclasses.replace(c.genesis, consensus=consensus)
    for directory in [c.root, *(c.data_dir(i) for i in range(1, 5))]:
        c.genesis.save(directory / GENESIS_FILE)
    c.start()
    try:
        yield c
    finally:
        c.stop()
        if request.session.testsfailed > failed:
            print(c.logs())
        gc.collect()  # attack clients' sockets, while this module's warning filters apply


async def _ready(c: Cluster) -> None:
    async def linked() -> bool:
        for i in range(1, 5):
            status = await try_call(c.data_dir(i), "status")
            if not status or status["peers"] < 3 or status["height"] < 1:
                return False
        return True

    await wait_for(linked, 60, "four validators linked and committing")


async def _status(c: Cluster, i: int) -> dict[str, Any]:
    status: dict[str, Any] = await call(c.data_dir(i), "status")
    return status


async def _stats(c: Cluster, i: int, peer: bytes | None = None) -> dict[str, Any]:
    params = {"peer": peer.hex()} if peer is not None else {}
    stats: dict[str, Any] = await call(c.data_dir(i), "net.stats", **params)
    return stats


def _rss(c: Cluster, i: int) -> int:
    proc = c.nodes[i - 1].process
    assert proc is not None
    rss: int = psutil.Process(proc.pid).memory_info().rss
    return rss


def _check_tables(stats: dict[str, Any]) -> None:
    """Every bounded table of the overlay is within its cap."""
    for name, cap in stats["caps"].items():
        if name in stats["tables"]:
            assert stats["tables"][name] <= cap, f"{name}: {stats['tables'][name]} > {cap}"


async def _keeps_committing(c: Cluster, i: int, above: int) -> None:
    async def higher() -> bool:
        status = await try_call(c.data_dir(i), "status")
        return bool(status and status["height"] > above)

    await wait_for(higher, 6 * IDLE_BLOCK + 10, f"node-{i} to commit a block above {above}")


async def _honest_links_fine(c: Cluster, i: int) -> None:
    """Node i is still linked to every other validator, and sees each ONLINE."""

    async def fine() -> bool:
        peers = await peer_statuses(c.data_dir(i))
        others = [c.node_id(j) for j in range(1, 5) if j != i]
        return all(
            o in peers and peers[o]["status"] == "ONLINE" and peers[o]["connected"] for o in others
        )

    await wait_for(fine, 20, f"node-{i} linked to the other validators, all ONLINE")


async def _until(condition: Callable[[], bool], limit: float, what: str) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, limit, what, poll=0.05)


def _memory_report(what: str, before: int, after: int) -> None:
    growth = after - before
    print(f"{what}: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth / 2**20:+.1f})")
    assert growth < RSS_BOUND, f"{what}: RSS grew by {growth / 2**20:.1f} MiB"


# ---- the attacker ----


Answer = Callable[[str, dict[str, Any]], dict[str, Any] | None]


@dataclass
class Mallory:
    """An authenticated raw peer: sends any plaintext frame, records what it receives, and
    answers requests with ``answer`` (None: no answer at all)."""

    ws: trio_websocket.WebSocketConnection
    session: Session
    key: SigningKey
    answer: Answer | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)
    close_code: int | None = None
    close_reason: str = ""
    sent: int = 0

    @property
    def node_id(self) -> bytes:
        return bytes(self.key.verify_key)

    async def send(self, msg: dict[str, Any]) -> bool:
        return await self.send_raw(wire.encode(msg))

    async def send_raw(self, plaintext: bytes) -> bool:
        """False once the node has closed the link."""
        if self.closed.is_set():
            return False
        try:
            await self.ws.send_message(self.session.sender.seal(plaintext))
        except trio_websocket.ConnectionClosed as exc:
            self._note_close(exc)
            return False
        self.sent += 1
        return True

    def gossip_ids(self) -> list[bytes]:
        return [wire.sha256(f["data"]) for f in self.frames if f.get("t") == "gossip"]

    async def read(self) -> None:
        try:
            while True:
                msg = wire.decode(self.session.receiver.open(await self.ws.get_message()))
                assert isinstance(msg, dict)
                self.frames.append(msg)
                if msg.get("t") == "req" and self.answer is not None:
                    body = self.answer(msg["kind"], msg["body"])
                    if body is not None:
                        await self.send({"t": "resp", "id": msg["id"], "body": body})
        except trio_websocket.ConnectionClosed as exc:
            self._note_close(exc)

    def _note_close(self, exc: trio_websocket.ConnectionClosed) -> None:
        if exc.reason is not None and self.close_code is None:
            self.close_code = exc.reason.code
            self.close_reason = exc.reason.reason or ""
        self.closed.set()

    async def wait_closed(self, within: float = 10.0) -> bool:
        with trio.move_on_after(within):
            await self.closed.wait()
        return self.closed.is_set()


@asynccontextmanager
async def mallory(
    c: Cluster,
    i: int,
    key: SigningKey | None = None,
    answer: Answer | None = None,
    *,
    retry_for: float = 0.0,
) -> AsyncIterator[Mallory]:
    """Connect to node i as an authenticated peer (retrying while its port is not open yet)."""
    key = key or SigningKey.generate()
    url = f"ws://127.0.0.1:{c.ports[i - 1]}"
    deadline = trio.current_time() + retry_for
    async with AsyncExitStack() as stack:
        while True:
            try:
                ws = await stack.enter_async_context(
                    raw_websocket(url, max_message_size=MAX_FRAME, message_queue_size=64)
                )
                break
            except Exception as exc:
                refused = (OSError, trio_websocket.HandshakeError)
                if not only(exc, refused) or trio.current_time() > deadline:
                    raise
                await trio.sleep(0.02)
        nursery = await stack.enter_async_context(trio.open_nursery())
        hs = Handshake.initiator(key, c.genesis.network_id, None)
        await ws.send_message(hs.start())
        reply = hs.receive(await ws.get_message())
        assert reply is not None
        await ws.send_message(reply)
        m = Mallory(ws, hs.result, key, answer)
        nursery.start_soon(m.read)
        try:
            yield m
        finally:
            nursery.cancel_scope.cancel()


def _short(node_id: bytes) -> str:
    return node_id.hex()[:8]


# ---- 1. invalid signatures ----


def _heartbeat(key: SigningKey, seq: int = 1) -> dict[str, Any]:
    return {
        "node_id": bytes(key.verify_key),
        "seq": seq,
        "time": time.time(),
        "name": "mallory",
        "address": "",
        "version": "0",
        "status": "ONLINE",
        "capacity": {"slots": 1, "busy": 0},
        "metrics": {},
    }


def _bad_signature(raw: bytes) -> bytes:
    domain, signer, body, _ = wire.decode(raw)
    return wire.encode([domain, signer, body, bytes(64)])


def _forged_frame(c: Cluster, key: SigningKey, variant: int, height: int) -> bytes:
    """A frame carrying one statement whose signature does not verify, in one of five places."""
    chain = c.genesis.chain_id
    if variant == 0:  # a heartbeat, as gossip
        forged = _bad_signature(sign(key, HEARTBEAT_DOMAIN, chain, _heartbeat(key)).raw)
        return wire.encode({"t": "gossip", "topic": "heartbeat", "data": forged})
    if variant == 1:  # a ledger record, as gossip
        forged = _bad_signature(make_register(key, chain, "forger", 1))
        return wire.encode({"t": "gossip", "topic": "records", "data": forged})
    if variant == 2:
        # A vote "by validator node-2" with a bad signature, inside a consensus wrapper the
        # forger signs correctly: only the inner signature is wrong.
        vote = Vote(VoteType.PREVOTE, height, 0, None, bytes.fromhex(c.node_id(2)), bytes(64))
        payload = {"kind": "vote", "msg": vote.to_wire(), "sent": time.time()}
        wrapper = sign(key, "consensus", chain, payload)
        return wire.encode({"t": "gossip", "topic": "consensus", "data": wrapper.raw})
    if variant == 3:  # a heartbeat piggybacked on a membership probe
        forged = _bad_signature(sign(key, HEARTBEAT_DOMAIN, chain, _heartbeat(key)).raw)
        return wire.encode({"t": "ping", "n": 1, "pb": [forged]})
    record = sign_peer_record(key, chain, "ws://127.0.0.1:9", "forger", time.time())
    return wire.encode({"t": "peers", "records": [_bad_signature(record.raw)]})


async def test_invalid_signature_flood_bans_each_forger_at_once_and_stores_nothing(
    net: Cluster,
) -> None:
    """200 forgers, each flooding 50 copies of a frame whose statement has a bad signature
    (gossip heartbeat, ledger record, a consensus vote inside a validly signed wrapper, a
    piggybacked heartbeat, a peer record). The node bans each at its first bad signature
    (penalty 100 = the ban score), forwards none of it, stores none of it, and refuses the
    forger again for the ban's duration."""
    c = net
    forgers, frames_each = 200, 50
    with trio.fail_after(120):
        await _ready(c)
        height = (await _status(c, 1))["height"]
        before = await _stats(c, 1)
        rss_before = _rss(c, 1)
        keys = [SigningKey.generate() for _ in range(forgers)]
        closes: dict[bytes, tuple[int | None, str]] = {}
        limiter = trio.CapacityLimiter(4)  # under the 8 handshakes per address
        sent = 0

        async def forge(index: int, key: SigningKey) -> None:
            nonlocal sent
            frame = _forged_frame(c, key, index % 5, height + 1)
            async with limiter, mallory(c, 1, key) as m:
                for _ in range(frames_each):
                    if not await m.send_raw(frame):
                        break
                await m.wait_closed()
                sent += m.sent
                closes[m.node_id] = (m.close_code, m.close_reason)

        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for index, key in enumerate(keys):
                nursery.start_soon(forge, index, key)
        took = time.monotonic() - started
        rss_after = _rss(c, 1)
        after = await _stats(c, 1)
        print(f"{forgers} forgers sent {sent} frames in {took:.1f} s")

        # Each forger was cut off by the node, banned, at its first bad signature.
        assert len(closes) == forgers
        for node_id, (code, reason) in closes.items():
            assert code == 1008 and reason.startswith("banned:"), (_short(node_id), code, reason)
        log = c.nodes[0].log()
        for key in keys:
            penalties = re.findall(
                rf"peer {_short(bytes(key.verify_key))}: .*\(score (-?\d+)\)", log
            )
            assert penalties == ["-100"], (_short(bytes(key.verify_key)), penalties)
        assert after["banned"] >= before["banned"] + forgers
        assert after["counters"]["rejected"] >= before["counters"]["rejected"] + forgers // 5

        # ... and stays refused: a new link from a banned key is closed before anything else.
        async with mallory(c, 1, keys[0]) as again:
            assert await again.wait_closed(5)
            assert again.close_reason == "peer is banned"
            assert again.frames == []
        info = (await _stats(c, 1, bytes(keys[0].verify_key)))["peer"]
        assert info["banned_until"] > time.time() + OVERLAY.ban_seconds - 120

        # Nothing of it was stored or forwarded.
        members = await peer_statuses(c.data_dir(1))
        assert not {bytes(k.verify_key).hex() for k in keys} & set(members)
        account = await call(
            c.data_dir(1), "ledger.account", account=keys[1].verify_key.encode().hex()
        )
        assert not account["registered"]
        for j in (2, 3, 4):
            other = c.nodes[j - 1].log()
            assert not any(_short(bytes(k.verify_key)) in other for k in keys), f"node-{j}"

        # Bounded memory; the honest network carries on.
        _memory_report("invalid-signature flood", rss_before, rss_after)
        _check_tables(after)
        await _keeps_committing(c, 1, height)
        await _honest_links_fine(c, 1)


# ---- 2. ihave / iwant spam ----


async def test_ihave_and_iwant_spam_is_bounded_and_banned(net: Cluster) -> None:
    """Lazy-push spam, each kind from several spammers in turn (each one tries 2,000 frames):
    announcements (ihave) of statements that do not exist, requests (iwant) for statements
    the node does not hold, and iwant for one statement it holds, over and over.

    The node keeps at most ``max_missing_per_peer`` (256) pending ids for one peer and bans
    one that announces more; it answers a useless or repeated iwant only within a small waste
    budget and then bans. A spammer that stays at 256 announced ids is not banned (an
    announcer that never delivers looks like a stalled link), but it pins no more than those
    256 ids, each asked of it at most ``iwant_tries`` times."""
    c = net
    spam, spammers = 2000, 6
    with trio.fail_after(90):
        await _ready(c)
        height = (await _status(c, 1))["height"]
        rss_before = _rss(c, 1)
        sent = {"ihave": 0, "iwant unknown": 0, "iwant held": 0}

        # a. ihave for ids nobody has: frames of 64 fresh ids.
        for _ in range(spammers):
            async with mallory(c, 1) as m:
                for _ in range(spam):
                    if not await m.send({"t": "ihave", "ids": _random_ids(64)}):
                        break
                assert await m.wait_closed()
                asked = sum(len(f["ids"]) for f in m.frames if f.get("t") == "iwant")
            sent["ihave"] += m.sent
            assert m.close_code == 1008 and "announced too many" in m.close_reason
            assert asked <= OVERLAY.max_missing_per_peer * OVERLAY.iwant_tries
        stats = await _stats(c, 1)
        assert stats["tables"]["missing"] <= OVERLAY.max_missing_per_peer

        # a'. ihave at the cap: 256 ids, held for 3 s while the node asks for them.
        async with mallory(c, 1) as m:
            for _ in range(OVERLAY.max_missing_per_peer // 64):
                assert await m.send({"t": "ihave", "ids": _random_ids(64)})
            pending = []
            for _ in range(15):
                await trio.sleep(0.2)
                pending.append((await _stats(c, 1, m.node_id))["peer"]["announced_pending"])
            asked = sum(len(f["ids"]) for f in m.frames if f.get("t") == "iwant")
            assert not m.closed.is_set()
        print(f"ihave at the cap: pending ids at most {max(pending)}, {asked} ids asked in 3 s")
        assert max(pending) <= OVERLAY.max_missing_per_peer
        assert asked <= OVERLAY.max_missing_per_peer * OVERLAY.iwant_tries

        # b. iwant for ids the node never held.
        for _ in range(spammers):
            async with mallory(c, 1) as m:
                wanted: set[bytes] = set()
                for _ in range(spam):
                    ids = _random_ids(64)
                    wanted.update(ids)
                    if not await m.send({"t": "iwant", "ids": ids}):
                        break
                assert await m.wait_closed()
            sent["iwant unknown"] += m.sent
            assert m.close_code == 1008 and "iwant" in m.close_reason
            assert not wanted & set(m.gossip_ids())

        # c. iwant for one statement the node holds, again and again.
        async with mallory(c, 1) as listener:
            # The node pushes consensus gossip to new links; it keeps what it pushed a while.
            await _until(lambda: bool(listener.gossip_ids()), 6 * IDLE_BLOCK + 10, "gossip")
            held = listener.gossip_ids()[0]
        bound = OVERLAY.waste_burst + -OVERLAY.ban_score / OVERLAY.waste_penalty + 30
        most = 0
        for _ in range(spammers):
            async with mallory(c, 1) as m:
                for _ in range(spam):
                    if not await m.send({"t": "iwant", "ids": [held]}):
                        break
                assert await m.wait_closed()
                answers = m.gossip_ids().count(held)
            sent["iwant held"] += m.sent
            most = max(most, answers)
            assert m.close_code == 1008 and "iwant" in m.close_reason
            assert answers <= bound
        print(f"lazy-push spam, frames sent by {spammers} spammers each: {sent}")
        print(f"iwant for a held statement: at most {most} answers per spammer (bound {bound})")

        after = await _stats(c, 1)
        _memory_report("ihave/iwant spam", rss_before, _rss(c, 1))
        _check_tables(after)
        await _keeps_committing(c, 1, height)
        await _honest_links_fine(c, 1)


def _random_ids(n: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(n)]


# ---- 3. replays ----


async def test_replayed_statements_are_ignored_and_a_repeating_peer_is_banned(
    net: Cluster,
) -> None:
    """Old, correctly signed statements sent again.

    - Statements the node has seen (captured consensus messages and a ledger record, replayed
      byte for byte, 300 times each) are dropped by the seen-cache before any work and never
      forwarded; a peer that keeps pushing them exhausts its waste budget and is banned.
    - Statements that are new bytes but stale in meaning (old votes re-wrapped by the sender,
      a record re-signed with an already used nonce) are what a lagging relay may legitimately
      forward, so they are not penalized: each costs one signature check, is judged IGNORE,
      changes no state and is not forwarded, and the sender stays linked with a clean score.
    """
    c = net
    chain = c.genesis.chain_id
    with trio.fail_after(120):
        await _ready(c)
        rss_before = _rss(c, 1)
        user = SigningKey.generate()
        user_id = bytes(user.verify_key)
        async with mallory(c, 1) as listener, mallory(c, 1) as capturer:
            # Capture a ledger record (registered through node-2) and consensus messages.
            await submit(
                c.data_dir(2), lambda ch, n: make_register(user, ch, "replayed", n), user_id
            )

            def captured() -> list[dict[str, Any]]:
                return [f for f in capturer.frames if f.get("t") == "gossip"]

            async def enough() -> bool:
                topics = [f["topic"] for f in captured()]
                return topics.count("consensus") >= 8 and "records" in topics

            await wait_for(enough, 6 * IDLE_BLOCK + 10, "gossip to capture", poll=0.1)
            frames = captured()
            votes = [
                Vote.from_wire(_inner(f["data"]))
                for f in frames
                if f["topic"] == "consensus" and _kind(f["data"]) == "vote"
            ]
            newest = max(v.height for v in votes)
            await _keeps_committing(c, 1, newest + 1)  # the captured votes are two blocks old
            account_before = await call(c.data_dir(1), "ledger.account", account=user_id.hex())
            stats_before = await _stats(c, 1)

            # Stale in meaning, new in bytes: old votes re-wrapped, a record with a used nonce.
            async with mallory(c, 1) as relay:
                stale: list[tuple[str, bytes]] = []
                for n in range(200):
                    vote = votes[n % len(votes)]
                    payload = {"kind": "vote", "msg": vote.to_wire(), "sent": time.time() + n}
                    stale.append(("consensus", sign(relay.key, "consensus", chain, payload).raw))
                for n in range(100):
                    stale.append(("records", make_register(user, chain, f"again-{n}", 1)))
                for topic, raw in stale:
                    assert await relay.send({"t": "gossip", "topic": topic, "data": raw})
                await trio.sleep(1.5)
                assert not relay.closed.is_set()
                mine = (await _stats(c, 1, relay.node_id))["peer"]
            assert mine["linked"] and mine["score"] == 0.0 and mine["banned_until"] is None
            stale_ids = {wire.sha256(raw) for _, raw in stale}
            assert not stale_ids & set(listener.gossip_ids()), "stale statements were forwarded"
            account = await call(c.data_dir(1), "ledger.account", account=user_id.hex())
            assert account == account_before

            # Seen before: the captured frames again, byte for byte.
            replayed = {wire.sha256(f["data"]) for f in frames}
            heard = [i for i in listener.gossip_ids() if i in replayed]
            plaintexts = [wire.encode(f) for f in frames]
            for _ in range(300):
                for plaintext in plaintexts:
                    if not await capturer.send_raw(plaintext):
                        break
                if capturer.closed.is_set():
                    break
            assert await capturer.wait_closed()
            await trio.sleep(1.0)
            assert [i for i in listener.gossip_ids() if i in replayed] == heard
            assert not listener.closed.is_set()
        print(
            f"replay: {len(stale)} stale statements ignored at no cost to their sender; "
            f"{capturer.sent} of {300 * len(plaintexts)} replayed frames sent before the ban"
        )
        assert capturer.close_code == 1008 and "pushed again" in capturer.close_reason
        after = await _stats(c, 1)
        assert after["counters"]["duplicates"] - stats_before["counters"]["duplicates"] >= 200
        _memory_report("replays", rss_before, _rss(c, 1))
        _check_tables(after)
        await _keeps_committing(c, 1, newest + 2)
        await _honest_links_fine(c, 1)


def _inner(raw: bytes) -> bytes:
    inner: bytes = wire.decode(wire.decode(raw)[2])["msg"]
    return inner


def _kind(raw: bytes) -> str:
    kind: str = wire.decode(wire.decode(raw)[2])["kind"]
    return kind


# ---- 4. withholding blocks during sync ----


def _withholder(claim: Callable[[], int], blocks: dict[str, Any] | None) -> Answer:
    """Claims a head of ``claim()``; answers chain.blocks with ``blocks`` (None: never)."""

    def answer(kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "chain.status":
            return {"height": claim(), "head": os.urandom(32)}
        if kind == "chain.blocks":
            return blocks
        return None

    return answer


async def test_withheld_blocks_do_not_stall_sync_and_cost_the_withholder(net: Cluster) -> None:
    """node-4 is stopped while the others commit, then restarted with two fake peers linked to
    it. One claims to be exactly one block ahead of node-4 (the most plausible claim, so node-4
    asks it first) and never answers chain.blocks; the other claims a million blocks and
    answers with an empty batch. node-4 loses one request timeout to the first, then catches
    up from the honest validators, takes 50 points off the silent one and does not ask it
    again within its cooldown, and bans the one that sent the empty batch."""
    c = net
    bound = BLOCKS_TIMEOUT + SYNC_EVERY + 8.0  # one lost request, one sync round, slack
    with trio.fail_after(150):
        await _ready(c)
        c.nodes[3].stop()
        stopped_at = (await _status(c, 1))["height"]
        for n in range(2):  # records make blocks at once, besides the idle ones
            key = SigningKey.generate()
            await submit(
                c.data_dir(1 + n),
                lambda ch, nonce, k=key: make_register(k, ch, "w", nonce),
                bytes(key.verify_key),
            )
        await _keeps_committing(c, 1, stopped_at + 3)
        node4_head = [stopped_at]
        silent_answer = _withholder(lambda: node4_head[0] + 1, None)
        empty_answer = _withholder(lambda: 1_000_000, {"blocks": [], "commits": []})

        async def follow_node4(stop: trio.Event) -> None:
            while not stop.is_set():
                status = await try_call(c.data_dir(4), "status")
                if status:
                    node4_head[0] = status["height"]
                await trio.sleep(0.2)

        c.nodes[3].start()
        restarted = time.monotonic()
        stop = trio.Event()
        async with (
            trio.open_nursery() as nursery,
            mallory(c, 4, answer=silent_answer, retry_for=30) as silent,
            mallory(c, 4, answer=empty_answer, retry_for=30) as empty,
        ):
            nursery.start_soon(follow_node4, stop)
            linked = time.monotonic() - restarted
            rss_before = _rss(c, 4)

            async def caught_up() -> bool:
                mine = await try_call(c.data_dir(4), "status")
                theirs = await try_call(c.data_dir(1), "status")
                return bool(mine and theirs and mine["height"] >= theirs["height"] - 1)

            took = await wait_for(caught_up, bound, "node-4 to catch up", poll=0.2)

            async def withholders_paid() -> bool:
                score = (await _stats(c, 4, silent.node_id))["peer"]["score"]
                banned = (await _stats(c, 4, empty.node_id))["peer"]["banned_until"]
                return banned is not None and score is not None and score <= -WITHHOLD_PENALTY

            await wait_for(withholders_paid, bound, "both withholders penalized")
            await trio.sleep(2 * SYNC_EVERY)  # two more sync rounds: the silent one is left out
            stats = await _stats(c, 4, silent.node_id)
            asks = [f for f in silent.frames if f.get("t") == "req" and f["kind"] == "chain.blocks"]
            rss_after = _rss(c, 4)
            stop.set()
        print(
            f"withholding: linked {linked:.1f} s after restart, caught up {took:.1f} s later "
            f"(bound {bound:.0f} s); the silent withholder was asked for blocks {len(asks)} time"
        )
        assert empty.closed.is_set() and "bad block in sync" in empty.close_reason
        assert stats["counters"]["sync_failures"] >= 2
        assert len(asks) == 1, "the silent withholder was asked again within its cooldown"
        assert stats["peer"]["linked"] and stats["peer"]["score"] == -WITHHOLD_PENALTY
        _memory_report("withholding (node-4)", rss_before, rss_after)
        _check_tables(stats)
        height = (await _status(c, 4))["height"]
        await _keeps_committing(c, 4, height)
        await _honest_links_fine(c, 4)


# ---- 5. many connections ----


async def _tcp_silent(url_port: int, hold: trio.Event, counts: dict[str, int]) -> None:
    """A TCP connection that never says anything."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", url_port)
    except OSError:
        counts["failed"] += 1
        return
    try:
        with trio.move_on_after(30):
            counts[await _wait_or_eof(stream, hold)] += 1
    finally:
        await stream.aclose()


async def _wait_or_eof(stream: trio.SocketStream, hold: trio.Event) -> str:
    """Wait for ``hold``: "held", or "refused" (a 503 came), or "cut" (the node hung up)."""
    outcome = "held"
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            nonlocal outcome
            try:
                data = await stream.receive_some(1024)
                outcome = "refused" if data.startswith(b"HTTP/1.1 503") else "cut"
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outcome = "cut"
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await hold.wait()
        nursery.cancel_scope.cancel()
    return outcome


async def _ws_stalled(
    c: Cluster, key: SigningKey | None, stage: str, hold: trio.Event, counts: dict[str, int]
) -> None:
    """A websocket that stalls after the upgrade ("upgrade"), after hs1 ("hs1"), or completes
    the handshake and idles ("linked")."""
    url = f"ws://127.0.0.1:{c.ports[0]}"
    outcome = "refused"  # unless the upgrade succeeds
    try:
        with trio.move_on_after(40):
            async with raw_websocket(url) as ws:
                try:
                    if stage != "upgrade":
                        key = key or SigningKey.generate()
                        hs = Handshake.initiator(key, c.genesis.network_id, None)
                        await ws.send_message(hs.start())
                        if stage == "linked":
                            reply = hs.receive(await ws.get_message())
                            assert reply is not None
                            await ws.send_message(reply)
                    with trio.move_on_after(30):
                        await hold.wait()
                    outcome = "held" if ws.closed is None else "cut"
                except (trio_websocket.ConnectionClosed, OSError):
                    outcome = "cut"
    except* (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError):
        pass  # turned away with a 503, or the connection failed: refused
    counts[outcome] += 1


async def test_many_connections_are_capped_and_honest_peers_stay_served(net: Cluster) -> None:
    """Three waves of 300 connections from one address to node-1: 100 plain TCP connections
    that never speak, 100 websockets that never start the handshake, 50 that stop after hs1
    and 50 that complete it and idle. The node admits at most 8 handshakes and 32
    connections from one address at a time and closes the rest at once; its links to the
    honest validators, their heartbeats and blocks, and its control API carry on; memory is
    bounded; after the attack a new peer connects as usual."""
    c = net
    limits = {"max_half_open_per_address": 8, "max_inbound_per_address": 32}
    with trio.fail_after(120):
        await _ready(c)
        height = (await _status(c, 1))["height"]
        before = await _stats(c, 1)
        rss_before = _rss(c, 1)
        counts = {"failed": 0, "refused": 0, "held": 0, "cut": 0}
        worst: dict[str, float] = {"half_open": 0, "inbound": 0, "sockets": 0, "control": 0.0}
        proc = c.nodes[0].process
        assert proc is not None
        victim = psutil.Process(proc.pid)

        async def watch(stop: trio.Event) -> None:
            while not stop.is_set():
                started = time.monotonic()
                stats = await _stats(c, 1)
                worst["control"] = max(worst["control"], time.monotonic() - started)
                worst["half_open"] = max(worst["half_open"], stats["half_open"])
                worst["inbound"] = max(worst["inbound"], stats["inbound"])
                sockets = [
                    s
                    for s in victim.net_connections(kind="tcp")
                    if s.laddr and s.laddr.port == c.ports[0] and s.status == "ESTABLISHED"
                ]
                worst["sockets"] = max(worst["sockets"], len(sockets))
                await trio.sleep(0.2)

        stop = trio.Event()
        async with trio.open_nursery() as watching:
            watching.start_soon(watch, stop)
            for wave in range(3):
                hold = trio.Event()
                async with trio.open_nursery() as nursery:
                    # First 50 that complete the handshake (a few at a time, so that they
                    # get in), then 250 that stall, all at once.
                    for _ in range(50):
                        nursery.start_soon(_ws_stalled, c, None, "linked", hold, counts)
                        await trio.sleep(0.01)
                    for n in range(250):
                        if n < 100:
                            nursery.start_soon(_tcp_silent, c.ports[0], hold, counts)
                        else:
                            stage = "upgrade" if n < 200 else "hs1"
                            nursery.start_soon(_ws_stalled, c, None, stage, hold, counts)
                    await trio.sleep(3.0)
                    if wave == 2:
                        rss_during = _rss(c, 1)
                        await _keeps_committing(c, 1, height)
                        await _honest_links_fine(c, 1)
                    hold.set()
            stop.set()
        print(f"many connections: {counts}; worst seen {worst}")
        assert counts["refused"] >= 600 and counts["failed"] == 0
        rss_after = _rss(c, 1)

        assert worst["half_open"] <= limits["max_half_open_per_address"]
        assert worst["inbound"] <= limits["max_inbound_per_address"]
        assert worst["sockets"] <= limits["max_inbound_per_address"]
        assert worst["control"] < 2.0
        after = await _stats(c, 1)
        assert after["refused_connections"] - before["refused_connections"] >= 600
        assert after["links"] <= after["limits"]["max_links"]

        async def drained() -> bool:
            stats = await _stats(c, 1)
            return bool(stats["half_open"] == 0 and stats["inbound"] <= before["inbound"])

        await wait_for(drained, 15, "node-1's inbound connections back to the honest ones")
        async with mallory(c, 1) as newcomer:  # a new peer is welcome again
            await _until(lambda: any(f.get("t") == "hello" for f in newcomer.frames), 5, "a hello")
        _memory_report("many connections", rss_before, max(rss_during, rss_after))
        _check_tables(after)
        await _keeps_committing(c, 1, height + 1)
        await _honest_links_fine(c, 1)
