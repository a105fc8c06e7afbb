"""The TUI's link to one node: trio in guest mode on Textual's asyncio loop.

Textual runs on asyncio; the control client is trio. :class:`TrioBridge` starts trio as a guest
of the running asyncio loop (``trio.lowlevel.start_guest_run``), so both run on one thread:
trio code may post Textual messages directly, and asyncio code reaches trio through the trio
token. The bridge keeps one connection open, reconnects when it is lost, turns the node's
topics into messages, and runs calls for the app.

The app only sees :class:`NodeLink`: ``start``, ``stop``, ``call`` and ``request``, plus the
messages in :mod:`modelmine.tui.messages`. Snapshot tests give the app a fake link instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import trio
from textual.message import Message

from modelmine.control_client import (
    ControlClient,
    ControlError,
    ControlUnavailable,
    Subscription,
    open_control_client,
)
from modelmine.tui.messages import (
    BlockCommitted,
    EventsDropped,
    JobChanged,
    NodeConnected,
    NodeLost,
    PeerChanged,
    ProgressReported,
)

logger = logging.getLogger(__name__)

# "progress:" is the family of every progress:<job id> topic: one subscription serves the
# dashboard's bars and any open job detail.
TOPICS: Final = ("peers", "blocks", "jobs", "progress:")
CONNECT_TIMEOUT: Final = 3.0
CALL_TIMEOUT: Final = 30.0
# How long stop() lets the connection close politely (unsubscribe, close frame) before it
# cancels whatever is left.
STOP_GRACE: Final = 2.0


class NodeLink(Protocol):
    """What the TUI needs of a node."""

    def start(self, post: Callable[[Message], object]) -> None:
        """Begin connecting; report with ``post(message)`` from now on."""

    async def stop(self) -> None:
        """Disconnect and stop reporting."""

    async def call(self, method: str, /, **params: Any) -> Any:
        """Call a control method; raises ControlUnavailable or RpcError."""

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        call_timeout: float | None = None,
    ) -> Any:
        """Like :meth:`call` with params as a mapping and a timeout of its own."""


def _event_message(topic: str, event: dict[str, Any]) -> Message:
    if "dropped" in event:
        return EventsDropped(topic, int(event["dropped"]))
    if topic == "peers":
        return PeerChanged(event)
    if topic == "blocks":
        return BlockCommitted(event)
    if topic == "jobs":
        return JobChanged(event)
    return ProgressReported(event)


class TrioBridge:
    """A :class:`NodeLink` to the node of ``data_dir`` over its control API."""

    def __init__(
        self,
        data_dir: Path,
        *,
        retry: float = 1.0,
        max_retry: float = 5.0,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.data_dir = data_dir
        self.retry = retry
        self.max_retry = max_retry
        self.call_timeout = call_timeout
        self._post: Callable[[Message], object] = lambda message: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._finished: asyncio.Future[None] | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._client: ControlClient | None = None
        self._down = "not connected yet"
        self._stopping: trio.Event | None = None

    # ---- asyncio side ----

    def start(self, post: Callable[[Message], object]) -> None:
        self._post = post
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ready = asyncio.Event()
        self._finished = loop.create_future()
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=self._done,
            # asyncio owns the signal wakeup fd (Textual handles the terminal's signals).
            host_uses_signal_set_wakeup_fd=True,
        )

    async def stop(self) -> None:
        if self._finished is None or self._ready is None:
            return
        self._post = lambda message: None
        await self._ready.wait()  # trio has started (or already ended)
        if self._token is not None and self._stopping is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stopping.set)
        await self._finished

    async def call(self, method: str, /, **params: Any) -> Any:
        return await self.request(method, params)

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        call_timeout: float | None = None,
    ) -> Any:
        if self._ready is None or self._loop is None:
            raise ControlUnavailable("the TUI is not connected to a node")
        await self._ready.wait()
        token, nursery = self._token, self._nursery
        if token is None or nursery is None:
            raise ControlUnavailable("the TUI is shutting down")
        future: asyncio.Future[Any] = self._loop.create_future()
        limit = self.call_timeout if call_timeout is None else call_timeout
        # A caller that gives up (a Textual worker replaced by a newer one) does not cancel the
        # trio call: cancelling mid-send would cost the whole connection. The call ends by its
        # timeout at the latest, and its result is dropped.
        try:
            token.run_sync_soon(
                nursery.start_soon, self._run_call, future, method, dict(params or {}), limit
            )
        except trio.RunFinishedError:
            raise ControlUnavailable("the TUI is shutting down") from None
        return await future

    def _done(self, outcome: Any) -> None:
        self._token = self._nursery = None
        try:
            outcome.unwrap()
        except BaseException:
            logger.exception("the trio side of the TUI failed")
        if self._ready is not None:
            self._ready.set()  # so that no caller waits for a start that will not come
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    # ---- trio side (runs on the same thread, inside asyncio callbacks) ----

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stopping = stopping = trio.Event()
        served = trio.Event()

        async def serve() -> None:
            try:
                await self._serve_connection(stopping)
            finally:
                served.set()

        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._ready is not None:
                self._ready.set()
            nursery.start_soon(serve)
            await stopping.wait()
            with trio.move_on_after(STOP_GRACE):
                await served.wait()
            nursery.cancel_scope.cancel()

    async def _run_call(
        self, future: asyncio.Future[Any], method: str, params: dict[str, Any], limit: float
    ) -> None:
        client = self._client
        try:
            if client is None:
                raise ControlUnavailable(self._down)
            result = await client.request(method, params, call_timeout=limit)
        except ControlError as exc:
            if not future.done():
                future.set_exception(exc)
            return
        except Exception as exc:  # a bug must reach the caller, not kill the bridge
            logger.exception("call %s failed", method)
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)

    async def _serve_connection(self, stopping: trio.Event) -> None:
        """Connect, subscribe, report; when the node goes away, say so and try again."""
        attempt = 0
        while True:
            connected, reason = await self._connect_once(stopping)
            self._client = None
            if stopping.is_set():
                return
            self._down = reason
            attempt = 1 if connected else attempt + 1
            delay = min(self.max_retry, self.retry * 2 ** min(attempt - 1, 8))
            logger.info(
                "node unavailable (attempt %d, retry in %.1f s): %s", attempt, delay, reason
            )
            self._post(NodeLost(reason, delay, attempt))
            with trio.move_on_after(delay):
                await stopping.wait()
            if stopping.is_set():
                return

    async def _connect_once(self, stopping: trio.Event) -> tuple[bool, str]:
        """One connection's life: whether it got connected, and why it ended."""
        lost: list[str] = []
        connected = False
        try:
            async with (
                open_control_client(
                    self.data_dir, connect_timeout=CONNECT_TIMEOUT, call_timeout=self.call_timeout
                ) as client,
                contextlib.AsyncExitStack() as stack,
            ):
                status = await client.call("status")
                # Subscribe before saying "connected", so that no change falls between the
                # app's first reads and the events.
                subs = [await stack.enter_async_context(client.subscribe(t)) for t in TOPICS]
                async with trio.open_nursery() as nursery:
                    for topic, events in zip(TOPICS, subs, strict=True):
                        nursery.start_soon(self._pump, topic, events, lost, nursery.cancel_scope)
                    # On stop, end only the pumps: the reader stays up for the unsubscribes.
                    nursery.start_soon(_cancel_when_set, stopping, nursery.cancel_scope)
                    self._client = client
                    connected = True
                    logger.info("connected to %s at %s", status.get("name"), client.url)
                    self._post(NodeConnected(status))
        except ControlError as exc:
            return connected, str(exc)
        except Exception:
            logger.exception("the connection to the node failed")
            return connected, "the TUI's connection failed (see tui.log)"
        return connected, lost[0] if lost else "the connection to the node ended"

    async def _pump(
        self, topic: str, events: Subscription, lost: list[str], connection: trio.CancelScope
    ) -> None:
        try:
            async for event in events:
                self._post(_event_message(topic, event))
        except ControlError as exc:
            lost.append(str(exc))
        else:
            lost.append(f"the node ended the {topic!r} subscription")
        connection.cancel()


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
