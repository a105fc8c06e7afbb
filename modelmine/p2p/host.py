"""The trio shell around the overlay: real links, dialing, bootstrap announcements, timers.

``Host`` owns every peer link in its nursery. Each link has a reader (frames into the
overlay) and a writer draining a bounded queue, so a slow peer never stalls the others: when its
queue is full, frames to it are dropped and counted. Everything the overlay decides comes back
as actions, which ``_apply`` carries out without blocking.
"""

from __future__ import annotations

import functools
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import psutil
import trio
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.p2p import transport
from modelmine.p2p.membership import MemberChange
from modelmine.p2p.overlay import (
    Action,
    Deliver,
    Dial,
    Disconnect,
    MembersChanged,
    Overlay,
    PeerLearned,
    Request,
    Response,
    Send,
    request_frame,
    response_frame,
)
from modelmine.p2p.peerstore import PeerStore
from modelmine.signing import Signed

log = logging.getLogger(__name__)

SEND_QUEUE: Final = 512
REQUESTS_PER_PEER: Final = 4  # served at once for one peer; more get "busy"
REQUEST_TIMEOUT: Final = 15.0


class RequestFailed(Exception):
    """A request to a peer got an error, no answer in time, or the peer was unreachable.

    ``why`` says which: "unreachable", "timeout", "busy" (the peer serves too many of our
    requests already) or "error" (any other error answer)."""

    def __init__(self, message: str, why: str = "error") -> None:
        super().__init__(message)
        self.why = why


class RequestError(Exception):
    """Raised by a request handler: the text goes back to the asking peer."""


RequestHandler = Callable[[bytes, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    body: dict[str, Any] | None = None
    error: str | None = None


TICK: Final = 1.0  # at most this long between overlay ticks; sooner when it asks
MIN_TICK: Final = 0.05
DIRECT_DIALS: Final = 16  # links being opened at once to carry direct frames
DIRECT_QUEUE: Final = 8  # direct frames held per peer while its link opens
DIAL_TIMEOUT: Final = 10.0
BOOTSTRAP_EVERY: Final = 30.0
BOOTSTRAP_EVERY_WHEN_ALONE: Final = 3.0
PERSIST_EVERY: Final = 5.0


@dataclass(frozen=True)
class _Close:
    """Queued after a link's pending frames: close it once they are sent."""

    reason: str


@dataclass
class _LinkEntry:
    link: transport.PeerLink
    queue: trio.MemorySendChannel[object]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    dropped: int = 0


@dataclass(frozen=True)
class HostStatistics:
    links: int
    dropped_frames: int
    inbound: int = 0  # connections peers hold open to our listener (half-open included)
    half_open: int = 0  # of which still in the handshake
    refused_connections: int = 0  # turned away at accept by the inbound limits
    serving: int = 0  # requests of peers being served now


class Host:
    def __init__(
        self,
        identity: SigningKey,
        network_id: bytes,
        overlay: Overlay,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "",
        bootstrap: tuple[str, ...] = (),
        peerstore: PeerStore | None = None,
        on_deliver: Callable[[Deliver], None] | None = None,
        on_members: Callable[[tuple[MemberChange, ...]], None] | None = None,
        rng: random.Random | None = None,
        advertise: str | None = None,
        limits: transport.InboundLimits | None = None,
    ) -> None:
        self.advertise = advertise
        self.gate = transport.ConnectionGate(limits)
        self.identity = identity
        self.node_id = bytes(identity.verify_key)
        self.network_id = network_id
        self.overlay = overlay
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.name = name
        self.bootstrap = bootstrap
        self.peerstore = peerstore
        self.on_deliver = on_deliver
        self.on_members = on_members
        self.address = ""
        self._rng = rng or random.Random()
        self._links: dict[bytes, _LinkEntry] = {}
        self._nursery: trio.Nursery | None = None
        self._to_persist: dict[bytes, tuple[bytes, str, str]] = {}
        self._to_ban: dict[bytes, float] = {}
        self._dropped = 0
        self._handlers: dict[str, RequestHandler] = {}
        self._pending: dict[tuple[bytes, int], _Pending] = {}
        self._serving: dict[bytes, int] = {}
        self._request_ids = 0
        self._linked: dict[bytes, trio.Event] = {}
        self._direct: dict[bytes, list[bytes]] = {}  # peer -> frames waiting for its link

    # ---- lifecycle ----

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        self._load_peers()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            serve = functools.partial(
                transport.serve_peers,
                identity=self.identity,
                network_id=self.network_id,
                gate=self.gate,
            )
            port = await nursery.start(serve, self._serve_link, self.listen_host, self.listen_port)
            self.address = self.advertise or f"ws://{_advertised_host(self.listen_host)}:{port}"
            self.overlay.set_self_record(self.address, self.name, time.time())
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self._persist_loop)
            if self.bootstrap:
                nursery.start_soon(self._bootstrap_loop)
            task_status.started(self.address)

    def publish(self, topic: str, statement: Signed) -> None:
        self._apply(self.overlay.publish(topic, statement, trio.current_time()))

    def follow(self, topic: str, publisher: bytes) -> None:
        """Receive the followed ``topic`` from ``publisher`` (dialing it) until unfollowed."""
        self._apply(self.overlay.follow(topic, publisher, trio.current_time()))

    def unfollow(self, topic: str) -> None:
        self._apply(self.overlay.unfollow(topic))

    def register_handler(self, kind: str, handler: RequestHandler) -> None:
        self._handlers[kind] = handler

    def is_linked(self, peer: bytes) -> bool:
        return peer in self._links

    async def wait_linked(self, peer: bytes, within: float = DIAL_TIMEOUT) -> bool:
        """Make sure there is a link to ``peer``, dialing its known address if needed."""
        if peer in self._links:
            return True
        if self.overlay.address_of(peer) is None:
            return False
        event = self._linked.setdefault(peer, trio.Event())
        self._apply(self.overlay.dial_now(peer, trio.current_time()))
        with trio.move_on_after(within):
            await event.wait()
        return peer in self._links

    async def request(
        self, peer: bytes, kind: str, body: dict[str, Any], within: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Ask ``peer`` (dialing it if needed) and wait for its answer."""
        if not await self.wait_linked(peer, within):
            raise RequestFailed(f"peer {peer.hex()[:8]} is not reachable", "unreachable")
        self._request_ids += 1
        key = (peer, self._request_ids)
        pending = self._pending[key] = _Pending()
        try:
            self._apply([Send(peer, request_frame(self._request_ids, kind, body))])
            with trio.move_on_after(within):
                await pending.done.wait()
        finally:
            del self._pending[key]
        if not pending.done.is_set():
            raise RequestFailed(
                f"no answer from {peer.hex()[:8]} to {kind} within {within} s", "timeout"
            )
        if pending.error is not None or pending.body is None:
            why = "busy" if pending.error == "busy" else "error"
            raise RequestFailed(f"{peer.hex()[:8]} answered {kind}: {pending.error}", why)
        return pending.body

    async def _serve_request(self, request: Request) -> None:
        handler = self._handlers.get(request.kind)
        body: dict[str, Any] = {}
        error: str | None = None
        try:
            if handler is None:
                error = f"unknown request {request.kind!r}"
            else:
                body = await handler(request.peer, request.body)
        except RequestError as exc:
            error = str(exc)
        except wire.WireError as exc:
            error = f"bad request: {exc}"
        except Exception:  # a bug in one service must not take the node down; say so once
            log.exception("request %s from %s failed", request.kind, request.peer.hex()[:8])
            error = "internal error"
        finally:
            left = self._serving[request.peer] - 1
            if left:
                self._serving[request.peer] = left
            else:
                del self._serving[request.peer]  # one entry per peer served now, no more
        self._apply([Send(request.peer, response_frame(request.id, body, error))])

    def statistics(self) -> HostStatistics:
        gate = self.gate
        return HostStatistics(
            len(self._links),
            self._dropped,
            inbound=gate.inbound,
            half_open=gate.half_open,
            refused_connections=gate.refused,
            serving=sum(self._serving.values()),
        )

    def penalize(self, peer: bytes, points: float, reason: str) -> None:
        """For services above the overlay whose peers misbehave (see Overlay.penalize)."""
        self._apply(self.overlay.penalize(peer, points, reason, trio.current_time()))

    def link_info(self) -> list[tuple[bytes, str, bool]]:
        return [(p, e.link.remote_address, e.link.initiator) for p, e in self._links.items()]

    # ---- actions ----

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                entry = self._links.get(action.peer)
                if entry is None:
                    if action.direct:
                        self._send_direct(action)
                    continue
                try:
                    entry.queue.send_nowait(action.frame)
                except (trio.WouldBlock, trio.ClosedResourceError):
                    entry.dropped += 1
                    self._dropped += 1
            elif isinstance(action, Deliver):
                if self.on_deliver is not None:
                    self.on_deliver(action)
            elif isinstance(action, Dial):
                assert self._nursery is not None
                self._nursery.start_soon(self._dial, action.node_id, action.address)
            elif isinstance(action, Disconnect):
                self._disconnect(action)
            elif isinstance(action, PeerLearned):
                self._to_persist[action.node_id] = (action.node_id, action.address, action.name)
            elif isinstance(action, Request):
                if self._serving.get(action.peer, 0) >= REQUESTS_PER_PEER:
                    frame = response_frame(action.id, {}, "busy")
                    self._apply([Send(action.peer, frame)])
                    continue
                self._serving[action.peer] = self._serving.get(action.peer, 0) + 1
                assert self._nursery is not None
                self._nursery.start_soon(self._serve_request, action)
            elif isinstance(action, Response):
                pending = self._pending.get((action.peer, action.id))
                if pending is not None and not pending.done.is_set():
                    pending.body, pending.error = action.body, action.error
                    pending.done.set()
            elif isinstance(action, MembersChanged) and self.on_members is not None:
                self.on_members(action.changes)

    def _send_direct(self, action: Send) -> None:
        """A direct frame (membership probes, follows) to a node we have no link to: open one."""
        waiting = self._direct.get(action.peer)
        if waiting is not None:
            if len(waiting) < DIRECT_QUEUE:
                waiting.append(action.frame)
            return
        address = self.overlay.address_of(action.peer)
        if address is None or len(self._direct) >= DIRECT_DIALS or self._nursery is None:
            return
        self._direct[action.peer] = [action.frame]
        self._nursery.start_soon(self._dial, action.peer, address)

    def _disconnect(self, action: Disconnect) -> None:
        log.warning("closing link to %s: %s", action.peer.hex()[:8], action.reason)
        if action.banned_until is not None:
            remaining = action.banned_until - trio.current_time()
            self._to_ban[action.peer] = time.time() + remaining
        entry = self._links.get(action.peer)
        if entry is None:
            return
        try:
            entry.queue.send_nowait(_Close(action.reason))  # after the frames already queued
        except (trio.WouldBlock, trio.ClosedResourceError):
            entry.scope.cancel()

    # ---- links ----

    async def _serve_link(self, link: transport.PeerLink) -> None:
        await self._run_link(link)

    async def _dial(self, node_id: bytes, address: str) -> None:
        assert self._nursery is not None
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                link = await transport.connect_peer(
                    self._nursery,
                    address,
                    identity=self.identity,
                    network_id=self.network_id,
                    expected_peer=node_id,
                )
        except (OSError, trio.TooSlowError, transport.ConnectFailed) as exc:
            log.info(
                "dial %s at %s failed: %s", node_id.hex()[:8], address, exc or type(exc).__name__
            )
            self.overlay.on_dial_failed(node_id, trio.current_time())
            self._direct.pop(node_id, None)
            return
        await self._run_link(link)

    async def _run_link(self, link: transport.PeerLink) -> None:
        peer = link.peer_id
        existing = self._links.get(peer)
        if existing is not None:
            # Both sides dialed at once. Keep the link dialed by the smaller id, on both ends.
            if link.initiator != (self.node_id < peer):
                await link.aclose(1000, "duplicate connection")
                if link.initiator:
                    self.overlay.on_dial_failed(peer, trio.current_time())
                return
            del self._links[peer]
            existing.scope.cancel()
        send, receive = trio.open_memory_channel[object](SEND_QUEUE)
        entry = _LinkEntry(link, send)
        self._links[peer] = entry
        for frame in self._direct.pop(peer, []):
            send.send_nowait(frame)
        waiting = self._linked.pop(peer, None)
        if waiting is not None:
            waiting.set()
        try:
            with entry.scope:
                self._apply(self.overlay.on_link_up(peer, link.initiator, trio.current_time()))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_link, link, receive, nursery.cancel_scope)
                    await self._read_link(link)
                    nursery.cancel_scope.cancel()
        finally:
            send.close()
            if self._links.get(peer) is entry:
                del self._links[peer]
                self._apply(self.overlay.on_link_down(peer, trio.current_time()))
            with trio.CancelScope(shield=True):
                await link.aclose()

    async def _read_link(self, link: transport.PeerLink) -> None:
        try:
            while True:
                data = await link.receive()
                self._apply(self.overlay.on_frame(link.peer_id, data, trio.current_time()))
        except transport.LinkClosed as exc:
            log.info("link to %s closed: %s", link.peer_id.hex()[:8], exc)

    async def _write_link(
        self,
        link: transport.PeerLink,
        queue: trio.MemoryReceiveChannel[object],
        scope: trio.CancelScope,
    ) -> None:
        try:
            async for frame in queue:
                if isinstance(frame, _Close):
                    await link.aclose(transport.CLOSE_POLICY_VIOLATION, frame.reason)
                    break
                assert isinstance(frame, bytes)
                await link.send(frame)
        except transport.LinkClosed:
            pass
        scope.cancel()

    # ---- timers ----

    async def _tick_loop(self) -> None:
        while True:
            self._apply(self.overlay.tick(trio.current_time()))
            wait = self.overlay.next_tick() - trio.current_time()
            await trio.sleep(min(TICK, max(MIN_TICK, wait)))

    async def _persist_loop(self) -> None:
        while True:
            await trio.sleep(PERSIST_EVERY)
            await self._persist()

    async def _persist(self) -> None:
        if self.peerstore is None:
            return
        peers, bans = list(self._to_persist.values()), dict(self._to_ban)
        self._to_persist.clear()
        self._to_ban.clear()
        store = self.peerstore
        if peers:
            await trio.to_thread.run_sync(store.remember, peers, time.time())
        if bans:
            await trio.to_thread.run_sync(_store_bans, store, bans)

    def _load_peers(self) -> None:
        if self.peerstore is None:
            return
        wall, mono = time.time(), trio.current_time()
        for peer in self.peerstore.load():
            self.overlay.add_known(peer.node_id, peer.address, peer.name)
            if peer.banned_until > wall:
                self.overlay.ban(peer.node_id, mono + (peer.banned_until - wall))

    async def _bootstrap_loop(self) -> None:
        while True:
            for url in self.bootstrap:
                await self._ask_bootstrap(url)
            alone = not self._links
            await trio.sleep(BOOTSTRAP_EVERY_WHEN_ALONE if alone else BOOTSTRAP_EVERY)

    async def _ask_bootstrap(self, url: str) -> None:
        record = self.overlay.self_record
        assert self._nursery is not None and record is not None
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                link = await transport.connect_peer(
                    self._nursery, url, identity=self.identity, network_id=self.network_id
                )
                try:
                    await link.send(wire.encode({"t": "announce", "record": record.raw}))
                    reply = wire.expect_map(wire.decode(await link.receive()), "bootstrap reply")
                finally:
                    with trio.CancelScope(shield=True):
                        await link.aclose()
            records = wire.field(reply, "records", list, "bootstrap reply")
            now = trio.current_time()
            for raw in records[:64]:
                if isinstance(raw, bytes):
                    self._apply(self.overlay.add_record(raw, now))
        except (OSError, trio.TooSlowError, transport.ConnectFailed, wire.WireError) as exc:
            log.info("bootstrap %s unavailable: %s", url, exc or type(exc).__name__)


def _store_bans(store: PeerStore, bans: dict[bytes, float]) -> None:
    for node_id, until in bans.items():
        store.ban(node_id, until)


def _advertised_host(listen_host: str) -> str:
    """The address peers should dial: the listen host, or for a wildcard the first
    non-loopback IPv4 address of this machine (loopback if it has none)."""
    if listen_host not in ("0.0.0.0", "::", ""):
        return listen_host
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return "127.0.0.1"
