"""``ml-processing tokens`` and ``ml-processing keys``: who may use the service, managed from the shell.

They act on the files of ``[security] directory`` under the data directory; a running service picks the
changes up at once (it re-reads the files when they change).

    ml-processing tokens add desk --role compute      # prints a new token once
    ml-processing tokens list | revoke NAME_OR_ID
    ml-processing keys                               # prints the service's CURVE public key
    ml-processing keys client engine --role compute --out engine.key
    ml-processing keys list | revoke NAME_OR_KEY
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..commands import Command
from ..config import Config
from ..ops import ROLES
from ..storage import atomic_write
from .keys import KeyRing
from .tokens import TokenStore


def _folder(config: Config) -> Path:
    return config.data_path / config.security.directory


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="{add,list,revoke}")
    add = actions.add_parser("add", help="create a token and print it once")
    add.add_argument("name", help="who holds it (letters, digits, - _ .)")
    add.add_argument("--role", action="append", choices=ROLES, required=True,
                     help="a role it grants (repeat for several)")
    listing = actions.add_parser("list", help="every token: id, name, roles, created (never a secret)")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="remove every token of a name, or one by id")
    revoke.add_argument("name_or_id")


def _tokens(args: argparse.Namespace, config: Config) -> int:
    store = TokenStore(_folder(config) / "tokens.json")
    if args.action == "add":
        try:
            token = store.add(args.name, args.role)
        except ValueError as exc:
            print(f"ml-processing tokens: {exc}", file=sys.stderr)
            return 2
        print(f"token for {args.name} ({', '.join(sorted(set(args.role)))}); it is shown only now:", file=sys.stderr)
        print(token)
        return 0
    if args.action == "list":
        listed = store.list()
        if args.json:
            print(json.dumps(listed, indent=2))
        for entry in [] if args.json else listed:
            print(f"{entry['id']}  {entry['name']}  {','.join(entry['roles'])}")
        return 0
    removed = store.revoke(args.name_or_id)
    print(f"revoked {removed} token(s)", file=sys.stderr)
    return 0 if removed else 1


def _key_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="{client,list,revoke}")
    client = actions.add_parser("client", help="allow a client: a new key pair written to a file, or its own key")
    client.add_argument("name", help="who holds it")
    client.add_argument("--role", action="append", choices=ROLES, required=True,
                        help="a role it grants (repeat for several)")
    client.add_argument("--service", action="append", default=[],
                        help="with the worker role: a service it may serve (repeat; none: every service)")
    client.add_argument("--out", metavar="FILE", help="where to write the new pair (default: NAME.key)")
    client.add_argument("--public", metavar="KEY", help="allow this public key (Z85) instead of making a pair")
    actions.add_parser("list", help="every allowed client key")
    revoke = actions.add_parser("revoke", help="remove every key of a name, or one key")
    revoke.add_argument("name_or_key")


def _keys(args: argparse.Namespace, config: Config) -> int:
    ring = KeyRing(_folder(config))
    server, _ = ring.server()
    if args.action is None:
        print(server)
        return 0
    if args.action == "list":
        for public, entry in ring.clients().items():
            services = f"  services={','.join(entry['services'])}" if entry.get("services") else ""
            print(f"{public}  {entry['name']}  {','.join(entry['roles'])}{services}")
        return 0
    if args.action == "revoke":
        removed = ring.remove(args.name_or_key)
        print(f"revoked {removed} key(s)", file=sys.stderr)
        return 0 if removed else 1
    try:
        public, secret = ring.add_client(args.name, args.role, args.service, args.public)
    except ValueError as exc:
        print(f"ml-processing keys: {exc}", file=sys.stderr)
        return 2
    if secret is not None:
        out = Path(args.out or f"{args.name}.key")
        atomic_write(out, json.dumps({"server": server, "public": public, "secret": secret}, indent=2).encode())
        print(f"client key pair for {args.name} written to {out} (owner-only; keep it secret)", file=sys.stderr)
    print(public)
    return 0


COMMANDS = {
    "tokens": Command("tokens", "manage REST bearer tokens (add, list, revoke)", _token_arguments, _tokens,
                      description="Bearer tokens for the REST edge, stored only as salted hashes."),
    "keys": Command("keys", "print the service's CURVE public key; allow client keys",
                    _key_arguments, _keys,
                    description="ZeroMQ CURVE keys: the service's own pair and the client allow-list."),
}
