"""The node daemon: the one module that wires every layer together.

A ``Node`` owns, in one nursery: the peer host (links, gossip, membership), the heartbeat
loop, and the local control API. Later layers (ledger, jobs) plug in here.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from nacl.signing import SigningKey

from modelmine import __version__, control
from modelmine.consensus.service import CONSENSUS_TOPIC, RECORDS_TOPIC, ChainService
from modelmine.consensus.types import Block, Commit
from modelmine.control import InvalidParams
from modelmine.genesis import GENESIS_FILE, Genesis, GenesisError, make_genesis
from modelmine.identity import load_or_create_node_key, short_id
from modelmine.jobs.api import JobsApi
from modelmine.jobs.outbox import Outbox
from modelmine.jobs.progress import PROGRESS_FAMILY, ProgressReport
from modelmine.jobs.worker import JobWorker
from modelmine.ledger import DB_FILE, LedgerStore, StoreError
from modelmine.ledger_api import LedgerApi, block_summary
from modelmine.metrics import MetricsSampler
from modelmine.p2p.admission import InboundLimits
from modelmine.p2p.blobs import BlobService, BlobStore
from modelmine.p2p.host import Host
from modelmine.p2p.membership import HEARTBEAT_DOMAIN, Heartbeat, MemberChange, Status
from modelmine.p2p.overlay import HEARTBEAT_TOPIC, Deliver, Overlay, OverlayConfig
from modelmine.p2p.peerstore import PeerStore
from modelmine.signing import sign

log = logging.getLogger(__name__)

DEFAULT_SLOTS: Final = 1
HEARTBEAT_CHECK: Final = 1.0  # seconds between asking the overlay whether a heartbeat is due


class NodeError(Exception):
    """A node that cannot start; the text says why."""


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    control_host: str = "127.0.0.1"
    control_port: int = 0
    bootstrap: tuple[str, ...] = ()
    genesis_path: Path | None = None
    name: str = ""
    maintenance: bool = False
    slots: int = DEFAULT_SLOTS
    advertise: str | None = None
    limits: InboundLimits = field(default_factory=InboundLimits)


def load_genesis(config: NodeConfig, key: SigningKey) -> Genesis:
    """The genesis given, else the one in the data dir, else a new single-node network."""
    local = config.data_dir / GENESIS_FILE
    if config.genesis_path is not None:
        genesis = Genesis.load(config.genesis_path)
        if local.exists() and Genesis.load(local).network_id != genesis.network_id:
            raise NodeError(
                f"{local} belongs to another network than {config.genesis_path}; "
                "use a fresh data dir for a different network"
            )
        if not local.exists():
            genesis.save(local)
        return genesis
    if local.exists():
        return Genesis.load(local)
    genesis = make_genesis([(bytes(key.verify_key), config.name or "node")])
    genesis.save(local)
    log.info("no genesis given: started a single-node network %s", genesis.chain_id)
    return genesis


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.key = load_or_create_node_key(config.data_dir)
        self.node_id = bytes(self.key.verify_key)
        try:
            self.genesis = load_genesis(config, self.key)
        except GenesisError as exc:
            raise NodeError(str(exc)) from None
        self.name = config.name or f"node-{short_id(self.node_id)}"
        self.chain_id = self.genesis.chain_id
        params = self.genesis.membership
        # Validators under load exchange a few hundred consensus frames per second per link;
        # the per-link budget must leave honest traffic far below it (a flood is 100x more).
        self.overlay = Overlay(
            self.key, self.chain_id, OverlayConfig(frames_per_second=2000.0, frame_burst=4000.0)
        )
        self.overlay.members.interval = params.heartbeat_interval
        self.overlay.members.suspect_after = params.suspect_after
        self.overlay.members.offline_after = params.offline_after
        self.peerstore = PeerStore(config.data_dir)
        self.host = Host(
            self.key,
            self.genesis.network_id,
            self.overlay,
            listen_host=config.listen_host,
            listen_port=config.listen_port,
            name=self.name,
            bootstrap=config.bootstrap,
            peerstore=self.peerstore,
            on_deliver=self._on_deliver,
            on_members=self._on_members,
            advertise=config.advertise,
            limits=config.limits,
        )
        try:
            self.store = LedgerStore.open(config.data_dir / DB_FILE, self.genesis)
            self.state = self.store.load_state()
        except StoreError as exc:
            raise NodeError(f"ledger database: {exc}") from None
        self.chain = ChainService(
            self.genesis, self.key, self.state, self.store, self.host, on_block=self._on_block
        )
        self.control = control.ControlServer(control.new_token())
        self.ledger_api = LedgerApi(self.chain, self.state, self.store, self.chain_id)
        self.blobs = BlobService(self.host, BlobStore(config.data_dir / "blobs"))
        self.worker = JobWorker(
            key=self.key,
            chain_id=self.chain_id,
            state=self.state,
            outbox=Outbox(self.chain, self.state, self.node_id),
            blobs=self.blobs,
            host=self.host,
            members=self.overlay.members,
            slots=config.slots,
            maintenance=config.maintenance,
            on_progress=self._on_progress,
        )
        self.jobs_api = JobsApi(
            self.chain,
            self.state,
            self.worker,
            self.blobs,
            self.overlay.members,
            self.node_id,
            self.chain_id,
        )
        self.metrics = MetricsSampler()
        self.started = time.time()
        self._seq = 0
        self._control_url = ""
        self._register_methods()
        self._replay_job_events()

    # ---- lifecycle ----

    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                address = await nursery.start(self.host.run)
                await nursery.start(self.chain.run)
                await nursery.start(self.worker.run)
                self._control_url = await nursery.start(
                    functools.partial(self.control.run, data_dir=self.config.data_dir),
                    self.config.control_host,
                    self.config.control_port,
                )
                nursery.start_soon(self._heartbeat_loop)
                log.info(
                    "node %s (%s) of %s listening on %s, control on %s",
                    self.name,
                    short_id(self.node_id),
                    self.chain_id,
                    address,
                    self._control_url,
                )
                task_status.started({"address": address, "control": self._control_url})
        finally:
            self.peerstore.close()
            self.store.close()

    # ---- heartbeats ----

    @property
    def advertised_status(self) -> Status:
        if self.config.maintenance:
            return Status.MAINTENANCE
        if self.worker.busy >= self.config.slots:
            return Status.BUSY
        return Status.ONLINE

    def make_heartbeat(self) -> Heartbeat:
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        return Heartbeat(
            node_id=self.node_id,
            seq=self._seq,
            time=time.time(),
            name=self.name,
            address=self.host.address,
            version=__version__,
            status=self.advertised_status.value,
            capacity={"slots": self.config.slots, "busy": self.worker.busy},
            metrics=self.metrics.sample(),
        )

    async def _heartbeat_loop(self) -> None:
        # The overlay says when: at once on a change of status or capacity or when others
        # doubt we are alive, else every heartbeat interval (longer in a large network).
        while True:
            status = self.advertised_status.value
            capacity = {"slots": self.config.slots, "busy": self.worker.busy}
            if self.overlay.heartbeat_due(trio.current_time(), status, capacity):
                heartbeat = self.make_heartbeat()
                statement = sign(self.key, HEARTBEAT_DOMAIN, self.chain_id, heartbeat.to_payload())
                self.host.publish(HEARTBEAT_TOPIC, statement)
            await trio.sleep(HEARTBEAT_CHECK)

    def _on_deliver(self, delivery: Deliver) -> None:
        if delivery.topic in (CONSENSUS_TOPIC, RECORDS_TOPIC):
            self.chain.deliver(delivery)
        elif delivery.topic.startswith(PROGRESS_FAMILY + "/"):
            self.worker.deliver(delivery.statement)

    def _on_block(self, block: Block, commit: Commit) -> None:
        self.control.publish("blocks", block_summary(block))
        self.jobs_api.on_block(self.control, block.height, block.header.time, block.records)
        self.worker.wake()

    def _on_progress(self, report: ProgressReport) -> None:
        self.control.publish(f"progress:{report.job_id.hex()}", report.to_json())

    def _on_members(self, changes: tuple[MemberChange, ...]) -> None:
        for change in changes:
            if change.node_id == self.node_id:
                continue
            log.info(
                "member %s: %s -> %s",
                short_id(change.node_id),
                change.old.value if change.old else "new",
                change.new.value,
            )
            member = self.overlay.members.get(change.node_id)
            if member is not None:
                self.control.publish("peers", self._peer_json(member))

    def _replay_job_events(self, blocks: int = 1000) -> None:
        """Job events (claims, checkpoints, failovers, results) of the recent chain, so a
        restarted node shows a job's history, not only what happened since it started."""
        head, _ = self.store.head()
        first = max(1, head - blocks + 1)
        while first <= head:
            last = min(head, first + 499)
            for stored in self.store.blocks(first, last):
                block = stored.block()
                self.jobs_api.on_block(self.control, block.height, block.header.time, block.records)
            first = last + 1

    # ---- control API ----

    def _register_methods(self) -> None:
        self.control.register_topic("peers")
        self.control.register("status", self._status)
        self.control.register("peers", self._peers)
        self.control.register("net.stats", self._net_stats)
        self.ledger_api.register(self.control)
        self.jobs_api.register(self.control)

    async def _status(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    def status(self) -> dict[str, Any]:
        members = [m for m in self.overlay.members if m.node_id != self.node_id]
        chain = self.chain.status()
        return {
            "node_id": self.node_id.hex(),
            "name": self.name,
            "chain_id": self.chain_id,
            "network_id": self.genesis.network_id.hex(),
            "version": __version__,
            "address": self.host.address,
            "control": self._control_url,
            "status": self.advertised_status.value,
            "peers": self.host.statistics().links,
            "members": len(members),
            "online": sum(1 for m in members if m.status is not Status.OFFLINE),
            "uptime": round(time.time() - self.started, 1),
            "validator": self.genesis.validator(self.node_id) is not None,
            "data_dir": str(self.config.data_dir),
            "height": chain.height,
            "head": chain.head.hex(),
            "round": chain.round,
            "pending_records": chain.pending,
            "syncing": chain.syncing,
        }

    async def _peers(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        members = [m for m in self.overlay.members if m.node_id != self.node_id]
        members.sort(key=lambda m: (m.heartbeat.name, m.node_id))
        return [self._peer_json(m) for m in members]

    async def _net_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        peer_hex = params.get("peer")
        peer: bytes | None = None
        if peer_hex is not None:
            try:
                peer = bytes.fromhex(peer_hex)
            except (TypeError, ValueError):
                raise InvalidParams("peer: expected a node id in hex") from None
        return self.net_stats(peer)

    def net_stats(self, peer: bytes | None = None) -> dict[str, Any]:
        """Links, connection counts, bans, scores and the sizes of the bounded tables next to
        their caps: what an operator (or a test) checks while peers misbehave."""
        now = trio.current_time()
        o = self.overlay.statistics()
        h = self.host.statistics()
        cfg = self.overlay.config
        limits = self.host.gate.limits
        bans = self.overlay.bans(now)
        wall = time.time()
        out: dict[str, Any] = {
            "links": h.links,
            "inbound": h.inbound,
            "half_open": h.half_open,
            "refused_connections": h.refused_connections,
            "limits": {
                "max_inbound": limits.max_inbound,
                "max_half_open": limits.max_half_open,
                "max_inbound_per_address": limits.max_inbound_per_address,
                "max_half_open_per_address": limits.max_half_open_per_address,
                "max_links": cfg.max_degree,
            },
            "dropped_frames": h.dropped_frames,
            "serving_requests": h.serving,
            "banned": len(bans),
            "scores": {p.hex(): round(score, 1) for p, score in self.overlay.scores().items()},
            "tables": {
                "seen_cache": o.seen_cache,
                "message_cache": o.message_cache,
                "missing": o.missing,
                "missing_timers": o.missing_timers,
                "announcing": o.announcing,
                "pulled": o.pulled,
                "followers": o.followers,
                "datagram_sources": o.datagram_sources,
                "member_statements": o.member_statements,
                "peer_records": o.peer_records,
                "known_peers": o.known_peers,
                "members": o.members,
                "bans": o.banned,
            },
            "caps": {
                "seen_cache": cfg.seen_cache_size,
                "message_cache": cfg.message_cache,
                "missing": cfg.max_missing,
                "missing_per_peer": cfg.max_missing_per_peer,
                "pulled": cfg.message_cache,
                "announcing": cfg.message_cache,
                "datagram_sources": cfg.max_datagram_sources,
                "member_statements": cfg.member_statement_cache,
                "peer_records": cfg.member_statement_cache,
                "known_peers": cfg.max_known_peers,
                "members": self.overlay.members.config.max_members,
                "bans": cfg.max_bans,
            },
            "counters": {
                "frames": o.frames,
                "payloads": o.payloads,
                "delivered": o.delivered,
                "duplicates": o.duplicates,
                "rejected": o.rejected,
                "wasted": o.wasted,
                "iwant_answers": o.iwant_answers,
                "sync_failures": self.chain.sync_failures,
            },
        }
        if peer is not None:
            until = bans.get(peer)
            score = self.overlay.scores().get(peer)
            out["peer"] = {
                "node_id": peer.hex(),
                "linked": self.host.is_linked(peer),
                "score": None if score is None else round(score, 1),
                "announced_pending": self.overlay.announced_pending(peer),
                "banned_until": None if until is None else round(wall + until - now, 3),
            }
        return out

    def _peer_json(self, member: Any) -> dict[str, Any]:
        hb: Heartbeat = member.heartbeat
        age = trio.current_time() - member.last_seen
        linked = {p for p, _, _ in self.host.link_info()}
        return {
            "node_id": hb.node_id.hex(),
            "name": hb.name,
            "status": member.status.value,
            "address": hb.address,
            "last_seen": round(time.time() - age, 3),
            "connected": hb.node_id in linked,
            "version": hb.version,
            "capacity": hb.capacity,
            "metrics": hb.metrics,
        }
