"""An in-memory network of real :class:`~modelmine.p2p.overlay.Overlay` cores, in virtual time.

Events sit in one heap ordered by (time, sequence number); a single seeded RNG drives every
random choice (link delay, loss, dial order), so a run is fully determined by its seed. Links
are reliable and ordered like TCP unless a loss rate is set. Each node signs a real heartbeat
every interval, exactly as a real node does.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from modelmine.p2p.membership import HEARTBEAT_DOMAIN, Heartbeat
from modelmine.p2p.overlay import (
    HEARTBEAT_TOPIC,
    Action,
    Deliver,
    Dial,
    Disconnect,
    Overlay,
    OverlayConfig,
    Send,
)
from modelmine.signing import Signed, sign

CHAIN_ID = "sim-net"


@dataclass
class SimNode:
    index: int
    key: SigningKey
    overlay: Overlay
    address: str
    alive: bool = True
    seq: int = 0
    delivered: list[Deliver] = field(default_factory=list)

    @property
    def node_id(self) -> bytes:
        return self.overlay.node_id


class OverlayNet:
    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        delay: tuple[float, float] = (0.005, 0.05),
        loss: float = 0.0,
        config: OverlayConfig | None = None,
        interval: float = 5.0,
        tick: float = 1.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.delay = delay
        self.loss = loss
        self.interval = interval
        self.tick_every = tick
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self.frames_sent = 0
        self.nodes: list[SimNode] = []
        self._by_id: dict[bytes, SimNode] = {}
        self._links: set[tuple[bytes, bytes]] = set()
        for i in range(n):
            key = SigningKey(self.rng.randbytes(32))
            overlay = Overlay(
                key, CHAIN_ID, config or OverlayConfig(), rng=random.Random(self.rng.random())
            )
            overlay.members.interval = interval
            node = SimNode(i, key, overlay, f"ws://10.0.{i // 250}.{i % 250}:7700")
            overlay.set_self_record(node.address, f"node-{i}", self.now)
            self.nodes.append(node)
            self._by_id[node.node_id] = node
        for node in self.nodes:
            self._at(self.rng.uniform(0, interval), functools.partial(self._heartbeat, node))
            self._at(self.rng.uniform(0, tick), functools.partial(self._tick, node))

    # ---- scheduling ----

    def _at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._counter), fn))

    def run_until(self, t: float) -> None:
        while self._queue and self._queue[0][0] <= t:
            when, _, fn = heapq.heappop(self._queue)
            self.now = when
            fn()
        self.now = t

    def run_until_true(self, predicate: Callable[[], bool], deadline: float) -> bool:
        while self.now < deadline:
            if predicate():
                return True
            self.run_until(self.now + 0.1)
        return predicate()

    # ---- topology and faults ----

    def seed_peers(self, node: SimNode, others: list[SimNode]) -> None:
        for other in others:
            self._apply(node, node.overlay.add_known(other.node_id, other.address))

    def crash(self, node: SimNode) -> None:
        node.alive = False
        for a, b in list(self._links):
            if node.node_id in (a, b):
                self._drop_link(a, b)

    # ---- node behaviour ----

    def _heartbeat(self, node: SimNode) -> None:
        if node.alive:
            node.seq += 1
            hb = Heartbeat(
                node.node_id,
                node.seq,
                self.now,
                f"node-{node.index}",
                node.address,
                "sim",
                "ONLINE",
                {"slots": 1, "busy": 0},
                {"cpu_percent": 1.0},
            )
            statement = sign(node.key, HEARTBEAT_DOMAIN, CHAIN_ID, hb.to_payload())
            self._apply(node, node.overlay.publish(HEARTBEAT_TOPIC, statement, self.now))
        self._at(self.now + self.interval, lambda: self._heartbeat(node))

    def _tick(self, node: SimNode) -> None:
        if node.alive:
            self._apply(node, node.overlay.tick(self.now))
        self._at(self.now + self.tick_every, lambda: self._tick(node))

    def publish(self, node: SimNode, topic: str, statement: Signed) -> None:
        self._apply(node, node.overlay.publish(topic, statement, self.now))

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(node, action)
            elif isinstance(action, Dial):
                self._dial(node, action)
            elif isinstance(action, Disconnect):
                # Like a real close: frames already sent still arrive, then the link drops.
                peer = action.peer
                self._at(
                    self.now + self.delay[1] * 1.01,
                    functools.partial(self._drop_link, node.node_id, peer),
                )
            elif isinstance(action, Deliver):
                node.delivered.append(action)

    def _send(self, node: SimNode, action: Send) -> None:
        if (node.node_id, action.peer) not in self._links:
            return
        self.frames_sent += 1
        if self.loss and self.rng.random() < self.loss:
            return
        target = self._by_id[action.peer]

        def arrive() -> None:
            if target.alive and (node.node_id, target.node_id) in self._links:
                self._apply(target, target.overlay.on_frame(node.node_id, action.frame, self.now))

        self._at(self.now + self.rng.uniform(*self.delay), arrive)

    def _dial(self, node: SimNode, action: Dial) -> None:
        target = self._by_id.get(action.node_id)

        def connected() -> None:
            if not node.alive:
                return
            if target is None or not target.alive:
                node.overlay.on_dial_failed(action.node_id, self.now)
                return
            if (node.node_id, target.node_id) in self._links:
                node.overlay.on_dial_failed(action.node_id, self.now)
                return
            self._links.add((node.node_id, target.node_id))
            self._links.add((target.node_id, node.node_id))
            self._apply(target, target.overlay.on_link_up(node.node_id, False, self.now))
            self._apply(node, node.overlay.on_link_up(target.node_id, True, self.now))

        self._at(self.now + 2 * self.rng.uniform(*self.delay), connected)

    def _drop_link(self, a: bytes, b: bytes) -> None:
        if (a, b) not in self._links:
            return
        self._links.discard((a, b))
        self._links.discard((b, a))
        for x, y in ((a, b), (b, a)):
            node = self._by_id[x]
            if node.alive:
                self._apply(node, node.overlay.on_link_down(y, self.now))

    def statistics(self) -> dict[str, Any]:
        return {"now": self.now, "links": len(self._links) // 2, "frames": self.frames_sent}
