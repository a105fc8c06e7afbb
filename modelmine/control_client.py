"""A trio client of one node's control API, for the CLI and (in trio guest mode) the TUI.

Find the node by its data dir (``<data-dir>/control.json``) or by URL and token::

    async with open_control_client(data_dir) as client:
        status = await client.call("status")
        async with client.subscribe("jobs") as events:
            async for event in events:
                ...

Failures are :class:`ControlUnavailable` (one line for people: no node, refused, connection
lost, or :class:`ControlTimeout`) and :class:`RpcError` (the node answered with an error).
"""

from __future__ import annotations

import itertools
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, NoReturn

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from modelmine.control import (
    CLOSE_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MESSAGE_QUEUE_SIZE,
    ControlAuthError,
    ControlError,
    ControlTimeout,
    ControlUnavailable,
    EventBuffer,
    RpcError,
    read_control_info,
)

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "ControlAuthError",
    "ControlClient",
    "ControlError",
    "ControlTimeout",
    "ControlUnavailable",
    "RpcError",
    "Subscription",
    "call_node",
    "open_control_client",
]

logger = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT: Final = 30.0
SUBSCRIPTION_BUFFER: Final = 256
# Calls waiting for an answer, per client; more callers wait for a free slot.
MAX_PENDING_CALLS: Final = 64
UNSUBSCRIBE_TIMEOUT: Final = 2.0


class _PendingCall:
    __slots__ = ("done", "error", "on_result", "result")

    def __init__(self, on_result: Callable[[Any], None] | None) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: ControlError | None = None
        self.on_result = on_result


class Subscription:
    """The events of one subscription, in publish order, as an async iterator.

    An event ``{"dropped": n}`` marks a gap: ``n`` events were lost because this consumer (or
    the connection) fell behind. Iteration ends when the subscription is closed and raises
    :class:`ControlUnavailable` when the connection is lost.
    """

    def __init__(self, topic: str, buffer_size: int) -> None:
        self.topic = topic
        self.id = ""
        self._buffer: EventBuffer[dict[str, Any]] = EventBuffer(buffer_size)
        self._changed = trio.Event()
        self._lost: str | None = None
        self._closed = False

    def _put(self, event: dict[str, Any]) -> None:
        self._buffer.put(event)
        self._changed.set()

    def _close(self, lost: str | None = None) -> None:
        self._closed = True
        self._lost = lost
        self._changed.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        while True:
            dropped = self._buffer.take_dropped()
            if dropped:
                return {"dropped": dropped}
            event = self._buffer.pop()
            if event is not None:
                return event
            if self._lost is not None:
                raise ControlUnavailable(self._lost)
            if self._closed:
                raise StopAsyncIteration
            await self._changed.wait()
            self._changed = trio.Event()


class ControlClient:
    """A connection to one node. Made by :func:`open_control_client`."""

    def __init__(self, ws: WebSocketConnection, url: str, call_timeout: float) -> None:
        self.url = url
        self.call_timeout = call_timeout
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, _PendingCall] = {}
        self._slots = trio.Semaphore(MAX_PENDING_CALLS)
        self._send_lock = trio.Lock()
        self._subscriptions: dict[str, Subscription] = {}
        self._lost: str | None = None

    async def call(self, method: str, /, **params: Any) -> Any:
        """Call ``method`` with named params within :attr:`call_timeout` seconds."""
        return await self._request(method, params, None, None)

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        call_timeout: float | None = None,
    ) -> Any:
        """Like :meth:`call`, with params as a mapping and a timeout of its own
        (None: :attr:`call_timeout`; ``math.inf``: none)."""
        return await self._request(method, dict(params or {}), call_timeout, None)

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, buffer_size: int = SUBSCRIPTION_BUFFER
    ) -> AsyncIterator[Subscription]:
        """Subscribe to ``topic`` for the duration of the block; unsubscribes on exit."""
        sub = Subscription(topic, buffer_size)

        def register(result: Any) -> None:
            # Runs in the reader as the response arrives, before any event of the subscription.
            if isinstance(result, str):
                sub.id = result
                self._subscriptions[result] = sub

        try:
            await self._request("rpc.subscribe", {"topic": topic}, None, register)
        except BaseException:
            self._subscriptions.pop(sub.id, None)
            raise
        try:
            yield sub
        finally:
            self._subscriptions.pop(sub.id, None)
            sub._close()
            if self._lost is None:
                with trio.move_on_after(UNSUBSCRIBE_TIMEOUT, shield=True):
                    try:
                        await self._request("rpc.unsubscribe", {"subscription": sub.id}, None, None)
                    except ControlError as exc:
                        logger.debug("unsubscribe %s failed: %s", sub.id, exc)

    # -- internals ----------------------------------------------------------------------------

    def _raise_lost(self) -> NoReturn:
        raise ControlUnavailable(self._lost or f"lost the connection to the node at {self.url}")

    async def _request(
        self,
        method: str,
        params: dict[str, Any],
        call_timeout: float | None,
        on_result: Callable[[Any], None] | None,
    ) -> Any:
        if self._lost is not None:
            self._raise_lost()
        limit = self.call_timeout if call_timeout is None else call_timeout
        call_id = next(self._ids)
        text = json.dumps(
            {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        pending = _PendingCall(on_result)
        with trio.move_on_after(limit) as scope:
            async with self._slots:
                self._pending[call_id] = pending
                try:
                    await self._send(text)
                    await pending.done.wait()
                finally:
                    del self._pending[call_id]
        if scope.cancelled_caught and not pending.done.is_set():
            raise ControlTimeout(
                f"the node at {self.url} did not answer {method} within {limit:g} s"
            )
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def _send(self, text: str) -> None:
        # Our own lock, so that a cancelled caller waits here rather than inside
        # trio-websocket, where cancellation can leave half a frame on the wire.
        async with self._send_lock:
            try:
                await self._ws.send_message(text)
            except ConnectionClosed:
                self._lose(f"lost the connection to the node at {self.url}")
                self._raise_lost()
            except BaseException:
                self._lose(f"the connection to the node at {self.url} broke off mid-message")
                raise

    def _lose(self, message: str) -> None:
        if self._lost is not None:
            return
        self._lost = message
        for pending in self._pending.values():
            pending.error = ControlUnavailable(message)
            pending.done.set()
        for sub in self._subscriptions.values():
            sub._close(lost=message)
        self._subscriptions.clear()

    async def _read_loop(self) -> None:
        try:
            while True:
                self._dispatch(await self._ws.get_message())
        except ConnectionClosed as exc:
            reason = exc.reason
            detail = f" (close code {reason.code})" if reason is not None else ""
            self._lose(f"lost the connection to the node at {self.url}{detail}")
        except Exception:
            logger.exception("control client: reader failed")
            self._lose(f"the control client for {self.url} failed (see log)")

    def _dispatch(self, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                raise ValueError("binary message")
            obj = json.loads(message)
        except (ValueError, RecursionError) as exc:
            logger.warning("control client: ignored a bad message from the node: %s", exc)
            return
        if not isinstance(obj, dict):
            logger.warning("control client: ignored a non-object message from the node")
            return
        if "id" not in obj:
            self._dispatch_notification(obj)
            return
        call_id = obj["id"]
        if isinstance(call_id, bool) or not isinstance(call_id, int):
            if "error" in obj:
                logger.warning("control client: the node reported %r", obj["error"])
            return
        pending = self._pending.get(call_id)
        if pending is None:
            return  # the caller gave up
        error = obj.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            text = error.get("message")
            pending.error = RpcError(
                code if isinstance(code, int) else 0,
                text if isinstance(text, str) else "malformed error",
                error.get("data"),
            )
        elif "result" in obj:
            pending.result = obj["result"]
            if pending.on_result is not None:
                pending.on_result(pending.result)
        else:
            pending.error = ControlError(f"malformed response from the node at {self.url}")
        pending.done.set()

    def _dispatch_notification(self, obj: dict[str, Any]) -> None:
        params = obj.get("params")
        if obj.get("method") != "event" or not isinstance(params, dict):
            logger.debug("control client: ignored notification %.100r", obj)
            return
        sub_id = params.get("subscription")
        event = params.get("event")
        sub = self._subscriptions.get(sub_id) if isinstance(sub_id, str) else None
        if sub is not None and isinstance(event, dict):
            sub._put(event)


def _resolve(
    data_dir: Path | None, url: str | None, token: str | None
) -> tuple[str, str, Callable[[str], str]]:
    """URL, token and how to phrase "cannot reach it" for the user."""
    if url is not None:
        if token is None:
            raise ValueError("a token is needed with an explicit url")
        return url, token, lambda reason: f"no node is answering at {url} ({reason})"
    if data_dir is None:
        raise ValueError("give data_dir, or url and token")
    info = read_control_info(data_dir)
    hint = f"start one with: modelmine node --data-dir {data_dir}"
    if not info.owner_alive():
        raise ControlUnavailable(
            f"no node is running for data dir {data_dir} "
            f"(stale control.json of pid {info.pid}; {hint})"
        )
    return (
        info.url,
        token or info.token,
        lambda reason: f"no node is running for data dir {data_dir} ({reason}; {hint})",
    )


def _connect_failure(exc: OSError) -> str:
    """ "connection refused", or the error, from what trio.open_tcp_stream raised."""
    causes: list[BaseException] = [exc]
    while causes:
        cause = causes.pop()
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, BaseExceptionGroup):
            causes.extend(cause.exceptions)
        elif cause.__cause__ is not None:
            causes.append(cause.__cause__)
    return str(exc)


def _handshake_failure(
    exc: BaseException, url: str, unavailable: Callable[[str], str]
) -> ControlUnavailable | None:
    """What to tell the user when the websocket handshake with ``url`` failed with ``exc``."""
    if isinstance(exc, ConnectionRejected):
        if exc.status_code == 401:
            return ControlAuthError(
                f"the node at {url} refused the control token (HTTP 401): "
                "control.json does not belong to the node listening there"
            )
        body = exc.body.decode("utf-8", "replace").strip() if exc.body else ""
        return ControlUnavailable(
            f"the node at {url} refused the control connection "
            f"(HTTP {exc.status_code}{': ' + body if body else ''})"
        )
    if isinstance(exc, trio.TooSlowError):
        return ControlUnavailable(unavailable(f"{url} did not complete the websocket handshake"))
    if isinstance(exc, HandshakeError | ConnectionClosed | OSError):
        return ControlUnavailable(unavailable(f"{url}: handshake failed: {exc!r}"))
    return None


def _reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the only exception of ``group`` as itself, keeping its own context."""
    if len(group.exceptions) != 1:
        raise group
    exc = group.exceptions[0]
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


@asynccontextmanager
async def open_control_client(
    data_dir: Path | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    connect_timeout: float = 5.0,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
) -> AsyncIterator[ControlClient]:
    """Connect to the node of ``data_dir`` (via its control.json), or to ``url`` with ``token``.

    Raises :class:`ControlUnavailable` with a one-line message when there is no node to talk to,
    :class:`ControlAuthError` when it refuses the token. ``connect_timeout`` bounds the TCP
    connect and the websocket handshake each.
    """
    target, secret, unavailable = _resolve(data_dir, url, token)
    parts = urllib.parse.urlsplit(target)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if parts.scheme != "ws" or host is None or port is None:
        raise ControlUnavailable(f"bad control API url {target!r}: expected ws://HOST:PORT")
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise ControlUnavailable(
            unavailable(f"{target} did not answer within {connect_timeout:g} s")
        ) from None
    except OSError as exc:
        raise ControlUnavailable(unavailable(f"{target}: {_connect_failure(exc)}")) from None
    # We own the TCP stream (rather than open_websocket_url) so that it is closed even when
    # the handshake is rejected.
    async with stream:
        connected = False
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(connect_timeout):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        parts.netloc,
                        parts.path or "/",
                        extra_headers=[
                            (b"Authorization", b"Bearer " + secret.encode("ascii", "replace"))
                        ],
                        message_queue_size=MESSAGE_QUEUE_SIZE,
                        max_message_size=MAX_MESSAGE_SIZE,
                    )
                connected = True
                client = ControlClient(ws, target, call_timeout)
                nursery.start_soon(client._read_loop)
                try:
                    yield client
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Our reader never raises, so once connected the group holds just the caller's
            # exception; before, it holds why the handshake failed.
            if not connected and len(group.exceptions) == 1:
                failure = _handshake_failure(group.exceptions[0], target, unavailable)
                if failure is not None:
                    raise failure from None
            _reraise_single(group)


def call_node(data_dir: Path, method: str, /, **params: Any) -> Any:
    """Call one method on the node of ``data_dir`` from synchronous code (runs trio once)."""

    async def main() -> Any:
        async with open_control_client(data_dir) as client:
            return await client.call(method, **params)

    return trio.run(main)
