"""Peer link benchmarks: encrypted PeerLink against plain trio-websocket, and handshake rates.

Run with ``.venv/bin/python bench/bench_link.py``. Both ends run in this process over real
loopback sockets, so every figure includes the cost of both sides. Baselines are measured in
the same run, alternating with the measured code:

- one-way throughput with 64 KiB and with 100-byte messages: PeerLink (handshake done
  beforehand, every frame sealed and opened) against plain trio-websocket with the same
  message size limit, queue size and receive buffer. Goal: ratio at least 0.6.
- full connects per second (TCP + websocket upgrade + handshake + close) against plain
  websocket connects (TCP + upgrade + close).
- sans-IO handshakes per second (both roles, three frames) against the bare cryptography a
  handshake cannot avoid: two X25519 key pairs and exchanges, two Ed25519 signatures and
  two verifications.

``run()`` returns the rows {name, value, unit, baseline, ratio, goal} for ``make bench``.
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nacl.signing import SigningKey, VerifyKey
from trio_websocket import WebSocketRequest

from modelmine.p2p.channel import MAX_FRAME
from modelmine.p2p.handshake import Handshake
from modelmine.p2p.transport import (
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BUFFER_SIZE,
    PeerLink,
    connect_peer,
    serve_peers,
)

NET = hashlib.sha256(b"bench genesis").digest()
CLIENT, SERVER = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)
WS_OPTIONS: dict[str, Any] = {
    "message_queue_size": MESSAGE_QUEUE_SIZE,
    "max_message_size": MAX_FRAME,
    "receive_buffer_size": RECEIVE_BUFFER_SIZE,
}
TRIALS = 5
DONE = b"done"


def _row(name: str, value: float, unit: str, baseline: float, goal: str) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": value / baseline if baseline else float("nan"),
        "goal": goal,
    }


# -- one-way throughput --

Send = Callable[[bytes], Awaitable[None]]


async def _send_burst(
    send: Send, receive: Callable[[], Awaitable[bytes]], size: int, count: int
) -> float:
    message = bytes(size)
    start = time.perf_counter()
    for _ in range(count):
        await send(message)
    if await receive() != DONE:
        raise RuntimeError("receiver lost messages")
    return time.perf_counter() - start


async def _link_throughput(size: int, count: int) -> float:
    """Seconds for ``count`` messages of ``size`` bytes over one PeerLink."""

    async def sink(link: PeerLink) -> None:
        for _ in range(count):
            await link.receive()
        await link.send(DONE)
        await link.receive()  # until the client closes

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_peers, sink, "127.0.0.1", 0, identity=SERVER, network_id=NET)
        )
        link = await connect_peer(
            nursery, f"ws://127.0.0.1:{port}", identity=CLIENT, network_id=NET
        )
        elapsed = await _send_burst(link.send, link.receive, size, count)
        await link.aclose()
        nursery.cancel_scope.cancel()
    return elapsed


async def _plain_throughput(size: int, count: int) -> float:
    """The same over plain trio-websocket with the same limits."""

    async def sink(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for _ in range(count):
            await ws.get_message()
        await ws.send_message(DONE)
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await ws.get_message()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, sink, "127.0.0.1", 0, None, **WS_OPTIONS)
        )
        ws = await trio_websocket.connect_websocket_url(
            nursery, f"ws://127.0.0.1:{server.port}", **WS_OPTIONS
        )

        async def receive() -> bytes:
            message = await ws.get_message()
            return message if isinstance(message, bytes) else message.encode()

        elapsed = await _send_burst(ws.send_message, receive, size, count)
        await ws.aclose()
        nursery.cancel_scope.cancel()
    return elapsed


def _throughput_rows(size: int, count: int, label: str) -> dict[str, Any]:
    ours, plain = [], []
    trio.run(_link_throughput, size, count // 10)  # warm up
    for _ in range(TRIALS):
        ours.append(trio.run(_link_throughput, size, count))
        plain.append(trio.run(_plain_throughput, size, count))
    if size >= 1024:
        mib = size * count / 2**20
        value, base, unit = mib / statistics.median(ours), mib / statistics.median(plain), "MiB/s"
    else:
        value, base, unit = (
            count / statistics.median(ours),
            count / statistics.median(plain),
            "msg/s",
        )
    return _row(
        f"PeerLink one-way, {label} messages (baseline: plain ws)", value, unit, base, ">= 0.6x"
    )


# -- connects --


async def _connect_rate(seconds: float, encrypted: bool) -> float:
    async def handler_link(link: PeerLink) -> None:
        pass

    async def handler_plain(request: WebSocketRequest) -> None:
        await request.accept()

    count = 0
    async with trio.open_nursery() as nursery:
        if encrypted:
            port = await nursery.start(
                partial(serve_peers, handler_link, "127.0.0.1", 0, identity=SERVER, network_id=NET)
            )
        else:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    handler_plain,
                    "127.0.0.1",
                    0,
                    None,
                    **WS_OPTIONS,
                )
            )
            port = server.port
        url = f"ws://127.0.0.1:{port}"
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            async with trio.open_nursery() as client:
                if encrypted:
                    link = await connect_peer(client, url, identity=CLIENT, network_id=NET)
                    await link.aclose()
                else:
                    ws = await trio_websocket.connect_websocket_url(client, url, **WS_OPTIONS)
                    await ws.aclose()
            count += 1
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return count / elapsed


def bench_connects(seconds: float = 1.0) -> dict[str, Any]:
    ours = statistics.median(trio.run(_connect_rate, seconds, True) for _ in range(3))
    plain = statistics.median(trio.run(_connect_rate, seconds, False) for _ in range(3))
    return _row(
        "connect + handshake + close over loopback (baseline: plain ws)",
        ours,
        "/s",
        plain,
        "report",
    )


# -- sans-IO handshake --


def _handshake_once() -> None:
    initiator = Handshake.initiator(CLIENT, NET)
    responder = Handshake.responder(SERVER, NET)
    hs2 = responder.receive(initiator.start())
    assert hs2 is not None
    hs3 = initiator.receive(hs2)
    assert hs3 is not None
    responder.receive(hs3)
    if not (initiator.done and responder.done):
        raise RuntimeError("handshake did not complete")


_VERIFY = (VerifyKey(bytes(CLIENT.verify_key)), VerifyKey(bytes(SERVER.verify_key)))


def _bare_crypto_once() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a.exchange(b.public_key())
    b.exchange(a.public_key())
    for signer, verifier in zip((CLIENT, SERVER), _VERIFY):
        signed = signer.sign(b"x" * 64)
        verifier.verify(signed)


def _rate(fn: Callable[[], None], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            fn()
        count += 50
    return count / elapsed


def bench_sans_io(seconds: float = 0.5) -> dict[str, Any]:
    ours, bare = [], []
    for _ in range(TRIALS):
        ours.append(_rate(_handshake_once, seconds))
        bare.append(_rate(_bare_crypto_once, seconds))
    return _row(
        "sans-IO handshake, both roles (baseline: its bare crypto)",
        statistics.median(ours),
        "/s",
        statistics.median(bare),
        "report",
    )


def run() -> list[dict[str, Any]]:
    return [
        _throughput_rows(64 * 1024, 1_000, "64 KiB"),
        _throughput_rows(100, 20_000, "100 B"),
        bench_connects(),
        bench_sans_io(),
    ]


def main() -> None:
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.report import print_rows

    print_rows(run())


if __name__ == "__main__":
    main()
