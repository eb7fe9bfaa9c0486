"""``fleetwire keys``: make a fleet root and node credentials, and show key files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.cose import parse_sign1
from fleetwire.protocol.keys import SigningKey, VerifyKey
from fleetwire.protocol.trust import Credential, RevocationList, Role

from ..node import keyfiles

HELP = """\
Every fleet has a root key; the root signs a credential for each node: the node's public key,
its node number, its roles and a validity window. Nodes trust what a credential vouches for.
Keys are COSE_Key files (RFC 9052 §7); credentials are COSE_Sign1 envelopes signed by the root.

examples:
  fleetwire keys root fleet/                      make fleet/fleet-root.key and .pub
  fleetwire keys node fleet/ --node 17            node 17: fleet/node-17.key, .pub, .cred
  fleetwire keys node fleet/ --node 2 --role cell-coordinator --cell 1
  fleetwire keys revoke fleet/ --node 17          revoke node 17's key and credential
  fleetwire keys show fleet/node-17.cred          what a key or credential says

A revocation list is root-signed and replaces the previous one whole (`keys revoke` carries
the earlier revocations over). Copy fleet/fleet.revocations into any running node's key
folder: the node puts it in force at once and spreads it to the fleet hop by hop.
"""

ROLE_NAMES = {role.name.lower().replace("_", "-"): role for role in Role}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="make a fleet root key and node credentials",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    root = sub.add_parser("root", help="make the fleet root key pair in FOLDER")
    root.add_argument("folder", type=Path)
    root.set_defaults(run=run_root)
    node = sub.add_parser("node", help="make a node key pair and its root-signed credential")
    node.add_argument("folder", type=Path, help="the folder holding fleet-root.key")
    node.add_argument("--node", type=int, required=True, help="node number (ipn node number)")
    node.add_argument(
        "--role",
        action="append",
        choices=sorted(ROLE_NAMES),
        help="role; repeat for several (default: node)",
    )
    node.add_argument("--cell", type=int, help="cell id (required for a cell coordinator)")
    node.add_argument("--region", type=int, help="region id (required for a region coordinator)")
    node.add_argument(
        "--days", type=float, default=365.0, help="validity in days from now (default 365)"
    )
    node.add_argument("--lineage", default="", help="software lineage, e.g. B")
    node.set_defaults(run=run_node)
    revoke = sub.add_parser(
        "revoke", help="add keys or credentials to the fleet's revocation list (root-signed)"
    )
    revoke.add_argument("folder", type=Path, help="the folder holding fleet-root.key")
    revoke.add_argument(
        "--node", type=int, action="append", default=[], help="revoke node N's key and credential"
    )
    revoke.add_argument(
        "--kid", action="append", default=[], help="revoke a key by its kid (hex, 34 bytes)"
    )
    revoke.add_argument(
        "--serial", type=int, action="append", default=[], help="revoke a credential serial"
    )
    revoke.set_defaults(run=run_revoke)
    show = sub.add_parser(
        "show", help="print what a .key, .pub, .cred or .revocations file holds"
    )
    show.add_argument("file", type=Path)
    show.set_defaults(run=run_show)


def dtn_now() -> int:
    return round((time.time() - DTN_EPOCH_UNIX) * 1000)


def run_root(args: argparse.Namespace) -> int:
    key = keyfiles.make_root(args.folder)
    print(f"fleet root {key.kid.hex()} written to {args.folder}/{keyfiles.ROOT_NAME}.key and .pub")
    print("keep the .key file offline; give the .pub file to every node")
    return 0


def run_node(args: argparse.Namespace) -> int:
    root = keyfiles.load_root(args.folder)
    roles = {ROLE_NAMES[name] for name in (args.role or ["node"])} | {Role.NODE}
    now = dtn_now()
    key = keyfiles.make_node(
        args.folder,
        root,
        node=args.node,
        roles=roles,
        not_before=now - 60_000,  # a minute of slack for clocks slightly behind
        not_after=now + round(args.days * 86_400_000),
        cell=args.cell,
        region=args.region,
        lineage=args.lineage,
    )
    names = ", ".join(sorted(role.name.lower() for role in roles))
    print(
        f"node {args.node} ({names}) key {key.kid.hex()}: {args.folder}/node-{args.node}.key, .pub, .cred"
    )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    if not (args.node or args.kid or args.serial):
        raise keyfiles.KeyFileError(
            "nothing to revoke", hint="name one or more --node N, --kid HEX or --serial S"
        )
    kids = []
    for text in args.kid:
        try:
            kids.append(bytes.fromhex(text))
        except ValueError:
            raise keyfiles.KeyFileError(
                f"--kid {text!r} is not hexadecimal", hint="`fleetwire keys show` prints kids"
            ) from None
    root = keyfiles.load_root(args.folder)
    revocations = keyfiles.revoke(
        args.folder, root, now=dtn_now(), nodes=args.node, kids=kids, serials=args.serial
    )
    print(
        f"revocation list {revocations.serial}: {len(revocations.kids)} keys, "
        f"{len(revocations.credential_serials)} credentials revoked; written to "
        f"{args.folder}/{keyfiles.REVOCATIONS_NAME}"
    )
    print("copy it into any node's key folder: the node applies it at once and spreads it")
    return 0


def run_show(args: argparse.Namespace) -> int:
    data = args.file.read_bytes()
    if args.file.suffix == ".revocations":
        revocations = RevocationList.from_payload(parse_sign1(data).payload)
        print(f"revocation list {revocations.serial}, issued {_date(revocations.issued_at)}")
        for kid in sorted(revocations.kids):
            print(f"  key      {kid.hex()}")
        for serial in sorted(revocations.credential_serials):
            print(f"  serial   {serial}")
        print(f"  issuer   {revocations.issuer.hex()}")
        print("  (signature not checked here: nodes check it against the fleet root)")
    elif args.file.suffix == ".cred":
        credential = Credential.from_payload(parse_sign1(data).payload)
        print(f"credential for node {credential.node}, serial {credential.serial}")
        print(f"  key      {credential.kid.hex()}")
        print(f"  roles    {', '.join(sorted(r.name.lower() for r in credential.roles))}")
        print(f"  valid    {_date(credential.not_before)} .. {_date(credential.not_after)}")
        print(f"  issuer   {credential.issuer.hex()}")
        if credential.cell is not None:
            print(f"  cell     {credential.cell}")
        if credential.region is not None:
            print(f"  region   {credential.region}")
        print("  (signature not checked here: nodes check it against the fleet root)")
    elif args.file.suffix == ".key":
        key = SigningKey.from_cose_key(data)
        print(f"private Ed25519 key, kid {key.kid.hex()}")
    else:
        public = VerifyKey.from_cose_key(data)
        print(f"public {public.curve.name} key, kid {public.kid.hex()}")
    return 0


def _date(dtn_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(DTN_EPOCH_UNIX + dtn_ms / 1000))
