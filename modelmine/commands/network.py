"""Network commands: genesis, bootstrap, node, devnet, status, peers."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path
from typing import Any

import trio

from modelmine.cli import CommandError
from modelmine.commands.common import (
    add_client_args,
    add_data_dir,
    ago,
    data_dir,
    print_json,
    print_table,
)
from modelmine.p2p.admission import InboundLimits

log = logging.getLogger(__name__)


def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def register(sub: Any) -> None:
    p = sub.add_parser("genesis", help="create a network: genesis.json and validator keys")
    p.add_argument("--validators", type=int, default=4, help="number of validators (1..128)")
    p.add_argument("--out", type=Path, required=True, help="directory to write")
    p.add_argument("--chain-id", help="chain id (default: modelmine-<random>)")
    p.add_argument("--grant", type=int, default=1000, help="credits granted to a new account")
    p.set_defaults(func=cmd_genesis)

    p = sub.add_parser("bootstrap", help="run a bootstrap server nodes announce themselves to")
    p.add_argument("--listen", type=parse_hostport, default=("127.0.0.1", 7600))
    add_data_dir(p)
    p.add_argument("--genesis", type=Path, help="the network's genesis.json")
    p.set_defaults(func=cmd_bootstrap)

    p = sub.add_parser("node", help="run the node daemon")
    add_data_dir(p)
    p.add_argument("--listen", type=parse_hostport, default=("127.0.0.1", 0))
    p.add_argument("--control", type=parse_hostport, default=("127.0.0.1", 0))
    p.add_argument("--bootstrap", action="append", default=[], metavar="ws://HOST:PORT")
    p.add_argument(
        "--advertise",
        metavar="ws://HOST:PORT",
        help="the address peers should dial (default: from --listen)",
    )
    p.add_argument("--genesis", type=Path)
    p.add_argument("--name", default="")
    p.add_argument("--maintenance", action="store_true", help="take no jobs")
    p.add_argument("--slots", type=int, default=1, help="jobs trained at once (default 1)")
    limits = InboundLimits()
    p.add_argument(
        "--max-inbound",
        type=int,
        default=limits.max_inbound,
        help=f"connections peers may hold open to this node at once (default {limits.max_inbound})",
    )
    p.add_argument(
        "--max-half-open",
        type=int,
        default=limits.max_half_open,
        help=f"of those, connections still in the handshake (default {limits.max_half_open})",
    )
    p.add_argument(
        "--max-inbound-per-address",
        type=int,
        default=limits.max_inbound_per_address,
        help="connections from one IPv4 address or IPv6 /64 "
        f"(default {limits.max_inbound_per_address})",
    )
    p.add_argument(
        "--max-half-open-per-address",
        type=int,
        default=limits.max_half_open_per_address,
        help=f"handshakes under way from one address (default {limits.max_half_open_per_address})",
    )
    p.set_defaults(func=cmd_node)

    p = sub.add_parser("devnet", help="bootstrap server + N nodes on loopback")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--base-port", type=int, default=7700)
    p.add_argument("--data-dir", type=Path, default=Path("devnet-data"))
    p.add_argument("--fresh", action="store_true", help="delete an existing devnet there first")
    p.set_defaults(func=cmd_devnet)

    p = sub.add_parser("status", help="this node's identity, network and peer count")
    add_client_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("peers", help="every known member of the network")
    add_client_args(p)
    p.set_defaults(func=cmd_peers)


# ---- daemons ----


async def _run_until_signal(start: Any) -> None:
    """Run a service until SIGINT or SIGTERM, then cancel it cleanly."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(start)
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def cmd_node(args: argparse.Namespace) -> int:
    from modelmine.genesis import GenesisError
    from modelmine.identity import IdentityError
    from modelmine.node import Node, NodeConfig, NodeError
    from modelmine.p2p.overlay import check_address
    from modelmine.wire import WireError

    for url in [*args.bootstrap, *([args.advertise] if args.advertise else [])]:
        try:
            check_address(url)
        except WireError as exc:
            raise CommandError(f"--bootstrap/--advertise: {exc}") from None
    if not 1 <= args.slots <= 64:
        raise CommandError("--slots: must be 1..64")
    for flag in (
        "max_inbound",
        "max_half_open",
        "max_inbound_per_address",
        "max_half_open_per_address",
    ):
        if getattr(args, flag) < 1:
            raise CommandError(f"--{flag.replace('_', '-')}: must be at least 1")
    config = NodeConfig(
        data_dir=data_dir(args),
        listen_host=args.listen[0],
        listen_port=args.listen[1],
        control_host=args.control[0],
        control_port=args.control[1],
        bootstrap=tuple(args.bootstrap),
        genesis_path=args.genesis,
        name=args.name,
        maintenance=args.maintenance,
        slots=args.slots,
        advertise=args.advertise,
        limits=InboundLimits(
            max_inbound=args.max_inbound,
            max_half_open=args.max_half_open,
            max_inbound_per_address=args.max_inbound_per_address,
            max_half_open_per_address=args.max_half_open_per_address,
        ),
    )
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    try:
        node = Node(config)
    except (NodeError, GenesisError, IdentityError, OSError) as exc:
        raise CommandError(str(exc)) from None

    async def start(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(node.run)
            print(
                f"node {node.name} {node.node_id.hex()[:8]} on {info['address']}, "
                f"control {info['control']}, chain {node.chain_id}",
                flush=True,
            )
            task_status.started()

    try:
        trio.run(_run_until_signal, start)
    except OSError as exc:
        raise CommandError(f"cannot start node: {exc}") from None
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from bootstrap.server import BootstrapServer
    from modelmine.genesis import GENESIS_FILE, Genesis, GenesisError
    from modelmine.identity import load_or_create_node_key

    directory = data_dir(args) if args.data_dir else None
    genesis_path = args.genesis or (directory / GENESIS_FILE if directory else None)
    if genesis_path is None:
        raise CommandError("bootstrap needs the network's genesis: pass --genesis FILE")
    try:
        genesis = Genesis.load(genesis_path)
    except GenesisError as exc:
        raise CommandError(str(exc)) from None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        key = load_or_create_node_key(directory)
    else:
        from nacl.signing import SigningKey

        key = SigningKey.generate()
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    server = BootstrapServer(key, genesis)
    host, port = args.listen

    async def start(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(server.run, host, port)
            print(f"bootstrap server for {genesis.chain_id} on {address}", flush=True)
            task_status.started()

    try:
        trio.run(_run_until_signal, start)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0


def cmd_genesis(args: argparse.Namespace) -> int:
    from modelmine.devnet import write_network
    from modelmine.genesis import GenesisError

    if not 1 <= args.validators <= 128:
        raise CommandError("--validators: must be 1..128")
    try:
        genesis = write_network(args.out, args.validators, chain_id=args.chain_id, grant=args.grant)
    except (GenesisError, FileExistsError) as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {args.out / 'genesis.json'} for chain {genesis.chain_id}")
    for i, v in enumerate(genesis.validators, 1):
        print(f"  {args.out / f'node-{i}'}: validator {v.name} {v.node_id.hex()}")
    return 0


def cmd_devnet(args: argparse.Namespace) -> int:
    from modelmine.devnet import Devnet

    if not 1 <= args.nodes <= 64:
        raise CommandError("--nodes: must be 1..64")
    if not 1024 <= args.base_port <= 65000:
        raise CommandError("--base-port: must be 1024..65000")
    devnet = Devnet(args.data_dir, args.nodes, args.base_port, fresh=args.fresh)
    return devnet.run_forever()


# ---- clients ----


def call(args: argparse.Namespace, method: str, **params: Any) -> Any:
    from modelmine.control_client import ControlUnavailable, RpcError, call_node

    try:
        return call_node(data_dir(args), method, **params)
    except ControlUnavailable as exc:
        raise CommandError(str(exc)) from None
    except RpcError as exc:
        raise CommandError(exc.message) from None


def cmd_status(args: argparse.Namespace) -> int:
    status = call(args, "status")
    if args.json:
        print_json(status)
        return 0
    rows = [
        ("node", f"{status['name']} ({status['node_id']})"),
        ("chain", status["chain_id"]),
        ("address", status["address"]),
        ("status", status["status"]),
        (
            "peers",
            f"{status['peers']} connected, {status['online']} of {status['members']} members up",
        ),
        ("version", status["version"]),
        ("uptime", f"{status['uptime']:.0f}s"),
    ]
    rows += [(k, str(status[k])) for k in ("height", "head") if k in status]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0


def _fmt_metrics(peer: dict[str, Any], key: str) -> str:
    value = peer.get("metrics", {}).get(key)
    if key == "load_avg" and isinstance(value, list):
        return " ".join(f"{x:.2f}" for x in value)
    return f"{value:.0f}%" if isinstance(value, int | float) else "-"


def cmd_peers(args: argparse.Namespace) -> int:
    peers = call(args, "peers")
    if args.json:
        print_json(peers)
        return 0
    now = time.time()
    rows = [
        {
            "name": p["name"],
            "id": p["node_id"][:8],
            "status": p["status"],
            "cpu": _fmt_metrics(p, "cpu_percent"),
            "mem": _fmt_metrics(p, "memory_percent"),
            "load": _fmt_metrics(p, "load_avg"),
            "address": p["address"],
            "seen": ago(p["last_seen"], now),
            "link": "yes" if p.get("connected") else "",
        }
        for p in peers
    ]
    columns = [
        ("name", "NAME"),
        ("id", "ID"),
        ("status", "STATUS"),
        ("cpu", "CPU"),
        ("mem", "MEM"),
        ("load", "LOAD 1/5/15"),
        ("address", "ADDRESS"),
        ("seen", "LAST SEEN"),
        ("link", "LINKED"),
    ]
    print_table(rows, columns, empty="no peers known yet")
    return 0
