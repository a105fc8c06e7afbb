"""Ledger commands: register, transfer, balance, ledger [block|verify]."""

from __future__ import annotations

import argparse
import datetime
import re
from pathlib import Path
from typing import Any

import trio

from modelmine.cli import CommandError
from modelmine.commands.common import (
    add_client_args,
    add_password_args,
    data_dir,
    print_json,
    print_table,
    read_password,
)

RECORD_WAIT = 60.0
_HEX_ID = re.compile(r"^[0-9a-fA-F]{64}$")


def register(sub: Any) -> None:
    p = sub.add_parser("transfer", help="send credits to another account")
    p.add_argument("amount", type=int)
    p.add_argument("--from", dest="sender", required=True, metavar="NAME", help="local account")
    p.add_argument("--to", required=True, metavar="ACCOUNT", help="account name or 64-hex id")
    p.add_argument("--memo", default="")
    add_client_args(p)
    add_password_args(p)
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("balance", help="credits of an account (default: every local account)")
    p.add_argument("account", nargs="?", help="account name or 64-hex id")
    add_client_args(p)
    p.set_defaults(func=cmd_balance)

    p = sub.add_parser("ledger", help="the replicated ledger: recent blocks, one block, verify")
    add_client_args(p)
    p.add_argument("--limit", type=int, default=20, help="how many recent blocks (default 20)")
    p.set_defaults(func=cmd_blocks)
    ledger_sub = p.add_subparsers(dest="ledger_command", metavar="ACTION")
    b = ledger_sub.add_parser("block", help="one block with its records and signatures")
    b.add_argument("height", type=int)
    add_client_args(b)
    b.set_defaults(func=cmd_block)
    v = ledger_sub.add_parser(
        "verify", help="re-check every hash, signature and commit, recompute every state root"
    )
    add_client_args(v)
    v.add_argument("--genesis", type=Path, help="genesis.json (default: the data dir's)")
    v.set_defaults(func=cmd_verify)


# ---- shared helpers ----


def resolve_account(args: argparse.Namespace, value: str) -> bytes:
    from modelmine.identity import IdentityError, Keystore

    if _HEX_ID.match(value):
        return bytes.fromhex(value)
    try:
        return Keystore(data_dir(args)).info(value).account_id
    except IdentityError as exc:
        raise CommandError(f"{exc}; or give a 64-hex account id") from None


def unlock(args: argparse.Namespace, name: str) -> Any:
    from modelmine.identity import IdentityError, Keystore

    store = Keystore(data_dir(args))
    try:
        store.info(name)
        return store.unlock(name, read_password(args))
    except IdentityError as exc:
        raise CommandError(str(exc)) from None


def node_call(args: argparse.Namespace, calls: Any) -> Any:
    """Run ``await calls(client)`` against the local node; errors become one-line messages."""
    from modelmine.control_client import ControlUnavailable, RpcError, open_control_client

    async def main() -> Any:
        async with open_control_client(data_dir(args)) as client:
            return await calls(client)

    try:
        return trio.run(main)
    except ControlUnavailable as exc:
        raise CommandError(str(exc)) from None
    except RpcError as exc:
        raise CommandError(exc.message) from None


async def submit_and_wait(client: Any, make_record: Any, signer: bytes) -> dict[str, Any]:
    """Build a record with the signer's next nonce, submit it, wait until it is final."""
    status = await client.call("status")
    account = await client.call("ledger.account", account=signer.hex())
    raw: bytes = make_record(status["chain_id"], account["next_nonce"])
    sent = await client.call("ledger.submit", record=raw.hex())
    done = await client.request(
        "ledger.wait",
        {"record_id": sent["record_id"], "timeout": RECORD_WAIT},
        call_timeout=RECORD_WAIT + 10,
    )
    if done["height"] is None:
        raise CommandError(
            f"record {sent['record_id'][:12]} was not final within {RECORD_WAIT:.0f} s; "
            "check `modelmine status` (is the network making blocks?)"
        )
    return {"record_id": sent["record_id"], "height": done["height"]}


# ---- commands ----


def cmd_register(args: argparse.Namespace) -> int:
    from modelmine.ledger import make_register

    key = unlock(args, args.name)
    signer = bytes(key.verify_key)

    async def calls(client: Any) -> dict[str, Any]:
        account = await client.call("ledger.account", account=signer.hex())
        if account["registered"]:
            raise CommandError(f"account {args.name!r} is already registered")
        result = await submit_and_wait(
            client, lambda chain, nonce: make_register(key, chain, args.name, nonce), signer
        )
        result["balance"] = (await client.call("ledger.account", account=signer.hex()))["balance"]
        return result

    result = node_call(args, calls)
    result["account"] = signer.hex()
    if args.json:
        print_json(result)
    else:
        print(
            f"registered {args.name} ({signer.hex()[:8]}) in block {result['height']}; "
            f"balance {result['balance']} credits"
        )
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from modelmine.ledger import make_transfer

    if args.amount <= 0:
        raise CommandError("amount: must be a positive number of credits")
    to = resolve_account(args, args.to)
    key = unlock(args, args.sender)
    signer = bytes(key.verify_key)

    async def calls(client: Any) -> dict[str, Any]:
        account = await client.call("ledger.account", account=signer.hex())
        if account["balance"] < args.amount:
            raise CommandError(
                f"insufficient credits: have {account['balance']}, need {args.amount}"
            )
        return await submit_and_wait(
            client,
            lambda chain, nonce: make_transfer(key, chain, to, args.amount, nonce, args.memo),
            signer,
        )

    result = node_call(args, calls)
    if args.json:
        print_json(result)
    else:
        print(f"sent {args.amount} credits to {to.hex()[:8]} in block {result['height']}")
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    from modelmine.identity import IdentityError, Keystore

    if args.account:
        targets = [(args.account, resolve_account(args, args.account))]
    else:
        try:
            targets = [(a.name, a.account_id) for a in Keystore(data_dir(args)).list()]
        except IdentityError as exc:
            raise CommandError(str(exc)) from None
        if not targets:
            raise CommandError("no local accounts; name an account or create one first")

    async def calls(client: Any) -> list[dict[str, Any]]:
        return [await client.call("ledger.account", account=key.hex()) for _, key in targets]

    rows = node_call(args, calls)
    for (label, _), row in zip(targets, rows, strict=True):
        row["label"] = label
    if args.json:
        print_json(rows[0] if args.account else rows)
        return 0
    print_table(
        rows,
        [
            ("label", "ACCOUNT"),
            ("account", "ID"),
            ("balance", "BALANCE"),
            ("registered", "REGISTERED"),
        ],
        formatters={"account": lambda v: v[:16], "registered": lambda v: "yes" if v else "no"},
    )
    return 0


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def cmd_blocks(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise CommandError("--limit: must be 1..1000")

    async def calls(client: Any) -> Any:
        return await client.call("ledger.blocks", limit=args.limit)

    blocks = node_call(args, calls)
    if args.json:
        print_json(blocks)
        return 0
    print_table(
        blocks,
        [
            ("height", "HEIGHT"),
            ("time", "TIME"),
            ("hash", "HASH"),
            ("proposer", "PROPOSER"),
            ("records", "RECORDS"),
        ],
        formatters={"time": _when, "hash": lambda v: v[:16], "proposer": lambda v: v[:8]},
        empty="no blocks yet",
    )
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    async def calls(client: Any) -> Any:
        return await client.call("ledger.block", height=args.height)

    block = node_call(args, calls)
    if args.json:
        print_json(block)
        return 0
    for key in ("height", "hash", "prev_hash", "proposer", "state_root", "records_root"):
        print(f"{key:<13} {block[key]}")
    print(f"{'time':<13} {_when(block['time'])}")
    print(
        f"{'commit':<13} round {block['commit']['round']}, {len(block['commit']['signatures'])} signatures"
    )
    print(f"records ({len(block['records'])}):")
    for r in block["records"]:
        print(f"  {r['id'][:12]}  {r['kind']:<15} by {r['signer'][:8]}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from modelmine.genesis import GENESIS_FILE, Genesis, GenesisError
    from modelmine.ledger import StoreError, verify_chain

    directory = data_dir(args)
    try:
        genesis = Genesis.load(args.genesis or directory / GENESIS_FILE)
        report = verify_chain(directory, genesis)
    except (GenesisError, StoreError) as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "height": report.height,
                "bad_height": report.bad_height,
                "reason": report.reason,
                "records": report.records,
                "signatures": report.signatures,
                "seconds": round(report.seconds, 3),
                "state_root": report.state_root.hex(),
            }
        )
    else:
        print(report)
    return 0 if report.ok else 1
