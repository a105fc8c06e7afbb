"""Authenticated, encrypted peer links over trio-websocket: a thin shell around the handshake.

A dialer needs only ``ws://host:port`` (and may pin the peer's id). Each side runs the sans-IO
:class:`~modelmine.p2p.handshake.Handshake` over binary websocket messages within a deadline,
then every message is one sealed frame (see :mod:`modelmine.p2p.channel`).

Close codes: 1000 normal, 1003 text message, 1008 handshake refused or timed out, or a frame
that failed to open, 1009 message over the size limit (sent by trio-websocket), 1011 a send was
interrupted midway or the link handler crashed.

A listener admits a new TCP connection only under the caps of :class:`InboundLimits` (at once:
connections in all, connections still in the handshake, and both per remote address), counted
by a :class:`ConnectionGate`; one over a cap is answered ``503`` and closed before any byte of
it is read. Until
the peer has authenticated, at most ``PRE_AUTH_BYTES`` are read from it: after that the
listener stops reading (TCP pushes back) until the handshake completes or times out, so a
connection that has not proved an identity pins no more memory than that.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, NoReturn, cast

import trio
import trio_websocket
from nacl.signing import SigningKey
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from modelmine.p2p.admission import ConnectionGate, InboundLimits, InboundSlot
from modelmine.p2p.channel import MAX_FRAME, MAX_PLAINTEXT, ChannelError
from modelmine.p2p.handshake import Handshake, HandshakeError, Session, short_id

__all__ = [
    "CLOSE_HANDSHAKE_FAILED",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_TOO_BIG",
    "CLOSE_UNSUPPORTED_DATA",
    "MAX_PLAINTEXT",
    "PRE_AUTH_BYTES",
    "ConnectFailed",
    "ConnectionGate",
    "InboundLimits",
    "LinkClosed",
    "LinkStatistics",
    "PeerLink",
    "TransportError",
    "connect_peer",
    "serve_peers",
]

log = logging.getLogger(__name__)

CLOSE_NORMAL: Final = 1000
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_HANDSHAKE_FAILED: Final = CLOSE_POLICY_VIOLATION
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011

# Received messages waiting to be read, per link: at most this many times MAX_FRAME bytes.
MESSAGE_QUEUE_SIZE: Final = 4
RECEIVE_BUFFER_SIZE: Final = 64 * 1024
# How long a close handshake may take before the TCP connection is dropped anyway.
CLOSE_TIMEOUT: Final = 2.0
# A websocket close reason must fit in 123 bytes of UTF-8.
_MAX_CLOSE_REASON: Final = 120
# Bytes read from an inbound connection before its peer authenticated: the HTTP upgrade
# request (a few hundred bytes from our dialer), hs1 and hs3 fit many times over.
PRE_AUTH_BYTES: Final = 16 * 1024
# The largest websocket message a responder accepts before it has sent hs2 (an honest dialer
# sends only hs1 then); after hs2 the link's own limit applies, so frames a dialer sends right
# behind hs3 are never refused for size (the byte budget above holds them back instead).
HELLO_MESSAGE_LIMIT: Final = 1024
# Refused connections are logged at most once per this many seconds, with a count.
REFUSAL_LOG_EVERY: Final = 10.0
REFUSAL_SEND_TIMEOUT: Final = 1.0
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class _GatedStream(trio.abc.Stream):
    """An inbound TCP stream that yields at most ``budget`` bytes until :meth:`open` is called;
    past that a read waits (TCP pushes back) for the handshake to finish or the stream to close.
    A wait instead of an error: an honest dialer sends its first frames right after hs3, and
    those may arrive before the handshake task has looked at hs3."""

    def __init__(self, stream: trio.SocketStream, remote: str, budget: int) -> None:
        self._stream = stream
        self._remote = remote
        self._budget: int | None = budget
        self._opened = trio.Event()
        self._closed = False

    def __repr__(self) -> str:  # trio-websocket shows a non-socket stream by its repr
        return self._remote

    def open(self) -> None:
        self._budget = None
        self._opened.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._budget is not None and self._budget <= 0:
            await self._opened.wait()
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        budget = self._budget
        if budget is None:
            return await self._stream.receive_some(max_bytes)
        data = await self._stream.receive_some(min(max_bytes or budget, budget))
        if self._budget is not None:
            self._budget -= len(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._closed = True
        self._opened.set()
        await self._stream.aclose()


@dataclass
class _Inbound:
    slot: InboundSlot
    stream: _GatedStream

    def authenticated(self) -> None:
        self.slot.authenticated()
        self.stream.open()


# The inbound connection the current task serves (set per connection task by serve_peers).
_INBOUND: contextvars.ContextVar[_Inbound | None] = contextvars.ContextVar(
    "modelmine_inbound", default=None
)


class _RefusalLog:
    """Logs refused connections at most once per REFUSAL_LOG_EVERY seconds, with a count."""

    def __init__(self) -> None:
        self._count = 0
        self._next = 0.0

    def note(self, remote: str, reason: str) -> None:
        self._count += 1
        now = trio.current_time()
        if now >= self._next:
            log.warning(
                "refusing a connection from %s: %s (%d refused since the last report)",
                remote,
                reason,
                self._count,
            )
            self._count = 0
            self._next = now + REFUSAL_LOG_EVERY


class TransportError(Exception):
    """Base of the errors of this module; the text says what happened."""


class ConnectFailed(TransportError):
    """No authenticated link: unreachable, refused, wrong network or peer id, or too slow."""


class LinkClosed(TransportError):
    """The link is closed (by either side, or because the peer sent something invalid)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LinkStatistics:
    frames_sent: int
    bytes_sent: int
    frames_received: int
    bytes_received: int


def _endpoint_text(endpoint: object) -> str:
    address = getattr(endpoint, "address", None)
    port = getattr(endpoint, "port", None)
    if address is None or port is None:
        return str(endpoint)
    host = str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _close_reason(reason: str) -> str:
    encoded = reason.encode()
    if len(encoded) <= _MAX_CLOSE_REASON:
        return reason
    return encoded[:_MAX_CLOSE_REASON].decode(errors="ignore")


def _describe_close(exc: ConnectionClosed) -> tuple[int | None, str]:
    reason = exc.reason
    if reason is None:
        return None, "connection closed"
    text = f"{reason.code} {reason.name}"
    if reason.reason:
        text += f": {reason.reason}"
    return reason.code, text


async def _close_websocket(ws: WebSocketConnection, code: int, reason: str) -> None:
    """Close within CLOSE_TIMEOUT, even from a cancelled scope; the TCP stream always ends."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(CLOSE_TIMEOUT):
            await ws.aclose(code, _close_reason(reason))
        # trio-websocket skips closing the stream when the websocket closed on its own
        # (e.g. after refusing an oversized message); closing it again is a no-op.
        await ws._close_stream()


class PeerLink:
    """An authenticated, encrypted message link to one peer.

    ``send`` may be called from several tasks (frames go out in call order); ``receive`` from
    one task at a time. Any frame that fails to open closes the link with code 1008.
    """

    def __init__(
        self, ws: WebSocketConnection, session: Session, remote_address: str, *, initiator: bool
    ) -> None:
        self.peer_id: bytes = session.peer_id
        self.remote_address: str = remote_address
        self.initiator: bool = initiator
        self.transcript_hash: bytes = session.transcript_hash
        self._ws = ws
        self._sealer = session.sender
        self._opener = session.receiver
        self._send_lock = trio.Lock()
        self._receiving = False
        self._broken: str | None = None
        self._closed_reason: str | None = None
        self._bytes_sent = 0
        self._bytes_received = 0

    def __repr__(self) -> str:
        side = "to" if self.initiator else "from"
        return f"<PeerLink {side} {short_id(self.peer_id)} at {self.remote_address}>"

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None or self._ws.closed is not None

    def statistics(self) -> LinkStatistics:
        """Frames and plaintext bytes moved so far."""
        return LinkStatistics(
            frames_sent=self._sealer.counter,
            bytes_sent=self._bytes_sent,
            frames_received=self._opener.counter,
            bytes_received=self._bytes_received,
        )

    async def send(self, data: bytes) -> None:
        """Send one message of at most MAX_PLAINTEXT bytes.

        Raises ValueError for a larger message (the link stays open) and LinkClosed if the
        link is closed.
        """
        if len(data) > MAX_PLAINTEXT:
            raise ValueError(f"message of {len(data)} bytes exceeds the limit of {MAX_PLAINTEXT}")
        # Frames must leave in counter order, so sends take turns. The uncontended path skips
        # the lock's own checkpoint; send_message below is the checkpoint.
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            if self._broken is not None:
                await self._fail(CLOSE_INTERNAL_ERROR, self._broken)
            try:
                frame = self._sealer.seal(data)
            except ChannelError as exc:
                await self._fail(CLOSE_INTERNAL_ERROR, str(exc))
            try:
                await self._ws.send_message(frame)
            except ConnectionClosed as exc:
                code, text = _describe_close(exc)
                raise LinkClosed(f"{self!r} is closed ({text})", code) from None
            except BaseException:
                # The frame used a counter but may not have gone out: later frames would not
                # open at the peer, so this link can carry nothing more.
                self._broken = "a send was interrupted midway"
                raise
            self._bytes_sent += len(data)
        finally:
            self._send_lock.release()

    async def receive(self) -> bytes:
        """The next message from the peer. Raises LinkClosed once the link is closed."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this link")
        self._receiving = True
        try:
            try:
                frame = await self._ws.get_message()
            except ConnectionClosed as exc:
                self._note_closed(exc)
                raise LinkClosed(
                    f"{self!r} is closed ({self._closed_reason})", self._code(exc)
                ) from None
            if isinstance(frame, str):
                await self._fail(CLOSE_UNSUPPORTED_DATA, "text message on a binary link")
            try:
                data = self._opener.open(frame)
            except ChannelError as exc:
                await self._fail(CLOSE_POLICY_VIOLATION, str(exc))
            self._bytes_received += len(data)
            return data
        finally:
            self._receiving = False

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the link (idempotent); returns within CLOSE_TIMEOUT even if the peer stalls."""
        if self._closed_reason is None:
            self._closed_reason = f"closed by us: {code} {reason}".rstrip()
        await _close_websocket(self._ws, code, reason)

    async def _fail(self, code: int, reason: str) -> NoReturn:
        """Log why, close the link with ``code`` and raise LinkClosed."""
        log.warning("closing %r: %s", self, reason)
        self._closed_reason = reason
        await _close_websocket(self._ws, code, reason)
        raise LinkClosed(f"{self!r} closed: {reason}", code)

    def _note_closed(self, exc: ConnectionClosed) -> None:
        if self._closed_reason is not None:
            return
        code, text = _describe_close(exc)
        self._closed_reason = text
        if code == CLOSE_TOO_BIG:
            log.warning("%r closed: %s", self, text)
        elif code == CLOSE_NORMAL:
            log.debug("%r closed: %s", self, text)
        else:
            log.info("%r closed: %s", self, text)

    @staticmethod
    def _code(exc: ConnectionClosed) -> int | None:
        return exc.reason.code if exc.reason is not None else None


async def _run_handshake(
    ws: WebSocketConnection, handshake: Handshake, on_reply: Callable[[], None] | None = None
) -> Session:
    """Move handshake frames until it is done. Raises HandshakeError or ConnectionClosed."""
    while not handshake.done:
        frame = await ws.get_message()
        if isinstance(frame, str):
            raise HandshakeError("text message during the handshake")
        reply = handshake.receive(frame)
        if reply is not None:
            await ws.send_message(reply)
            if on_reply is not None:
                on_reply()
    return handshake.result


class _ReaderGuard:
    """Stands in for the nursery trio-websocket starts a client's reader task in. A server
    that answers the upgrade with an HTTP error (a full listener says 503; any address may be
    a web server) makes that task raise ConnectionRejected, which would take the caller's
    whole nursery down with it: the guard catches it, closes the stream and ends the dial.
    It also ends the dial when the server hangs up before the upgrade (trio-websocket would
    wait for the upgrade until the dial's deadline)."""

    def __init__(self, nursery: trio.Nursery, upgrade: trio.CancelScope) -> None:
        self._nursery = nursery
        self._upgrade = upgrade
        self.refusal = ""

    def start_soon(self, fn: Callable[[], Awaitable[object]], *args: object) -> None:
        self._nursery.start_soon(self._guarded, fn)

    async def _guarded(self, fn: Callable[[], Awaitable[object]]) -> None:
        connection = getattr(fn, "__self__", None)
        try:
            await fn()
        except trio_websocket.HandshakeError as exc:
            status = getattr(exc, "status_code", None)
            self.refusal = f"HTTP {status}" if status is not None else repr(exc)
            self._upgrade.cancel()
            if isinstance(connection, WebSocketConnection):
                with trio.CancelScope(shield=True):
                    await connection._close_stream()
        else:
            if (
                isinstance(connection, WebSocketConnection)
                and connection.closed is not None
                and not connection._open_handshake.is_set()
            ):
                self.refusal = "closed before the upgrade"
                self._upgrade.cancel()


async def connect_peer(
    nursery: trio.Nursery,
    url: str,
    *,
    identity: SigningKey,
    network_id: bytes,
    expected_peer: bytes | None = None,
    handshake_timeout: float = 10.0,
    max_message_size: int = MAX_FRAME,
) -> PeerLink:
    """Dial ``ws://host:port`` and authenticate; the link's reader task runs in ``nursery``.

    Raises ConnectFailed if the peer cannot be reached, refuses us, is not who we expected,
    or does not finish within ``handshake_timeout`` seconds; for a failed check on our side
    its ``__cause__`` is the HandshakeError.
    """
    handshake = Handshake.initiator(identity, network_id, expected_peer)
    ws: WebSocketConnection | None = None
    session: Session | None = None
    code, reason = CLOSE_INTERNAL_ERROR, "dial abandoned"
    try:
        with trio.fail_after(handshake_timeout):
            with trio.CancelScope() as upgrade:
                guard = _ReaderGuard(nursery, upgrade)
                ws = await trio_websocket.connect_websocket_url(
                    cast(trio.Nursery, guard),
                    url,
                    message_queue_size=MESSAGE_QUEUE_SIZE,
                    max_message_size=max_message_size,
                    receive_buffer_size=RECEIVE_BUFFER_SIZE,
                )
            if ws is None:
                raise ConnectFailed(f"{url} refused the websocket: {guard.refusal}")
            await ws.send_message(handshake.start())
            session = await _run_handshake(ws, handshake)
    except HandshakeError as exc:
        code, reason = CLOSE_HANDSHAKE_FAILED, str(exc)
        raise ConnectFailed(f"handshake with {url} failed: {exc}") from exc
    except ConnectionClosed as exc:
        text = _describe_close(exc)[1]
        raise ConnectFailed(f"{url} closed the connection during the handshake ({text})") from None
    except trio.TooSlowError:
        code, reason = CLOSE_HANDSHAKE_FAILED, "handshake timeout"
        raise ConnectFailed(f"no handshake with {url} within {handshake_timeout} s") from None
    except (OSError, ValueError, trio_websocket.HandshakeError) as exc:
        raise ConnectFailed(f"cannot open a websocket to {url}: {exc!r}") from None
    finally:
        # On any failure, including after the peer closed: trio-websocket would leave a
        # client's TCP stream open.
        if session is None and ws is not None:
            await _close_websocket(ws, code, reason)
    return PeerLink(ws, session, _endpoint_text(ws.remote), initiator=True)


async def serve_peers(
    handler: Callable[[PeerLink], Awaitable[None]],
    host: str,
    port: int,
    *,
    identity: SigningKey,
    network_id: bytes,
    handshake_timeout: float = 10.0,
    max_message_size: int = MAX_FRAME,
    limits: InboundLimits | None = None,
    gate: ConnectionGate | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept peers on ``host:port`` forever; ``handler(link)`` runs for each authenticated one.

    Reports the bound port through ``task_status`` (so ``port=0`` works). Peers that fail the
    handshake or miss its deadline are logged and dropped; the listener keeps serving. The link
    is closed when ``handler`` returns. Connections are admitted under ``limits`` (counted by
    ``gate``, which a caller may pass to read its counts).
    """
    if gate is None:
        gate = ConnectionGate(limits)
    refusals = _RefusalLog()

    async def on_request(request: WebSocketRequest) -> None:
        remote = _endpoint_text(request.remote)
        ws: WebSocketConnection | None = None
        session: Session | None = None
        reason = "handshake timeout"
        with trio.move_on_after(handshake_timeout) as deadline:
            try:
                ws = await request.accept()
                accepted = ws

                def after_hs2() -> None:
                    accepted._max_message_size = max_message_size  # see HELLO_MESSAGE_LIMIT

                session = await _run_handshake(
                    ws, Handshake.responder(identity, network_id), after_hs2
                )
            except HandshakeError as exc:
                reason = str(exc)
                log.warning("refusing peer at %s: %s", remote, reason)
            except ConnectionClosed as exc:
                reason = "left during the handshake"
                log.info(
                    "peer at %s left during the handshake (%s)", remote, _describe_close(exc)[1]
                )
            else:
                inbound = _INBOUND.get()
                if inbound is not None:
                    inbound.authenticated()
        if deadline.cancelled_caught:
            log.info("dropping peer at %s: no handshake within %s s", remote, handshake_timeout)
        if session is None or ws is None:
            if ws is not None:
                await _close_websocket(ws, CLOSE_HANDSHAKE_FAILED, reason)
            return
        link = PeerLink(ws, session, remote, initiator=False)
        log.debug("accepted %r", link)
        try:
            await handler(link)
        except LinkClosed:
            pass
        except Exception:
            log.exception("handler for %r crashed", link)
            await link.aclose(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            await link.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    server = trio_websocket.WebSocketServer(
        on_request,
        listeners,
        message_queue_size=MESSAGE_QUEUE_SIZE,
        max_message_size=min(max_message_size, HELLO_MESSAGE_LIMIT),
        receive_buffer_size=RECEIVE_BUFFER_SIZE,
        connect_timeout=handshake_timeout,
        disconnect_timeout=CLOSE_TIMEOUT,
    )

    async def on_connection(stream: trio.SocketStream) -> None:
        try:
            host, remote_port, *_ = stream.socket.getpeername()
        except OSError:  # already gone
            await stream.aclose()
            return
        remote = f"[{host}]:{remote_port}" if ":" in host else f"{host}:{remote_port}"
        slot = gate.admit(host)
        if isinstance(slot, str):
            refusals.note(remote, slot)
            # Say so without reading anything (a dialer fails at once instead of waiting out
            # its deadline), then hang up.
            with trio.move_on_after(REFUSAL_SEND_TIMEOUT):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(_REFUSAL)
            await trio.aclose_forcefully(stream)
            return
        gated = _GatedStream(stream, remote, PRE_AUTH_BYTES)
        _INBOUND.set(_Inbound(slot, gated))
        try:
            # trio-websocket's own per-connection handler (what WebSocketServer.run serves),
            # called here so the gate sees each connection from accept to close.
            await server._handle_connection(gated)
        finally:
            slot.close()
            with trio.CancelScope(shield=True):
                await gated.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, on_connection, listeners)
        task_status.started(listeners[0].socket.getsockname()[1])
