"""Peer links over real loopback sockets: echo, refusals, deadlines, limits and tampering."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
from nacl.signing import SigningKey
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from modelmine.p2p.channel import MAX_PLAINTEXT
from modelmine.p2p.handshake import Handshake, Session
from modelmine.p2p.transport import (
    ConnectFailed,
    LinkClosed,
    PeerLink,
    connect_peer,
    serve_peers,
)
from tests.integration.cluster import raw_websocket

NET = hashlib.sha256(b"integration genesis").digest()
OTHER_NET = hashlib.sha256(b"some other genesis").digest()
ALICE, BOB, CAROL = (SigningKey(bytes([n]) * 32) for n in (1, 2, 3))
BOB_ID = bytes(BOB.verify_key)
DEADLINE = 10.0


class Outcomes:
    """What the server's link handlers saw, in order."""

    def __init__(self) -> None:
        self.closed: list[LinkClosed] = []
        self.changed = trio.Event()

    async def wait_closed(self, count: int = 1) -> list[LinkClosed]:
        while len(self.closed) < count:
            await self.changed.wait()
        return self.closed

    def echo_handler(self, greeting: bytes = b"") -> Callable[[PeerLink], Awaitable[None]]:
        async def echo(link: PeerLink) -> None:
            try:
                if greeting:
                    await link.send(greeting)
                while True:
                    await link.send(await link.receive())
            except LinkClosed as exc:
                self.closed.append(exc)
                self.changed.set()
                self.changed = trio.Event()

        return echo


@asynccontextmanager
async def serving(
    handler: Callable[[PeerLink], Awaitable[None]], *, network_id: bytes = NET, **options: Any
) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        serve = partial(serve_peers, identity=BOB, network_id=network_id, **options)
        port = await nursery.start(serve, handler, "127.0.0.1", 0)
        yield f"ws://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def dial(nursery: trio.Nursery, url: str, **options: Any) -> PeerLink:
    options.setdefault("identity", ALICE)
    options.setdefault("network_id", NET)
    return await connect_peer(nursery, url, **options)


async def test_connect_and_echo_both_ways() -> None:
    outcomes = Outcomes()
    with trio.fail_after(DEADLINE):
        async with (
            serving(outcomes.echo_handler(greeting=b"hello from bob")) as url,
            trio.open_nursery() as nursery,
        ):
            link = await dial(nursery, url, expected_peer=BOB_ID)
            assert link.peer_id == BOB_ID
            assert link.initiator
            assert link.remote_address.startswith("127.0.0.1:")
            assert await link.receive() == b"hello from bob"
            messages = [b"", b"x", bytes(range(256)) * 256, b"\xab" * MAX_PLAINTEXT]
            for message in messages:
                await link.send(message)
                assert await link.receive() == message
            stats = link.statistics()
            assert stats.frames_sent == len(messages)
            assert stats.frames_received == len(messages) + 1
            assert stats.bytes_sent == sum(map(len, messages))
            await link.aclose()
            (closed,) = await outcomes.wait_closed()
            assert closed.code == 1000


async def test_concurrent_senders_keep_the_channel_in_step() -> None:
    received: list[bytes] = []
    finished = trio.Event()

    async def collect(link: PeerLink) -> None:
        for _ in range(200):
            received.append(await link.receive())
        finished.set()
        await link.receive()

    with trio.fail_after(DEADLINE):
        async with serving(collect) as url, trio.open_nursery() as nursery:
            link = await dial(nursery, url)

            async def sender(n: int) -> None:
                for i in range(20):
                    await link.send(b"%d:%d" % (n, i))

            async with trio.open_nursery() as senders:
                for n in range(10):
                    senders.start_soon(sender, n)
            await finished.wait()
            assert sorted(received) == sorted(
                b"%d:%d" % (n, i) for n in range(10) for i in range(20)
            )
            async with trio.open_nursery() as readers:
                readers.start_soon(link.receive)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await link.receive()
                readers.cancel_scope.cancel()
            await link.aclose()


async def test_dial_gives_up_at_the_deadline() -> None:
    async def mute(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await trio.sleep_forever()  # never answers hs1
        await ws.aclose()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(trio_websocket.serve_websocket, mute, "127.0.0.1", 0, None)
            )
            started = trio.current_time()
            with pytest.raises(ConnectFailed, match=r"no handshake .* within 0.3 s"):
                await dial(nursery, f"ws://127.0.0.1:{server.port}", handshake_timeout=0.3)
            assert 0.3 <= trio.current_time() - started < 2.0
            nursery.cancel_scope.cancel()


async def test_server_side_link_knows_its_peer() -> None:
    seen: list[PeerLink] = []

    async def record(link: PeerLink) -> None:
        seen.append(link)
        await link.send(b"bye")

    with trio.fail_after(DEADLINE):
        async with serving(record) as url, trio.open_nursery() as nursery:
            link = await dial(nursery, url)
            assert await link.receive() == b"bye"
            with pytest.raises(LinkClosed) as info:
                await link.receive()
            assert info.value.code == 1000
            (server_link,) = seen
            assert server_link.peer_id == bytes(ALICE.verify_key)
            assert not server_link.initiator
            assert server_link.transcript_hash == link.transcript_hash
            await link.aclose()


async def test_wrong_network_is_refused_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = Outcomes()
    with trio.fail_after(DEADLINE):
        async with serving(outcomes.echo_handler()) as url, trio.open_nursery() as nursery:
            with pytest.raises(ConnectFailed, match="wrong network id"):
                await dial(nursery, url, network_id=OTHER_NET)
            link = await dial(nursery, url)
            await link.send(b"still there?")
            assert await link.receive() == b"still there?"
            await link.aclose()
    refusals = [r for r in caplog.records if "refusing peer at 127.0.0.1:" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.WARNING
    assert "wrong network id" in refusals[0].getMessage()


async def test_pinned_peer_mismatch_is_refused_by_the_dialer() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(Outcomes().echo_handler()) as url, trio.open_nursery() as nursery:
            carol = bytes(CAROL.verify_key)
            with pytest.raises(ConnectFailed) as info:
                await dial(nursery, url, expected_peer=carol)
            assert BOB_ID.hex()[:8] in str(info.value)
            assert carol.hex()[:8] in str(info.value)


async def test_unreachable_peer_is_a_connect_failure() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConnectFailed, match="cannot open a websocket"):
                await dial(nursery, f"ws://127.0.0.1:{port}")
            with pytest.raises(ConnectFailed, match="cannot open a websocket"):
                await dial(nursery, "http://127.0.0.1:1")


async def test_silent_client_is_dropped_at_the_deadline_while_others_connect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="modelmine.p2p.transport")
    deadline = 0.5
    with trio.fail_after(DEADLINE):
        async with (
            serving(Outcomes().echo_handler(), handshake_timeout=deadline) as url,
            raw_websocket(url) as silent,
            trio.open_nursery() as nursery,
        ):
            opened = trio.current_time()
            link = await dial(nursery, url)
            await link.send(b"ping")
            assert await link.receive() == b"ping"
            with pytest.raises(ConnectionClosed) as info:
                await silent.get_message()
            waited = trio.current_time() - opened
            assert info.value.reason is not None
            assert info.value.reason.code == 1008
            assert info.value.reason.reason == "handshake timeout"
            assert deadline * 0.9 <= waited < deadline + 2.0
            # The honest link outlives the silent one.
            await link.send(b"pong")
            assert await link.receive() == b"pong"
            await link.aclose()
    assert any("no handshake within 0.5 s" in r.getMessage() for r in caplog.records)


async def test_oversized_frame_closes_that_link_only(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = Outcomes()
    limit = 64 * 1024
    with trio.fail_after(DEADLINE):
        async with (
            serving(outcomes.echo_handler(), max_message_size=limit + 16) as url,
            trio.open_nursery() as nursery,
        ):
            big, small = await dial(nursery, url), await dial(nursery, url)
            with pytest.raises(ValueError, match="exceeds the limit"):
                await big.send(bytes(MAX_PLAINTEXT + 1))
            await big.send(bytes(limit))  # fits exactly
            assert len(await big.receive()) == limit
            await big.send(bytes(limit + 1))
            with pytest.raises(LinkClosed) as info:
                await big.receive()
            assert info.value.code == 1009
            (server_side,) = await outcomes.wait_closed()
            assert server_side.code == 1009
            await small.send(b"unaffected")
            assert await small.receive() == b"unaffected"
            await big.aclose()
            await small.aclose()
    assert any(
        r.levelno == logging.WARNING and "MESSAGE_TOO_BIG" in r.getMessage() for r in caplog.records
    )


# -- an attacker on the wire --


class Relay:
    """A websocket man in the middle that forwards frames and can replay one of them."""

    def __init__(
        self, upstream: str, *, replay_from_client: int | None, replay_from_server: int | None
    ):
        self.upstream = upstream
        self.replay = {True: replay_from_client, False: replay_from_server}
        self.seen = {True: 0, False: 0}
        self.finished = trio.Event()

    async def handle(self, request: WebSocketRequest) -> None:
        down = await request.accept()
        async with (
            raw_websocket(self.upstream) as up,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._pump, down, up, True, nursery.cancel_scope)
            nursery.start_soon(self._pump, up, down, False, nursery.cancel_scope)
        self.finished.set()

    async def _pump(
        self,
        src: WebSocketConnection,
        dst: WebSocketConnection,
        from_client: bool,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while True:
                message = await src.get_message()
                await dst.send_message(message)
                self.seen[from_client] += 1
                if self.seen[from_client] == self.replay[from_client]:
                    await dst.send_message(message)
        except ConnectionClosed:
            scope.cancel()


@pytest.mark.parametrize("direction", ["client to server", "server to client"])
async def test_replayed_frame_closes_the_link(
    direction: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes = Outcomes()
    # Client frames: hs1, hs3, data 0, data 1 ...; server frames: hs2, data 0 ...
    from_client = direction == "client to server"
    with trio.fail_after(DEADLINE):
        async with (
            serving(outcomes.echo_handler()) as url,
            trio.open_nursery() as nursery,
        ):
            relay = Relay(
                url,
                replay_from_client=3 if from_client else None,
                replay_from_server=None if from_client else 2,
            )
            port = (
                await nursery.start(
                    partial(trio_websocket.serve_websocket, relay.handle, "127.0.0.1", 0, None)
                )
            ).port
            link = await dial(nursery, f"ws://127.0.0.1:{port}")
            await link.send(b"transfer 10 credits")
            assert await link.receive() == b"transfer 10 credits"
            if from_client:
                (server_side,) = await outcomes.wait_closed()
                assert server_side.code == 1008
                assert "frame 1 failed to open" in str(server_side)
            else:
                with pytest.raises(LinkClosed) as info:
                    await link.receive()
                assert info.value.code == 1008
            await link.aclose()
            await relay.finished.wait()
            nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("frame 1 failed to open" in w for w in warnings)


# -- a client that speaks the handshake itself, then misbehaves --


@asynccontextmanager
async def raw_session(url: str) -> AsyncIterator[tuple[WebSocketConnection, Session]]:
    async with raw_websocket(url) as ws:
        handshake = Handshake.initiator(ALICE, NET)
        await ws.send_message(handshake.start())
        hs2 = await ws.get_message()
        assert isinstance(hs2, bytes)
        hs3 = handshake.receive(hs2)
        assert hs3 is not None
        await ws.send_message(hs3)
        yield ws, handshake.result


@pytest.mark.parametrize(
    ("garbage", "code", "reason"),
    [
        (b"\x00" * 40, 1008, "frame 1 failed to open"),
        (b"short", 1008, "shorter than the tag"),
        ("a text message", 1003, "text message on a binary link"),
    ],
    ids=["zeros", "short", "text"],
)
async def test_garbage_after_the_handshake_closes_with_a_logged_reason(
    garbage: bytes | str, code: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes = Outcomes()
    with trio.fail_after(DEADLINE):
        async with serving(outcomes.echo_handler()) as url, raw_session(url) as (ws, session):
            await ws.send_message(session.sender.seal(b"a valid frame first"))
            echoed = await ws.get_message()
            assert isinstance(echoed, bytes)
            assert session.receiver.open(echoed) == b"a valid frame first"
            await ws.send_message(garbage)
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == code
            assert reason in (info.value.reason.reason or "")
            (server_side,) = await outcomes.wait_closed()
            assert server_side.code == code
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert reason in record.getMessage()
    assert "127.0.0.1:" in record.getMessage()


async def test_a_crashing_handler_is_logged_and_the_listener_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def flaky(link: PeerLink) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug in the node layer")
        await link.send(b"fine")

    with trio.fail_after(DEADLINE):
        async with serving(flaky) as url, trio.open_nursery() as nursery:
            first = await dial(nursery, url)
            with pytest.raises(LinkClosed) as info:
                await first.receive()
            assert info.value.code == 1011
            second = await dial(nursery, url)
            assert await second.receive() == b"fine"
            await first.aclose()
            await second.aclose()
    assert any("crashed" in r.getMessage() and r.exc_info for r in caplog.records)
