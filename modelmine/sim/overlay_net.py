"""An in-memory network of real :class:`~modelmine.p2p.overlay.Overlay` cores, in virtual time.

Events sit in one heap ordered by (time, sequence number); one seeded RNG drives every random
choice of the network (delay, loss, duplication, reordering) and seeds each node's own RNG, so
a run is fully determined by its seed, in any process (nothing iterates a set of bytes).

The network carries two kinds of traffic between nodes: frames on *links* (which a node dials,
as the real host does), and *direct* frames to any node (the overlay's membership probes,
follows and requests, as a real node would send them over UDP or a short-lived link). Both go
through the same per-pair faults: delay, loss, duplication, late delivery (reordering) and
partitions, symmetric or one way. Nodes can crash (their memory is lost; a restart begins
from the peers they had remembered, with a new heartbeat seq), and pause (no event reaches
them until they resume; what arrived meanwhile is handled in arrival order, as a process
stopped with SIGSTOP would).

Each node signs heartbeats when its overlay says one is due, with a keyed hash standing in for
Ed25519 (see :mod:`modelmine.sim.keyed`). A node is woken exactly when its overlay asks
(``next_tick``), so an idle node costs nothing. This is a heap of events rather than trio's
``MockClock``: the same determinism (virtual time, one seed), without a task switch per
message, which is what lets a thousand nodes run ten virtual minutes in well under two minutes.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from nacl.signing import SigningKey

from modelmine.p2p.membership import HEARTBEAT_DOMAIN, Heartbeat, Membership, SwimConfig
from modelmine.p2p.overlay import (
    HEARTBEAT_TOPIC,
    Action,
    Deliver,
    Dial,
    Disconnect,
    MembersChanged,
    Overlay,
    OverlayConfig,
    Request,
    Response,
    Send,
)
from modelmine.signing import Signed
from modelmine.sim.keyed import KeyedSigner

CHAIN_ID: Final = "sim-net"

_FRAME, _WAKE, _CALL, _LINK_UP, _LINK_DOWN = range(5)
_NEVER: Final = math.inf


@dataclass(frozen=True)
class Faults:
    """What happens to each message between two nodes."""

    delay: tuple[float, float] = (0.005, 0.05)
    loss: float = 0.0
    duplicate: float = 0.0
    late: float = 0.0  # chance that a message is held back by up to late_delay (reordering)
    late_delay: float = 0.5


@dataclass
class NetCounters:
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    late: int = 0
    cut: int = 0  # dropped by a partition
    to_down: int = 0  # arrived at a crashed node
    crashes: int = 0
    restarts: int = 0
    pauses: int = 0
    partitions: int = 0


@dataclass(eq=False)
class SimNode:
    index: int
    key: SigningKey
    node_id: bytes
    address: str
    name: str
    overlay: Overlay
    up: bool = True
    paused_until: float = 0.0
    epoch: int = 0  # bumped by a crash; events of an older epoch are void
    wake_at: float = _NEVER
    seq: int = 0  # heartbeat seq; survives a crash, like the wall clock it stands for
    status: str = "ONLINE"
    slots: int = 1
    busy: int = 0
    remembered: list[bytes] = field(default_factory=list)  # its peer store
    delivered: list[Deliver] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.up


class OverlayNet:
    """``n`` nodes. ``formed=True`` starts from a network that has already met: every table
    holds every node's first heartbeat and address (as after the join phase), without the
    cost of a thousand joins; links still form by dialing."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        faults: Faults | None = None,
        config: OverlayConfig | None = None,
        swim: SwimConfig | None = None,
        interval: float = 5.0,
        formed: bool = False,
        record: bool = True,
        chain_id: str = CHAIN_ID,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.faults = faults or Faults()
        self.link_faults: dict[tuple[int, int], Faults] = {}
        self.config = config or OverlayConfig()
        self.swim = swim or SwimConfig()
        self.interval = interval
        self.record = record
        self.chain_id = chain_id
        self.keys = KeyedSigner(chain_id)
        self._heartbeats: dict[bytes, Heartbeat] = {}
        self.counters = NetCounters()
        self._queue: list[tuple[float, int, int, Any, Any, Any]] = []
        self._counter = itertools.count()
        self._links: set[tuple[int, int]] = set()
        self._adjacent: list[set[int]] = []
        self._sides: list[int] | None = None
        self._symmetric = True
        self._blocked: set[tuple[int, int]] = set()
        self.nodes: list[SimNode] = []
        self._index: dict[bytes, int] = {}
        for i in range(n):
            self._add_node(i)
        if formed:
            self._form()
        for node in self.nodes:
            self._wake(node, self.rng.uniform(0, self.swim.probe_interval))

    # ---- nodes ----

    def _add_node(self, i: int) -> None:
        key = SigningKey(self.rng.randbytes(32))
        node_id = bytes(key.verify_key)
        self.keys.enroll(node_id, self.rng.randbytes(32))
        node = SimNode(
            i,
            key,
            node_id,
            f"ws://10.{i // 62500}.{i // 250 % 250}.{i % 250}:7700",
            f"node-{i}",
            self._new_overlay(key, node_id, random.Random(self.rng.random())),
        )
        node.seq = 1000 * (i + 1)
        node.slots = self.initial_slots(i)
        self.nodes.append(node)
        self._adjacent.append(set())
        self._index[node_id] = i
        node.overlay.set_self_record(node.address, node.name, self.now)

    def initial_slots(self, index: int) -> int:
        """Training slots of node ``index`` (what its heartbeats advertise)."""
        return 1

    def _new_overlay(self, key: SigningKey, node_id: bytes, rng: random.Random) -> Overlay:
        members = Membership(node_id, self.interval, config=self.swim, rng=rng)
        return Overlay(
            key,
            self.chain_id,
            self.config,
            membership=members,
            rng=rng,
            verifier=self.keys.verify,
            signer=self.keys.signer_for(node_id),
            read_heartbeat=self._read_heartbeat,
        )

    def _read_heartbeat(self, statement: Signed) -> Heartbeat:
        # Validation is a pure function of the bytes, so each heartbeat is validated once per
        # run rather than once per node that receives it (as consensus_net decodes votes).
        # Signatures are still checked by every node.
        cache = self._heartbeats
        found = cache.get(statement.raw)
        if found is None:
            found = Heartbeat.from_statement(statement)
            if len(cache) >= 8192:
                cache.clear()
            cache[statement.raw] = found
        return found

    def _form(self) -> None:
        first = [self._heartbeat_statement(node) for node in self.nodes]
        beats = [(Heartbeat.from_statement(s), s.raw) for s in first]
        peers = [(n.node_id, n.address, n.name) for n in self.nodes]
        for node in self.nodes:
            members = node.overlay.members
            members.adopt(beats, self.now)
            node.overlay.remember(peers)
            capacity = {"slots": node.slots, "busy": node.busy}
            # As if each node had joined at its own time: heartbeats come spread out.
            when = self.now - self.rng.uniform(0, members.heartbeat_every())
            members.mark_heartbeat(when, node.status, capacity)

    def node(self, node_id: bytes) -> SimNode:
        return self.nodes[self._index[node_id]]

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.up]

    # ---- scheduling ----

    def at(
        self, when: float, fn: Callable[..., None], *args: Any, node: SimNode | None = None
    ) -> None:
        """Run ``fn(*args)`` at virtual time ``when``; if ``node`` is given, only while that
        node is up, and after it resumes if it is paused then."""
        heapq.heappush(
            self._queue,
            (
                when,
                next(self._counter),
                _CALL,
                fn,
                args,
                (node.index, node.epoch) if node else None,
            ),
        )

    def _wake(self, node: SimNode, when: float) -> None:
        if when < node.wake_at:
            node.wake_at = when
            heapq.heappush(
                self._queue, (when, next(self._counter), _WAKE, node.index, node.epoch, None)
            )

    def _rewake(self, node: SimNode) -> None:
        # A wake that is no longer needed is not removed from the heap: it is skipped when it
        # comes up (its time is not the node's wake_at), which costs far less than a tick.
        node.overlay.take_wake_hint()
        when = node.overlay.next_tick()
        if when <= self.now:
            when = self.now + 0.001
        if when != node.wake_at:
            node.wake_at = when
            heapq.heappush(
                self._queue, (when, next(self._counter), _WAKE, node.index, node.epoch, None)
            )

    def run_until(self, t: float) -> None:
        # The cyclic garbage collector is paused while events run: the simulator makes no
        # reference cycles (a full collection after a 1,000-node run frees nothing), and
        # scanning its million long-lived objects over and over would cost a tenth of the run.
        paused = gc.isenabled()
        gc.disable()
        try:
            self._run_until(t)
        finally:
            if paused:
                gc.enable()

    def _run_until(self, t: float) -> None:
        queue = self._queue
        nodes = self.nodes
        links = self._links
        pop, push = heapq.heappop, heapq.heappush
        while queue and queue[0][0] <= t:
            event = pop(queue)
            now, _, kind, a, b, c = event
            self.now = now
            if kind == _FRAME:
                node = nodes[a]
                if not node.up:
                    self.counters.to_down += 1
                    continue
                if node.paused_until > now:
                    push(queue, (node.paused_until, next(self._counter), kind, a, b, c))
                    continue
                sender = nodes[b].node_id
                if (b, a) in links:
                    actions = node.overlay.on_frame(sender, c, now)
                else:
                    actions = node.overlay.on_datagram(sender, c, now)
                if actions:
                    self._apply(node, actions)
                hint = node.overlay.take_wake_hint()
                if hint < node.wake_at:
                    node.wake_at = hint = max(hint, now + 0.001)
                    push(queue, (hint, next(self._counter), _WAKE, a, node.epoch, None))
            elif kind == _WAKE:
                node = nodes[a]
                if b != node.epoch or now != node.wake_at or not node.up:
                    continue
                node.wake_at = _NEVER
                if node.paused_until > now:
                    self._wake(node, node.paused_until)
                    continue
                actions = node.overlay.tick(now)  # nothing, cheaply, if a timer moved later
                if actions:
                    self._apply(node, actions)
                self.heartbeat(node)
                self._rewake(node)
            elif kind == _CALL:
                if c is not None:
                    node = nodes[c[0]]
                    if not node.up or node.epoch != c[1]:
                        continue
                    if node.paused_until > now:
                        push(queue, (node.paused_until, next(self._counter), kind, a, b, c))
                        continue
                a(*b)
            elif kind == _LINK_UP:
                self._link_up(nodes[a], b, c)
            else:
                self._link_down(a, b)
        self.now = max(self.now, t)

    def run_until_true(
        self, predicate: Callable[[], bool], deadline: float, step: float = 0.1
    ) -> bool:
        while self.now < deadline:
            if predicate():
                return True
            self.run_until(min(deadline, self.now + step))
        return predicate()

    # ---- faults ----

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Cut every message between nodes of different groups; unnamed nodes are alone."""
        sides = list(range(len(groups), len(groups) + len(self.nodes)))
        for g, members in enumerate(groups):
            for i in members:
                sides[i] = g
        self._sides, self._symmetric, self._blocked = sides, True, set()
        self.counters.partitions += 1

    def cut_one_way(self, senders: Sequence[int], receivers: Sequence[int]) -> None:
        """Drop messages from ``senders`` to ``receivers`` only (an asymmetric partition)."""
        sides = [2] * len(self.nodes)
        for i in senders:
            sides[i] = 0
        for i in receivers:
            sides[i] = 1
        self._sides, self._symmetric, self._blocked = sides, False, {(0, 1)}
        self.counters.partitions += 1

    def heal(self) -> None:
        self._sides = None

    def reachable(self, src: int, dst: int) -> bool:
        sides = self._sides
        if sides is None or sides[src] == sides[dst]:
            return True
        return not self._symmetric and (sides[src], sides[dst]) not in self._blocked

    def crash(self, node: SimNode) -> None:
        """Stop a node at once; its links break (the peers see them close)."""
        if not node.up:
            return
        self.counters.crashes += 1
        node.remembered = [k for k, _, _ in node.overlay.known_peers()]
        node.up = False
        node.epoch += 1
        node.wake_at = _NEVER
        node.busy = 0
        for peer in sorted(self._adjacent[node.index]):
            self._schedule_link_down(node.index, peer, self.faults.delay[1])

    def restart(self, node: SimNode) -> None:
        """Start a crashed node again: a fresh overlay, the peers it remembered, a newer seq."""
        if node.up:
            return
        self.counters.restarts += 1
        node.up = True
        node.paused_until = 0.0
        node.status = "ONLINE"
        node.overlay = self._new_overlay(node.key, node.node_id, random.Random(self.rng.random()))
        node.overlay.set_self_record(node.address, node.name, self.now)
        node.seq += 100_000  # wall-clock milliseconds moved on
        for node_id in node.remembered:
            other = self.nodes[self._index[node_id]]
            node.overlay.add_known(node_id, other.address, other.name)
        self.heartbeat(node)
        self._wake(node, self.now)

    def pause(self, node: SimNode, seconds: float) -> None:
        """Freeze a node (a stop-the-world pause): events wait until it resumes."""
        if node.up:
            self.counters.pauses += 1
            node.paused_until = max(node.paused_until, self.now + seconds)

    # ---- node behaviour ----

    def heartbeat(self, node: SimNode) -> None:
        """Sign and publish a heartbeat if the overlay says one is due, as node.py does."""
        capacity = {"slots": node.slots, "busy": node.busy}
        if node.overlay.heartbeat_due(self.now, node.status, capacity):
            statement = self._heartbeat_statement(node)
            self._apply(node, node.overlay.publish(HEARTBEAT_TOPIC, statement, self.now))

    def _heartbeat_statement(self, node: SimNode) -> Signed:
        node.seq += 1
        hb = Heartbeat(
            node.node_id,
            node.seq,
            self.now,
            node.name,
            node.address,
            "sim",
            node.status,
            {"slots": node.slots, "busy": node.busy},
            {
                "cpu_count": 8,
                "cpu_percent": round(self.rng.uniform(0, 100), 1),
                "load_avg": [1.0, 0.8, 0.5],
                "memory_total": 16 * 2**30,
                "memory_used": 4 * 2**30,
                "memory_percent": 25.0,
                "uptime": int(self.now),
                "hostname": node.name,
                "platform": "Linux 6.1",
                "arch": "x86_64",
            },
        )
        return self.keys.sign(node.node_id, HEARTBEAT_DOMAIN, hb.to_payload())

    def seed_peers(self, node: SimNode, others: list[SimNode]) -> None:
        for other in others:
            self._apply(node, node.overlay.add_known(other.node_id, other.address, other.name))
        self._rewake(node)

    def publish(self, node: SimNode, topic: str, statement: Signed) -> None:
        self._apply(node, node.overlay.publish(topic, statement, self.now))
        self._rewake(node)

    def apply(self, node: SimNode, actions: list[Action]) -> None:
        """Carry out actions a node's overlay returned to a caller outside the network."""
        self._apply(node, actions)
        self._rewake(node)

    # ---- hooks for what runs above the overlay ----

    def on_deliver(self, node: SimNode, delivery: Deliver) -> None:
        if self.record:
            node.delivered.append(delivery)

    def on_members(self, node: SimNode, changed: MembersChanged) -> None:
        pass

    def on_request(self, node: SimNode, request: Request) -> None:
        pass

    def on_response(self, node: SimNode, response: Response) -> None:
        pass

    # ---- carrying out actions ----

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Send:
                self._transmit(node.index, action.peer, action.frame)  # type: ignore[union-attr]
            elif kind is Deliver:
                self.on_deliver(node, action)  # type: ignore[arg-type]
            elif kind is MembersChanged:
                self.on_members(node, action)  # type: ignore[arg-type]
            elif kind is Dial:
                self._dial(node, action)  # type: ignore[arg-type]
            elif kind is Disconnect:
                peer = self._index.get(action.peer)  # type: ignore[union-attr]
                if peer is not None:
                    # Like a real close: frames already sent still arrive, then the link drops.
                    self._schedule_link_down(node.index, peer, self.faults.delay[1] * 1.01)
            elif kind is Request:
                self.on_request(node, action)  # type: ignore[arg-type]
            elif kind is Response:
                self.on_response(node, action)  # type: ignore[arg-type]

    def _transmit(self, src: int, peer: bytes, frame: bytes) -> None:
        dst = self._index.get(peer)
        if dst is None:
            return
        counters = self.counters
        counters.sent += 1
        if self._sides is not None and not self.reachable(src, dst):
            counters.cut += 1
            return
        f = self.link_faults.get((src, dst), self.faults) if self.link_faults else self.faults
        rng = self.rng
        if f.loss and rng.random() < f.loss:
            counters.lost += 1
            return
        copies = 1
        if f.duplicate and rng.random() < f.duplicate:
            counters.duplicated += 1
            copies = 2
        lo, hi = f.delay
        for _ in range(copies):
            delay = lo + (hi - lo) * rng.random()
            if f.late and rng.random() < f.late:
                counters.late += 1
                delay += rng.random() * f.late_delay
            heapq.heappush(
                self._queue, (self.now + delay, next(self._counter), _FRAME, dst, src, frame)
            )

    def _dial(self, node: SimNode, action: Dial) -> None:
        target = self._index.get(action.node_id, -1)
        lo, hi = self.faults.delay
        delay = 2 * (lo + (hi - lo) * self.rng.random())
        heapq.heappush(
            self._queue,
            (
                self.now + delay,
                next(self._counter),
                _LINK_UP,
                node.index,
                (target, action.node_id),
                node.epoch,
            ),
        )

    def _link_up(self, node: SimNode, target: tuple[int, bytes], epoch: int) -> None:
        if not node.up or node.epoch != epoch:
            return
        if node.paused_until > self.now:
            heapq.heappush(
                self._queue,
                (node.paused_until, next(self._counter), _LINK_UP, node.index, target, epoch),
            )
            return
        t, target_id = target
        other = self.nodes[t] if t >= 0 else None
        if (
            other is None
            or not other.up
            or other.paused_until > self.now
            or (node.index, t) in self._links
            or not self.reachable(node.index, t)
            or not self.reachable(t, node.index)
        ):
            node.overlay.on_dial_failed(target_id, self.now)
            self._rewake(node)
            return
        self._links.add((node.index, t))
        self._links.add((t, node.index))
        self._adjacent[node.index].add(t)
        self._adjacent[t].add(node.index)
        self._apply(other, other.overlay.on_link_up(node.node_id, False, self.now))
        self._apply(node, node.overlay.on_link_up(other.node_id, True, self.now))
        self._rewake(other)
        self._rewake(node)

    def _schedule_link_down(self, a: int, b: int, delay: float) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._counter), _LINK_DOWN, a, b, None))

    def _link_down(self, a: int, b: int) -> None:
        if (a, b) not in self._links:
            return
        self._links.discard((a, b))
        self._links.discard((b, a))
        self._adjacent[a].discard(b)
        self._adjacent[b].discard(a)
        for x, y in ((a, b), (b, a)):
            node = self.nodes[x]
            if node.up:
                self._apply(node, node.overlay.on_link_down(self.nodes[y].node_id, self.now))
                self._rewake(node)

    # ---- views ----

    def links_of(self, node: SimNode) -> int:
        return len(self._adjacent[node.index])

    def statistics(self) -> dict[str, Any]:
        return {"now": self.now, "links": len(self._links) // 2, "frames": self.counters.sent}
