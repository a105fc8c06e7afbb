"""The local control API server: JSON-RPC 2.0 over WebSocket on loopback, bearer-token auth.

The server knows nothing of what methods do. The node registers handlers and topics and
publishes events; the CLI and the TUI connect with :mod:`modelmine.control_client`, finding the
URL and token in ``<data-dir>/control.json`` (mode 0600). The protocol is described in
``docs/protocol.md`` (section "Control API").

Bounds: at most ``max_connections`` clients, ``max_in_flight`` concurrent method calls per
client (further requests wait: TCP backpressure), ``max_subscriptions`` per client, a queue of
``subscriber_queue_size`` events per subscription (when full the oldest events are dropped and
the subscriber is told ``{"dropped": n}``), messages of at most :data:`MAX_MESSAGE_SIZE`, and a
client that does not read a message for ``send_timeout`` seconds is disconnected. A connection
may stay idle for ever: subscribers legitimately wait for hours, and a local client that dies
closes its socket.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import json
import logging
import os
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

__all__ = [
    "CONTROL_FILE",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_MESSAGE_SIZE",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "TOO_MANY_SUBSCRIPTIONS",
    "UNKNOWN_TOPIC",
    "ControlAuthError",
    "ControlError",
    "ControlInfo",
    "ControlServer",
    "ControlStatistics",
    "ControlTimeout",
    "ControlUnavailable",
    "EventBuffer",
    "Handler",
    "InvalidParams",
    "RpcError",
    "new_token",
    "read_control_info",
    "remove_control_info",
    "write_control_info",
]

logger = logging.getLogger(__name__)

CONTROL_FILE: Final = "control.json"
# Largest JSON text accepted or sent, in characters (trio-websocket measures len() of the str).
MAX_MESSAGE_SIZE: Final = 1024 * 1024
# An event must leave room for the notification envelope around it.
_MAX_EVENT_SIZE: Final = MAX_MESSAGE_SIZE - 1024
# Received messages trio-websocket buffers per connection before it stops reading the socket.
MESSAGE_QUEUE_SIZE: Final = 16
HANDSHAKE_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0
_MAX_TOPIC_LENGTH: Final = 200
_MIN_TOKEN_LENGTH: Final = 16

# JSON-RPC 2.0 error codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Codes of the control layer itself: -32000..-32009. Node methods use -32010..-32099 or
# positive codes.
UNKNOWN_TOPIC: Final = -32001
TOO_MANY_SUBSCRIPTIONS: Final = -32002

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
"""A method: takes the request's params object, returns a JSON-able result, or raises
:class:`InvalidParams` / :class:`RpcError`. Any other exception is an internal error."""

T = TypeVar("T")


class ControlError(Exception):
    """Base of every control API failure."""


class ControlUnavailable(ControlError):
    """The node cannot be reached. ``str()`` is one line meant for people."""


class ControlAuthError(ControlUnavailable):
    """The node refused our token (HTTP 401)."""


class ControlTimeout(ControlUnavailable):
    """A call got no answer in time. The connection stays usable."""


class RpcError(ControlError):
    """A JSON-RPC error object: raised by handlers, and by the client when a call fails."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"{self.message} (error {self.code})"


class InvalidParams(RpcError):
    """The params of a call are wrong; the message says how."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(INVALID_PARAMS, message, data)


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


# ---------------------------------------------------------------------------------------------
# control.json


@dataclass(frozen=True)
class ControlInfo:
    """What a client needs to reach the node that owns a data dir."""

    url: str
    token: str
    pid: int

    def owner_alive(self) -> bool:
        """Whether the process that wrote this file still exists."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by someone else
            return True
        return True


def _unavailable(data_dir: Path, reason: str) -> ControlUnavailable:
    return ControlUnavailable(
        f"no node is running for data dir {data_dir} "
        f"({reason}; start one with: modelmine node --data-dir {data_dir})"
    )


def write_control_info(data_dir: Path, info: ControlInfo) -> None:
    """Atomically write ``<data_dir>/control.json``, readable by its owner only (0600)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / CONTROL_FILE
    tmp = data_dir / f".{CONTROL_FILE}.{os.getpid()}.tmp"
    payload = (json.dumps(asdict(info), indent=2) + "\n").encode("utf-8")
    tmp.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_control_info(data_dir: Path) -> ControlInfo:
    """Read ``<data_dir>/control.json``; :class:`ControlUnavailable` if missing or corrupt."""
    path = data_dir / CONTROL_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _unavailable(data_dir, f"no {CONTROL_FILE}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ControlUnavailable(f"cannot read {path}: {exc}") from None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not (
        isinstance(obj, dict)
        and isinstance(obj.get("url"), str)
        and isinstance(obj.get("token"), str)
        and isinstance(obj.get("pid"), int)
        and not isinstance(obj.get("pid"), bool)
        and obj["pid"] > 0
    ):
        raise ControlUnavailable(
            f"{path} is corrupt (expected url, token and pid); delete it if no node is running"
        )
    return ControlInfo(url=obj["url"], token=obj["token"], pid=obj["pid"])


def remove_control_info(data_dir: Path, *, token: str | None = None) -> None:
    """Delete ``<data_dir>/control.json`` if present (only if it holds ``token``, when given)."""
    path = data_dir / CONTROL_FILE
    if token is not None:
        try:
            if read_control_info(data_dir).token != token:
                return  # another node's file: not ours to delete
        except ControlUnavailable:
            return
    path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Events


class EventBuffer(Generic[T]):
    """A bounded FIFO that, when full, drops its oldest item and counts the loss.

    Pure (no trio): the owner wakes its consumer. Consumers call :meth:`take_dropped` before
    :meth:`pop`, so a gap is reported just before the first item after it.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: deque[T] = deque(maxlen=capacity)
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Append ``item``; return True if the oldest item had to be dropped for it."""
        full = len(self._items) == self._items.maxlen
        if full:
            self._dropped += 1
        self._items.append(item)
        return full

    def take_dropped(self) -> int:
        """How many items were dropped since the last call."""
        dropped, self._dropped = self._dropped, 0
        return dropped

    def peek(self) -> T | None:
        """The oldest item without removing it, or None when empty."""
        return self._items[0] if self._items else None

    def pop(self) -> T | None:
        """The oldest item, or None when empty."""
        return self._items.popleft() if self._items else None

    def clear(self) -> None:
        self._items.clear()
        self._dropped = 0


def _encode(value: Any) -> str:
    """Strict JSON (no NaN or Infinity), compact."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _notification(topic: str, subscription: str, event_json: str) -> str:
    return (
        '{"jsonrpc":"2.0","method":"event","params":{"topic":'
        + _encode(topic)
        + ',"subscription":'
        + _encode(subscription)
        + ',"event":'
        + event_json
        + "}}"
    )


def _error_response(request_id: Any, code: int, message: str, data: Any = None) -> str:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    try:
        return _encode({"jsonrpc": "2.0", "id": request_id, "error": error})
    except (TypeError, ValueError):
        logger.error("control API: error data of %r is not JSON; sent without it", message)
        del error["data"]
        return _encode({"jsonrpc": "2.0", "id": request_id, "error": error})


@dataclass(frozen=True)
class ControlStatistics:
    connections: int
    subscriptions: int
    events_dropped: int


class _Subscription:
    __slots__ = ("buffer", "id", "ready", "session", "topic")

    def __init__(self, sub_id: str, topic: str, session: _Session, capacity: int) -> None:
        self.id = sub_id
        self.topic = topic
        self.session = session
        # (publish sequence number, concrete topic, event JSON); the concrete topic differs
        # from self.topic for a family subscription such as "progress:".
        self.buffer: EventBuffer[tuple[int, str, str]] = EventBuffer(capacity)
        # Events are held back until the client has the subscribe response, so that it can
        # always tell which subscription a notification belongs to.
        self.ready = False

    def next_seq(self) -> int | None:
        """Sequence number of the next event to send, None if there is none (or not yet)."""
        head = self.buffer.peek()
        return head[0] if head is not None and self.ready else None

    def next_message(self) -> str | None:
        """The next notification: the lost-events marker if events were dropped, else the
        oldest queued event."""
        dropped = self.buffer.take_dropped()
        if dropped:
            return _notification(self.topic, self.id, f'{{"dropped":{dropped}}}')
        item = self.buffer.pop()
        return None if item is None else _notification(item[1], self.id, item[2])


class _ClientTooSlow(Exception):
    pass


@dataclass(frozen=True)
class _Request:
    id: str | int | float | None
    notification: bool
    method: str
    params: dict[str, Any]


class _BadRequest(Exception):
    def __init__(self, request_id: Any, code: int, message: str, *, respond: bool = True) -> None:
        super().__init__(message)
        self.id = request_id
        self.code = code
        self.message = message
        self.respond = respond


def _parse_request(obj: Any) -> _Request:
    if not isinstance(obj, dict):
        raise _BadRequest(None, INVALID_REQUEST, "a request must be a JSON object")
    notification = "id" not in obj
    request_id = obj.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None):
        raise _BadRequest(None, INVALID_REQUEST, "id must be a string, a number or null")
    if obj.get("jsonrpc") != "2.0":
        raise _BadRequest(request_id, INVALID_REQUEST, 'jsonrpc must be "2.0"')
    method = obj.get("method")
    if not isinstance(method, str):
        raise _BadRequest(request_id, INVALID_REQUEST, "method must be a string")
    params = obj.get("params")
    if params is None:
        params = {}
    elif isinstance(params, list):
        raise _BadRequest(
            request_id,
            INVALID_PARAMS,
            "params must be an object: positional parameters are not supported",
            respond=not notification,
        )
    elif not isinstance(params, dict):
        raise _BadRequest(request_id, INVALID_REQUEST, "params must be an object")
    return _Request(request_id, notification, method, params)


def _describe(endpoint: Endpoint | str) -> str:
    if isinstance(endpoint, Endpoint):
        return f"{endpoint.address}:{endpoint.port}"
    return str(endpoint)


# ---------------------------------------------------------------------------------------------
# Server


class ControlServer:
    """JSON-RPC 2.0 over WebSocket for one node's local clients.

    Register methods and topics, then ``url = await nursery.start(server.run)``; publish events
    from anywhere in the node with :meth:`publish`, which never blocks.
    """

    def __init__(
        self,
        token: str,
        *,
        max_connections: int = 32,
        max_in_flight: int = 16,
        max_subscriptions: int = 64,
        subscriber_queue_size: int = 256,
        send_timeout: float = 10.0,
    ) -> None:
        if (
            len(token) < _MIN_TOKEN_LENGTH
            or not token.isascii()
            or not token.isprintable()
            or any(c.isspace() for c in token)
        ):
            raise ValueError(
                f"control token must be at least {_MIN_TOKEN_LENGTH} printable ASCII characters "
                "without spaces"
            )
        self._token = token
        self._token_bytes = token.encode("ascii")
        self._max_connections = max_connections
        self._max_in_flight = max_in_flight
        self._max_subscriptions = max_subscriptions
        self._subscriber_queue_size = subscriber_queue_size
        self._send_timeout = send_timeout
        self._methods: dict[str, Handler] = {}
        self._topics: set[str] = set()
        self._prefixes: set[str] = set()
        self._subscribers: dict[str, set[_Subscription]] = {}
        self._sub_ids = itertools.count(1)
        self._event_seq = itertools.count()
        self._connections = 0
        self._events_dropped = 0
        self._url: str | None = None

    # -- registry -----------------------------------------------------------------------------

    def register(self, name: str, handler: Handler) -> None:
        """Make ``handler`` answer calls of method ``name``."""
        if not name or name.startswith("rpc."):
            raise ValueError(f"bad method name {name!r}: empty, or in the reserved rpc. space")
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        self._methods[name] = handler

    def register_topic(self, name_or_prefix: str) -> None:
        """Declare a topic; a name ending in ``:`` declares a family (``progress:`` allows
        ``progress:<anything>``, and subscribing to ``progress:`` itself receives them all)."""
        if not name_or_prefix or len(name_or_prefix) > _MAX_TOPIC_LENGTH:
            raise ValueError(f"bad topic {name_or_prefix!r}")
        if name_or_prefix.endswith(":"):
            self._prefixes.add(name_or_prefix)
        else:
            self._topics.add(name_or_prefix)

    def _topic_family(self, topic: str) -> str | None:
        """The registered prefix ``topic`` belongs to, if it is a concrete member of one."""
        for prefix in self._prefixes:
            if topic.startswith(prefix) and len(topic) > len(prefix):
                return prefix
        return None

    # -- events -------------------------------------------------------------------------------

    def publish(self, topic: str, event: Mapping[str, Any]) -> None:
        """Queue ``event`` for every subscriber of ``topic``. Never blocks.

        Raises ValueError or TypeError (a bug in the caller) when the topic is not registered,
        the event is not a strict-JSON object, is too large, or has a top-level ``dropped`` key,
        which is reserved for the marker of lost events.
        """
        family = None
        if topic not in self._topics:
            family = self._topic_family(topic)
            if family is None:
                raise ValueError(f"publish to unregistered topic {topic!r}")
        if not isinstance(event, Mapping):
            raise TypeError(f"an event must be a mapping, not {type(event).__name__}")
        if "dropped" in event:
            raise ValueError('the event key "dropped" is reserved for the lost-events marker')
        encoded = _encode(dict(event))
        seq = next(self._event_seq)
        if len(encoded) > _MAX_EVENT_SIZE:
            raise ValueError(f"event of {len(encoded)} characters is over {_MAX_EVENT_SIZE}")
        for key in (topic, family):
            if key is None:
                continue
            for sub in self._subscribers.get(key, ()):
                if sub.buffer.put((seq, topic, encoded)):
                    self._events_dropped += 1
                sub.session.wake()

    def _add_subscription(self, session: _Session, params: dict[str, Any]) -> _Subscription:
        topic = params.get("topic")
        if set(params) != {"topic"} or not isinstance(topic, str):
            raise InvalidParams('rpc.subscribe takes {"topic": string}')
        if not (topic in self._topics or topic in self._prefixes or self._topic_family(topic)):
            known = sorted(self._topics) + sorted(p + "<id>" for p in self._prefixes)
            raise RpcError(
                UNKNOWN_TOPIC, f"unknown topic {topic[:_MAX_TOPIC_LENGTH]!r}", {"topics": known}
            )
        if len(session.subscriptions) >= self._max_subscriptions:
            raise RpcError(
                TOO_MANY_SUBSCRIPTIONS,
                f"at most {self._max_subscriptions} subscriptions per connection",
            )
        sub = _Subscription(str(next(self._sub_ids)), topic, session, self._subscriber_queue_size)
        session.subscriptions[sub.id] = sub
        self._subscribers.setdefault(topic, set()).add(sub)
        return sub

    def _remove_subscription(self, sub: _Subscription) -> None:
        sub.session.subscriptions.pop(sub.id, None)
        subs = self._subscribers.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.topic]
        sub.buffer.clear()

    def subscribed_topics(self) -> set[str]:
        """The topics (and families, as ``progress:``) somebody is subscribed to now."""
        return set(self._subscribers)

    def statistics(self) -> ControlStatistics:
        return ControlStatistics(
            connections=self._connections,
            subscriptions=sum(len(s) for s in self._subscribers.values()),
            events_dropped=self._events_dropped,
        )

    # -- serving ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT`` while :meth:`run` is serving."""
        if self._url is None:
            raise RuntimeError("the control server is not running")
        return self._url

    async def run(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        data_dir: Path | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; the started value is the bound URL.

        With ``data_dir``, ``control.json`` is written once listening and removed on exit.
        ``host`` must be a loopback IP address: the API has no TLS and is for local clients.
        """
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"control API host must be a loopback IP address, not {host!r}")
        async with trio.open_nursery() as nursery:
            ws_server = await nursery.start(
                partial(
                    serve_websocket,
                    self._handle,
                    host,
                    port,
                    None,
                    message_queue_size=MESSAGE_QUEUE_SIZE,
                    max_message_size=MAX_MESSAGE_SIZE,
                    connect_timeout=HANDSHAKE_TIMEOUT,
                    disconnect_timeout=CLOSE_TIMEOUT,
                )
            )
            bound = f"[{host}]" if ":" in host else host
            url = f"ws://{bound}:{ws_server.port}"
            self._url = url
            try:
                if data_dir is not None:
                    write_control_info(data_dir, ControlInfo(url, self._token, os.getpid()))
                logger.info("control API listening on %s", url)
                task_status.started(url)
                await trio.sleep_forever()
            finally:
                self._url = None
                if data_dir is not None:
                    remove_control_info(data_dir, token=self._token)

    def _refusal(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """Why the handshake ``headers`` are not authorized, or None if they are."""
        values = [value for name, value in headers if name.lower() == b"authorization"]
        if not values:
            return "no Authorization header"
        if len(values) > 1:
            return "more than one Authorization header"
        scheme, _, credential = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credential.strip():
            return "Authorization is not a bearer token"
        if not hmac.compare_digest(credential.strip(), self._token_bytes):
            return "wrong bearer token"
        return None

    async def _handle(self, request: WebSocketRequest) -> None:
        # Runs in trio-websocket's handler nursery: anything escaping would stop the server.
        remote = _describe(request.remote)
        try:
            refusal = self._refusal(request.headers)
            if refusal is not None:
                logger.warning("control API: refused connection from %s: %s", remote, refusal)
                await request.reject(
                    401,
                    extra_headers=[(b"WWW-Authenticate", b'Bearer realm="modelmine-control"')],
                    body=b"missing or wrong control token\n",
                )
                return
            if self._connections >= self._max_connections:
                logger.warning(
                    "control API: refused connection from %s: %d clients already connected",
                    remote,
                    self._connections,
                )
                await request.reject(503, body=b"too many control clients\n")
                return
            ws = await request.accept()
            self._connections += 1
            try:
                await _Session(self, ws, remote).serve()
            finally:
                self._connections -= 1
        except ConnectionClosed:
            logger.debug("control API: %s went away during the handshake", remote)
        except Exception:
            logger.exception("control API: connection from %s failed", remote)


class _Session:
    """One client connection: a reader that dispatches requests, and a pump for events."""

    def __init__(self, server: ControlServer, ws: WebSocketConnection, remote: str) -> None:
        self._server = server
        self._ws = ws
        self._remote = remote
        self._slots = trio.Semaphore(server._max_in_flight)
        self._send_lock = trio.Lock()
        self._wakeup = trio.Event()
        self.subscriptions: dict[str, _Subscription] = {}

    def wake(self) -> None:
        self._wakeup.set()

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump)
                await self._read_loop(nursery)
                nursery.cancel_scope.cancel()
        except* ConnectionClosed:
            logger.debug("control API: %s disconnected", self._remote)
        except* _ClientTooSlow:
            logger.warning(
                "control API: disconnected %s: it read nothing for %g s",
                self._remote,
                self._server._send_timeout,
            )
        finally:
            for sub in list(self.subscriptions.values()):
                self._server._remove_subscription(sub)

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            await self._send_locked(text)

    async def _send_locked(self, text: str) -> None:
        with trio.move_on_after(self._server._send_timeout) as scope:
            await self._ws.send_message(text)
        if scope.cancelled_caught:
            # Half a frame may be on the wire: the connection cannot be used any more.
            raise _ClientTooSlow

    def _next_message(self) -> str | None:
        """The next notification in publish order across this connection's subscriptions."""
        best: _Subscription | None = None
        best_seq = 0
        for sub in self.subscriptions.values():
            seq = sub.next_seq()
            if seq is not None and (best is None or seq < best_seq):
                best, best_seq = sub, seq
        return None if best is None else best.next_message()

    async def _pump(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while True:
                # Taking the message under the lock orders it before any later response,
                # so no event of a subscription arrives after its unsubscribe response.
                async with self._send_lock:
                    message = self._next_message()
                    if message is None:
                        break
                    await self._send_locked(message)

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                message = await self._ws.get_message()
            except ConnectionClosed:
                return
            await self._handle_message(message, nursery)

    async def _handle_message(self, message: str | bytes, nursery: trio.Nursery) -> None:
        if isinstance(message, bytes):
            await self._send(
                _error_response(None, PARSE_ERROR, "binary messages are not supported: send text")
            )
            return
        try:
            obj = json.loads(message)
        except (ValueError, RecursionError) as exc:
            await self._send(_error_response(None, PARSE_ERROR, f"parse error: {exc}"[:200]))
            return
        if isinstance(obj, list):
            reason = "batch requests are not supported" if obj else "empty batch"
            await self._send(_error_response(None, INVALID_REQUEST, reason))
            return
        try:
            request = _parse_request(obj)
        except _BadRequest as bad:
            if bad.respond:
                await self._send(_error_response(bad.id, bad.code, bad.message))
            return
        if request.method.startswith("rpc."):
            await self._builtin(request)
            return
        handler = self._server._methods.get(request.method)
        if handler is None:
            if not request.notification:
                await self._send(
                    _error_response(
                        request.id, METHOD_NOT_FOUND, f"method not found: {request.method[:100]!r}"
                    )
                )
            return
        # Waiting here stops reading: the client is told to slow down by TCP itself.
        await self._slots.acquire()
        nursery.start_soon(self._call, request, handler)

    async def _reply(self, request: _Request, result: Any) -> None:
        if not request.notification:
            await self._send(_encode({"jsonrpc": "2.0", "id": request.id, "result": result}))

    async def _reply_error(self, request: _Request, error: RpcError) -> None:
        if not request.notification:
            await self._send(_error_response(request.id, error.code, error.message, error.data))

    async def _builtin(self, request: _Request) -> None:
        """The rpc.* methods: answered inline, in order, never waiting for a call slot."""
        params = request.params
        try:
            if request.method == "rpc.ping":
                await self._reply(request, "pong")
            elif request.method == "rpc.methods":
                server = self._server
                topics = sorted(server._topics) + sorted(p + "<id>" for p in server._prefixes)
                await self._reply(request, {"methods": sorted(server._methods), "topics": topics})
            elif request.method == "rpc.subscribe":
                sub = self._server._add_subscription(self, params)
                await self._reply(request, sub.id)
                sub.ready = True
                self.wake()
            elif request.method == "rpc.unsubscribe":
                sub_id = params.get("subscription")
                if set(params) != {"subscription"} or not isinstance(sub_id, str):
                    raise InvalidParams('rpc.unsubscribe takes {"subscription": string}')
                found = self.subscriptions.get(sub_id)
                if found is not None:
                    self._server._remove_subscription(found)
                await self._reply(request, found is not None)
            else:
                raise RpcError(METHOD_NOT_FOUND, f"method not found: {request.method[:100]!r}")
        except RpcError as error:
            await self._reply_error(request, error)

    async def _call(self, request: _Request, handler: Handler) -> None:
        try:
            try:
                result = await handler(request.params)
                text = _encode({"jsonrpc": "2.0", "id": request.id, "result": result})
            except RpcError as error:
                text = _error_response(request.id, error.code, error.message, error.data)
            except Exception as exc:
                logger.exception("control API: method %s failed", request.method)
                text = _error_response(
                    request.id, INTERNAL_ERROR, f"internal error: {type(exc).__name__}"
                )
            if len(text) > MAX_MESSAGE_SIZE:
                logger.error(
                    "control API: result of %s is %d characters, over the %d limit",
                    request.method,
                    len(text),
                    MAX_MESSAGE_SIZE,
                )
                text = _error_response(
                    request.id, INTERNAL_ERROR, "internal error: result too large"
                )
            if not request.notification:
                await self._send(text)
        finally:
            self._slots.release()
