"""`modelmine account create NAME | list`: the encrypted local keystore."""

from __future__ import annotations

import argparse
from typing import Any

from modelmine.cli import CommandError
from modelmine.commands.common import (
    add_client_args,
    add_password_args,
    data_dir,
    print_json,
    print_table,
    read_password,
)
from modelmine.identity import IdentityError, Keystore


def register(sub: Any) -> None:
    account = sub.add_parser("account", help="create and list accounts (encrypted keys)")
    account_sub = account.add_subparsers(dest="account_command", metavar="ACTION", required=True)

    create = account_sub.add_parser("create", help="create an account key, encrypted by a password")
    create.add_argument("name")
    add_client_args(create)
    add_password_args(create)
    create.set_defaults(func=cmd_create)

    reg = account_sub.add_parser("register", help="register an account on the ledger (grant)")
    reg.add_argument("name")
    add_client_args(reg)
    add_password_args(reg)
    reg.set_defaults(func=_register)

    listing = account_sub.add_parser("list", help="list the accounts in this data dir")
    add_client_args(listing)
    listing.set_defaults(func=cmd_list)


def _register(args: argparse.Namespace) -> int:
    from modelmine.commands.ledger import cmd_register

    return cmd_register(args)


def cmd_create(args: argparse.Namespace) -> int:
    store = Keystore(data_dir(args))
    try:
        if args.name in store.names():
            raise CommandError(f"an account named {args.name!r} already exists")
        info = store.create(args.name, read_password(args, confirm=True))
    except IdentityError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print_json(info.to_json())
    else:
        print(f"created account {info.name}: {info.account_id.hex()}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        accounts = [a.to_json() for a in Keystore(data_dir(args)).list()]
    except IdentityError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print_json(accounts)
    else:
        print_table(accounts, [("name", "NAME"), ("account_id", "ACCOUNT")], empty="no accounts")
    return 0
