"""Keys and credentials on disk: one folder per fleet, one file per thing.

Layout of a key folder (every file is binary CBOR, see :mod:`fleetwire.protocol.keys` and
:mod:`fleetwire.protocol.trust` for the formats)::

    fleet-root.key    the fleet root's private COSE_Key (mode 0600; keep it offline)
    fleet-root.pub    its public COSE_Key: every node trusts this
    node-17.key       node 17's private COSE_Key (mode 0600; only node 17 has it)
    node-17.pub       its public COSE_Key
    node-17.cred      its credential: a COSE_Sign1 by the root (node, key, roles, validity)

A node needs its own ``.key``, the root's ``.pub`` and the ``.cred`` files of the nodes it
talks to (in a fleet they travel as messages; on one machine they sit in the folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.keys import SigningKey, VerifyKey
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

ROOT_NAME = "fleet-root"


class KeyFileError(FleetwireError):
    """A key file is missing, unreadable or not what it should be."""

    code = "key-file"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise KeyFileError(f"{path} exists", hint="refusing to overwrite a key; remove it first")
    # Create with the final mode so a private key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path} not found",
            hint="make keys with `fleetwire keys root` and `fleetwire keys node`",
        ) from None


def make_root(folder: Path) -> SigningKey:
    """Create the fleet root key pair in ``folder``."""
    key = SigningKey.generate(os.urandom)
    _write(folder / f"{ROOT_NAME}.key", key.to_cose_key(), private=True)
    _write(folder / f"{ROOT_NAME}.pub", key.public.to_cose_key(), private=False)
    return key


def load_root(folder: Path) -> SigningKey:
    return SigningKey.from_cose_key(_read(folder / f"{ROOT_NAME}.key"))


def load_root_public(folder: Path) -> VerifyKey:
    return VerifyKey.from_cose_key(_read(folder / f"{ROOT_NAME}.pub"))


def make_node(
    folder: Path,
    root: SigningKey,
    *,
    node: int,
    roles: Iterable[Role],
    not_before: int,
    not_after: int,
    cell: int | None = None,
    region: int | None = None,
    lineage: str = "",
) -> SigningKey:
    """Create node ``node``'s key pair and its root-signed credential in ``folder``."""
    key = SigningKey.generate(os.urandom)
    credential = issue_credential(
        root,
        node=node,
        public_key=key.public,
        roles=roles,
        not_before=not_before,
        not_after=not_after,
        serial=int.from_bytes(os.urandom(6), "big"),
        cell=cell,
        region=region,
        lineage=lineage,
    )
    _write(folder / f"node-{node}.key", key.to_cose_key(), private=True)
    _write(folder / f"node-{node}.pub", key.public.to_cose_key(), private=False)
    _write(folder / f"node-{node}.cred", credential, private=False)
    return key


def load_node_key(folder: Path, node: int) -> SigningKey:
    return SigningKey.from_cose_key(_read(folder / f"node-{node}.key"))


def load_trust(folder: Path, now: int) -> TrustStore:
    """A trust store with the folder's root and every credential file in it."""
    trust = TrustStore([load_root_public(folder)])
    for path in sorted(folder.glob("node-*.cred")):
        trust.add_credential(_read(path), now)
    return trust
