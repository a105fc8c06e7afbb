"""The control API over real loopback sockets: auth, JSON-RPC errors, subscriptions, discovery."""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

from modelmine.control import (
    CONTROL_FILE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNKNOWN_TOPIC,
    ControlInfo,
    ControlServer,
    InvalidParams,
    RpcError,
    new_token,
    write_control_info,
)
from modelmine.control_client import (
    ControlAuthError,
    ControlTimeout,
    ControlUnavailable,
    call_node,
    open_control_client,
)

TIMEOUT = 10.0
APP_NOT_FOUND = -32010


class Node:
    """A stand-in for the node: a few methods to exercise the server with."""

    def __init__(self, **server_options: Any) -> None:
        self.token = new_token()
        self.server = ControlServer(self.token, **server_options)
        self.slow_started = trio.Event()
        self.slow_cancelled = trio.Event()
        self.release_slow = trio.Event()
        for name in ("echo", "add", "crash", "lookup", "slow", "unencodable"):
            self.server.register(name, getattr(self, name))
        self.server.register_topic("jobs")
        self.server.register_topic("progress:")

    async def echo(self, params: dict[str, Any]) -> Any:
        return params

    async def add(self, params: dict[str, Any]) -> Any:
        a, b = params.get("a"), params.get("b")
        if not isinstance(a, int) or not isinstance(b, int):
            raise InvalidParams("add takes integers a and b")
        return a + b

    async def crash(self, params: dict[str, Any]) -> Any:
        raise RuntimeError("handler bug")

    async def lookup(self, params: dict[str, Any]) -> Any:
        raise RpcError(APP_NOT_FOUND, "job not found", {"job": params.get("job")})

    async def slow(self, params: dict[str, Any]) -> Any:
        self.slow_started.set()
        try:
            await self.release_slow.wait()
        except trio.Cancelled:
            self.slow_cancelled.set()
            raise
        return "done"

    async def unencodable(self, params: dict[str, Any]) -> Any:
        return math.nan


async def serve_in_scope(
    node: Node,
    scope: trio.CancelScope,
    data_dir: Path | None = None,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until ``scope`` is cancelled (the node shutting down)."""
    with scope:
        await node.server.run(data_dir=data_dir, task_status=task_status)


async def start(nursery: trio.Nursery, **server_options: Any) -> tuple[Node, str]:
    node = Node(**server_options)
    url = await nursery.start(node.server.run)
    return node, url


@asynccontextmanager
async def raw_socket(
    url: str, token: str | None, *, message_queue_size: int = 16
) -> AsyncIterator[WebSocketConnection]:
    headers = [] if token is None else [(b"Authorization", b"Bearer " + token.encode())]
    async with open_websocket_url(
        url, extra_headers=headers, message_queue_size=message_queue_size
    ) as ws:
        yield ws


async def rejected_handshake(url: str, headers: list[tuple[bytes, bytes]]) -> ConnectionRejected:
    """Attempt a handshake that the server must refuse, closing our socket ourselves
    (trio-websocket's open_websocket leaves it open when the handshake is rejected)."""
    port = int(url.rsplit(":", 1)[1])
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        with pytest.RaisesGroup(ConnectionRejected) as refused:
            async with trio.open_nursery() as nursery:
                await wrap_client_stream(
                    nursery, stream, f"127.0.0.1:{port}", "/", extra_headers=headers
                )
    rejection = refused.value.exceptions[0]
    assert isinstance(rejection, ConnectionRejected)
    return rejection


async def roundtrip(ws: WebSocketConnection, message: str | bytes) -> Any:
    await ws.send_message(message)
    return json.loads(await ws.get_message())


async def wait_until(predicate: Any) -> None:
    """Poll state that another task owns; callers bound this with trio.fail_after."""
    while not predicate():  # noqa: ASYNC110 - nothing to wait on but the predicate itself
        await trio.sleep(0.01)


# -- calls ------------------------------------------------------------------------------------


async def test_call_registered_method(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        assert url.startswith("ws://127.0.0.1:")
        async with open_control_client(url=url, token=node.token) as client:
            assert await client.call("add", a=2, b=40) == 42
            assert await client.call("echo", job="j1", tags=["x"]) == {"job": "j1", "tags": ["x"]}
            assert await client.request("echo", {"method": "m"}) == {"method": "m"}
            assert await client.call("rpc.ping") == "pong"
            listing = await client.call("rpc.methods")
            assert "add" in listing["methods"]
            assert listing["topics"] == ["jobs", "progress:<id>"]


async def test_rpc_errors_are_error_objects_and_connection_survives(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        async with open_control_client(url=url, token=node.token) as client:
            with pytest.raises(RpcError) as bad_params:
                await client.call("add", a="two", b=2)
            assert (bad_params.value.code, bad_params.value.message) == (
                INVALID_PARAMS,
                "add takes integers a and b",
            )

            with pytest.raises(RpcError) as app_error:
                await client.call("lookup", job="j9")
            assert app_error.value.code == APP_NOT_FOUND
            assert app_error.value.data == {"job": "j9"}

            with pytest.raises(RpcError) as unknown:
                await client.call("no.such.method")
            assert unknown.value.code == METHOD_NOT_FOUND

            with caplog.at_level(logging.ERROR, logger="modelmine.control"):
                with pytest.raises(RpcError) as crash:
                    await client.call("crash")
                with pytest.raises(RpcError) as bad_result:
                    await client.call("unencodable")
            assert crash.value.code == INTERNAL_ERROR
            assert "RuntimeError" in crash.value.message
            assert bad_result.value.code == INTERNAL_ERROR
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 2
            assert all(r.exc_info is not None for r in errors)
            assert errors[0].exc_info is not None
            assert errors[0].exc_info[0] is RuntimeError

            assert await client.call("add", a=1, b=1) == 2


@pytest.mark.parametrize(
    ("message", "code", "request_id"),
    [
        pytest.param("{not json", PARSE_ERROR, None, id="malformed-json"),
        pytest.param("[" * 100_000, PARSE_ERROR, None, id="too-deep"),
        pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"echo"}', PARSE_ERROR, None, id="binary"),
        pytest.param("[]", INVALID_REQUEST, None, id="empty-batch"),
        pytest.param(
            '[{"jsonrpc":"2.0","id":1,"method":"echo"}]', INVALID_REQUEST, None, id="batch"
        ),
        pytest.param('"hello"', INVALID_REQUEST, None, id="not-an-object"),
        pytest.param('{"jsonrpc":"1.0","id":7,"method":"echo"}', INVALID_REQUEST, 7, id="version"),
        pytest.param('{"jsonrpc":"2.0","id":7,"method":5}', INVALID_REQUEST, 7, id="method-type"),
        pytest.param(
            '{"jsonrpc":"2.0","id":{},"method":"echo"}', INVALID_REQUEST, None, id="id-type"
        ),
        pytest.param('{"jsonrpc":"2.0","id":7,"method":"echo","params":3}', INVALID_REQUEST, 7),
        pytest.param('{"jsonrpc":"2.0","id":"a","method":"nope"}', METHOD_NOT_FOUND, "a"),
        pytest.param('{"jsonrpc":"2.0","id":8,"method":"rpc.nope"}', METHOD_NOT_FOUND, 8),
        pytest.param('{"jsonrpc":"2.0","id":9,"method":"echo","params":[1]}', INVALID_PARAMS, 9),
        pytest.param('{"jsonrpc":"2.0","id":9,"method":"rpc.subscribe"}', INVALID_PARAMS, 9),
    ],
)
async def test_bad_requests_get_error_objects(
    nursery: trio.Nursery, message: str | bytes, code: int, request_id: Any
) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        async with raw_socket(url, node.token) as ws:
            reply = await roundtrip(ws, message)
            assert reply["jsonrpc"] == "2.0"
            assert reply["id"] == request_id
            assert reply["error"]["code"] == code
            assert isinstance(reply["error"]["message"], str)
            assert "result" not in reply
            ok = await roundtrip(
                ws, '{"jsonrpc":"2.0","id":"next","method":"add","params":{"a":1,"b":2}}'
            )
            assert ok == {"jsonrpc": "2.0", "id": "next", "result": 3}


async def test_notifications_get_no_response(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        async with raw_socket(url, node.token) as ws:
            for method in ("echo", "crash", "no.such.method"):
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "method": method}))
            reply = await roundtrip(ws, '{"jsonrpc":"2.0","id":1,"method":"rpc.ping"}')
            assert reply == {"jsonrpc": "2.0", "id": 1, "result": "pong"}


async def test_slow_method_does_not_block_others(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        async with open_control_client(url=url, token=node.token) as client:
            result: list[Any] = []

            async def slow_call() -> None:
                result.append(await client.call("slow"))

            async with trio.open_nursery() as calls, client.subscribe("jobs") as events:
                calls.start_soon(slow_call)
                await node.slow_started.wait()
                assert await client.call("add", a=1, b=2) == 3
                node.server.publish("jobs", {"job": "j1"})
                assert await events.__anext__() == {"job": "j1"}
                assert result == []
                node.release_slow.set()
            assert result == ["done"]


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "no Authorization header"),
        (b"Bearer wrong-token-wrong-token", "wrong bearer token"),
        (b"Basic dXNlcjpwYXNz", "Authorization is not a bearer token"),
    ],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_bad_token_refused_with_401(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, header: bytes | None, reason: str
) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        headers = [] if header is None else [(b"Authorization", header)]
        with caplog.at_level(logging.WARNING, logger="modelmine.control"):
            refused = await rejected_handshake(url, headers)
        assert refused.status_code == 401
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1
        assert reason in refusals[0]
        assert "127.0.0.1:" in refusals[0]
        assert node.token not in caplog.text

        async with open_control_client(url=url, token=node.token) as client:
            assert await client.call("rpc.ping") == "pong"


async def test_client_reports_refused_token(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        _, url = await start(nursery)
        with pytest.raises(ControlAuthError, match="refused the control token"):
            async with open_control_client(url=url, token=new_token()):
                pass  # pragma: no cover - the handshake fails


# -- subscriptions ----------------------------------------------------------------------------


async def test_subscription_receives_events_in_order(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        async with (
            open_control_client(url=url, token=node.token) as client,
            client.subscribe("jobs") as jobs,
            client.subscribe("progress:j1") as one_job,
            client.subscribe("progress:") as all_progress,
        ):
            for i in range(100):
                node.server.publish("jobs", {"n": i})
            node.server.publish("progress:j1", {"job": "j1", "step": 1})
            node.server.publish("progress:j2", {"job": "j2", "step": 1})

            assert [await jobs.__anext__() for _ in range(100)] == [{"n": i} for i in range(100)]
            assert await one_job.__anext__() == {"job": "j1", "step": 1}
            assert [await all_progress.__anext__() for _ in range(2)] == [
                {"job": "j1", "step": 1},
                {"job": "j2", "step": 1},
            ]
            assert node.server.statistics().subscriptions == 3
        await wait_until(lambda: node.server.statistics().subscriptions == 0)


async def test_no_events_after_unsubscribe(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        async with raw_socket(url, node.token) as ws:
            subscribe = (
                '{"jsonrpc":"2.0","id":1,"method":"rpc.subscribe","params":{"topic":"jobs"}}'
            )
            sub_id = (await roundtrip(ws, subscribe))["result"]
            node.server.publish("jobs", {"n": 1})
            assert json.loads(await ws.get_message()) == {
                "jsonrpc": "2.0",
                "method": "event",
                "params": {"topic": "jobs", "subscription": sub_id, "event": {"n": 1}},
            }
            node.server.publish("jobs", {"n": 2})  # queued, but unsubscribed before it is sent
            unsubscribe = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "rpc.unsubscribe",
                    "params": {"subscription": sub_id},
                }
            )
            await ws.send_message(unsubscribe)
            received = [json.loads(await ws.get_message())]
            while "id" not in received[-1]:
                received.append(json.loads(await ws.get_message()))
            assert received[-1] == {"jsonrpc": "2.0", "id": 2, "result": True}
            node.server.publish("jobs", {"n": 3})
            assert await roundtrip(ws, unsubscribe) == {"jsonrpc": "2.0", "id": 2, "result": False}
            ping = await roundtrip(ws, '{"jsonrpc":"2.0","id":3,"method":"rpc.ping"}')
            assert ping == {"jsonrpc": "2.0", "id": 3, "result": "pong"}
            assert node.server.statistics().subscriptions == 0


async def test_unknown_topic_is_an_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        async with open_control_client(url=url, token=node.token) as client:
            for topic in ("blocks", "progress", "jobs:"):
                with pytest.raises(RpcError) as unknown:
                    async with client.subscribe(topic):
                        pass  # pragma: no cover - subscribe fails
                assert unknown.value.code == UNKNOWN_TOPIC
            assert await client.call("rpc.ping") == "pong"
        with pytest.raises(ValueError, match="unregistered topic"):
            node.server.publish("blocks", {"height": 1})
        with pytest.raises(ValueError, match="reserved"):
            node.server.publish("jobs", {"dropped": 1})
        with pytest.raises(ValueError):
            node.server.publish("jobs", {"loss": math.nan})


async def test_lagging_subscriber_gets_dropped_marker(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery, subscriber_queue_size=4)
        async with raw_socket(url, node.token) as ws:
            subscribe = (
                '{"jsonrpc":"2.0","id":1,"method":"rpc.subscribe","params":{"topic":"jobs"}}'
            )
            await roundtrip(ws, subscribe)
            # No checkpoint in between: the connection cannot send while these are published.
            for i in range(100):
                node.server.publish("jobs", {"n": i})
            events = [json.loads(await ws.get_message())["params"]["event"] for _ in range(5)]
            assert events == [{"dropped": 96}, {"n": 96}, {"n": 97}, {"n": 98}, {"n": 99}]
            assert node.server.statistics().events_dropped == 96


async def test_slow_consumer_gets_dropped_marker_from_the_client(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery)
        async with (
            open_control_client(url=url, token=node.token) as client,
            client.subscribe("jobs", buffer_size=2) as jobs,
            client.subscribe("progress:", buffer_size=10) as marker,
        ):
            for i in range(10):
                node.server.publish("jobs", {"n": i})
            node.server.publish("progress:j1", {"after": "jobs"})
            # One connection gets events in publish order, across its subscriptions.
            assert await marker.__anext__() == {"after": "jobs"}
            assert [await jobs.__anext__() for _ in range(3)] == [
                {"dropped": 8},
                {"n": 8},
                {"n": 9},
            ]
            assert node.server.statistics().events_dropped == 0
            # The call path is not held up by the full subscription buffer.
            assert await client.call("rpc.ping") == "pong"


async def test_stalled_client_never_blocks_the_node(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        node, url = await start(nursery, subscriber_queue_size=8, send_timeout=0.5)
        big = "x" * 100_000
        subscribe = '{"jsonrpc":"2.0","id":1,"method":"rpc.subscribe","params":{"topic":"jobs"}}'
        with caplog.at_level(logging.WARNING, logger="modelmine.control"):
            async with (
                raw_socket(url, node.token, message_queue_size=1) as stalled,
                open_control_client(url=url, token=node.token) as client,
                client.subscribe("jobs", buffer_size=1000) as events,
            ):
                await roundtrip(stalled, subscribe)  # and then never reads again
                # 30 MB: more than the socket buffers of the stalled connection can hold.
                for i in range(300):
                    node.server.publish("jobs", {"n": i, "pad": big})
                    assert (await events.__anext__())["n"] == i
                await wait_until(lambda: node.server.statistics().connections == 1)
        assert any("read nothing" in r.getMessage() for r in caplog.records)


# -- disconnects ------------------------------------------------------------------------------


async def test_client_leaving_mid_request_cancels_the_handler(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR):
        node, url = await start(nursery)
        async with open_control_client(url=url, token=node.token, call_timeout=0.2) as client:
            with pytest.raises(ControlTimeout, match="did not answer slow"):
                await client.call("slow")
            assert node.slow_started.is_set()
            assert await client.call("rpc.ping") == "pong"
        await node.slow_cancelled.wait()
        async with open_control_client(url=url, token=node.token) as client:
            assert await client.call("add", a=2, b=2) == 4
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_node_going_away_is_control_unavailable(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        node = Node()
        server_scope = trio.CancelScope()
        url = await nursery.start(serve_in_scope, node, server_scope)
        async with (
            open_control_client(url=url, token=node.token) as client,
            client.subscribe("jobs") as events,
        ):

            async def stop_server() -> None:
                await node.slow_started.wait()
                server_scope.cancel()

            nursery.start_soon(stop_server)
            with pytest.raises(ControlUnavailable, match="lost the connection") as lost:
                await client.call("slow")
            assert "\n" not in str(lost.value)
            with pytest.raises(ControlUnavailable, match="lost the connection"):
                await events.__anext__()
            with pytest.raises(ControlUnavailable, match="lost the connection"):
                await client.call("rpc.ping")


# -- control.json -----------------------------------------------------------------------------


async def test_control_json_is_private_and_finds_the_node(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        node = Node()
        server_scope = trio.CancelScope()
        url = await nursery.start(serve_in_scope, node, server_scope, tmp_path)
        path = tmp_path / CONTROL_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text()) == {"url": url, "token": node.token, "pid": os.getpid()}
        async with open_control_client(tmp_path) as client:
            assert client.url == url
            assert await client.call("add", a=20, b=22) == 42
        # The CLI's synchronous path: its own trio.run, here on a worker thread.
        assert await trio.to_thread.run_sync(partial(call_node, tmp_path, "add", a=1, b=2)) == 3
        with pytest.raises(RpcError) as unknown:
            await trio.to_thread.run_sync(partial(call_node, tmp_path, "no.such.method"))
        assert unknown.value.code == METHOD_NOT_FOUND
        server_scope.cancel()
        await wait_until(lambda: not path.exists())


def test_missing_control_json_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ControlUnavailable) as missing:
        call_node(tmp_path, "rpc.ping")
    assert str(missing.value) == (
        f"no node is running for data dir {tmp_path} "
        f"(no control.json; start one with: modelmine node --data-dir {tmp_path})"
    )


def test_stale_control_json_is_one_line(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    write_control_info(tmp_path, ControlInfo("ws://127.0.0.1:9", new_token(), finished.pid))
    with pytest.raises(ControlUnavailable) as stale:
        call_node(tmp_path, "rpc.ping")
    message = str(stale.value)
    assert "\n" not in message
    assert message.startswith(f"no node is running for data dir {tmp_path} (stale control.json")
    assert message.endswith(f"start one with: modelmine node --data-dir {tmp_path})")


async def test_refused_connection_is_one_line(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        with trio.socket.socket() as sock:  # a port that nobody listens on
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        write_control_info(
            tmp_path, ControlInfo(f"ws://127.0.0.1:{port}", new_token(), os.getpid())
        )
        with pytest.raises(ControlUnavailable) as refused:
            async with open_control_client(tmp_path):
                pass  # pragma: no cover - the connection fails
        assert str(refused.value) == (
            f"no node is running for data dir {tmp_path} (ws://127.0.0.1:{port}: connection "
            f"refused; start one with: modelmine node --data-dir {tmp_path})"
        )


def test_corrupt_control_json(tmp_path: Path) -> None:
    (tmp_path / CONTROL_FILE).write_text('{"url": 1}')
    with pytest.raises(ControlUnavailable, match="is corrupt"):
        call_node(tmp_path, "rpc.ping")


async def test_control_api_is_loopback_only(nursery: trio.Nursery) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await nursery.start(Node().server.run, "0.0.0.0")
