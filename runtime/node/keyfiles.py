"""Keys and credentials on disk: one folder per fleet, one file per thing.

Layout of a key folder (every file is binary CBOR, see :mod:`fleetwire.protocol.keys` and
:mod:`fleetwire.protocol.trust` for the formats)::

    fleet-root.key    the fleet root's private COSE_Key (mode 0600; keep it offline)
    fleet-root.pub    its public COSE_Key: every node trusts this
    node-17.key       node 17's private COSE_Key (mode 0600; only node 17 has it)
    node-17.pub       its public COSE_Key
    node-17.cred      its credential: a COSE_Sign1 by the root (node, key, roles, validity)
    fleet.revocations the newest revocation list: a COSE_Sign1 by the root (revoked keys and
                      credential serials); ``fleetwire keys revoke`` writes it

A node needs its own ``.key``, the root's ``.pub`` and the ``.cred`` files of the nodes it
talks to (in a fleet they travel as messages; on one machine they sit in the folder).

A node reads the folder at start and is forgiving about *other* nodes' files: a credential
that is expired, revoked, not signed by the root or unreadable is skipped with a warning
(credentials expire by design; one stale file must not stop a node). Its own key, the root's
public key and a revocation list that is not the root's are errors. Every ``*.revocations``
file is applied (the newest serial wins) before any credential, and the node keeps watching
them (:mod:`.revocation_files`); a newer list that arrives over the network is written to
``fleet.revocations``.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from fleetwire.protocol.cose import parse_sign1
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.keys import SigningKey, VerifyKey
from fleetwire.protocol.trust import (
    Credential,
    RevocationList,
    RevocationsRefused,
    Role,
    TrustStore,
    issue_credential,
    issue_revocations,
)

ROOT_NAME = "fleet-root"
#: The revocation list the CLI writes and a node keeps what arrives over the network in.
REVOCATIONS_NAME = "fleet.revocations"

log = logging.getLogger("fleetwire.keys")
_K = TypeVar("_K")


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
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read: {exc.strerror or exc}") from None


def _read_private(path: Path) -> bytes:
    """A private key's bytes, with a warning when others than the owner may read the file."""
    data = _read(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "private key %s is readable by others (mode %s); hint: chmod 600 %s",
            path, oct(stat.S_IMODE(mode)), path,
        )  # fmt: skip
    return data


def _key(what: str, path: Path, load: Callable[[bytes], _K]) -> _K:
    """``load`` the key in ``path``; a file that is not one is a :class:`KeyFileError`."""
    try:
        return load(_read_private(path) if path.suffix == ".key" else _read(path))
    except KeyFileError:
        raise
    except FleetwireError as exc:
        raise KeyFileError(
            f"{path} is not {what}: {exc.message}", hint="was it written by `fleetwire keys`?"
        ) from None


def make_root(folder: Path) -> SigningKey:
    """Create the fleet root key pair in ``folder``."""
    key = SigningKey.generate(os.urandom)
    _write(folder / f"{ROOT_NAME}.key", key.to_cose_key(), private=True)
    _write(folder / f"{ROOT_NAME}.pub", key.public.to_cose_key(), private=False)
    return key


def load_root(folder: Path) -> SigningKey:
    return _key("a private key", folder / f"{ROOT_NAME}.key", SigningKey.from_cose_key)


def load_root_public(folder: Path) -> VerifyKey:
    return _key("a public key", folder / f"{ROOT_NAME}.pub", VerifyKey.from_cose_key)


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
    return _key("a private key", folder / f"node-{node}.key", SigningKey.from_cose_key)


def apply_revocation_file(trust: TrustStore, path: Path, now: int) -> RevocationList | None:
    """Apply the revocation list in ``path``; ``None`` if it is older than the one in force.

    A list that is not the root's (bad signature, malformed) raises :class:`KeyFileError`.
    """
    try:
        return trust.apply_revocations(_read(path), now)
    except RevocationsRefused:
        return None
    except FleetwireError as exc:
        raise KeyFileError(
            f"{path} is not a revocation list of this fleet's root ({exc.code}: {exc.message})",
            hint="revocation lists are written by `fleetwire keys revoke`",
        ) from None


def load_trust(folder: Path, now: int) -> TrustStore:
    """A trust store with the folder's root, its revocation lists and its credentials.

    A credential that cannot be used (expired, revoked, not the root's, unreadable) is
    skipped with a warning naming the file and the reason.
    """
    trust = TrustStore([load_root_public(folder)])
    for path in sorted(folder.glob("*.revocations")):
        apply_revocation_file(trust, path, now)
    for path in sorted(folder.glob("node-*.cred")):
        try:
            trust.add_credential(_read(path), now)
        except FleetwireError as exc:
            log.warning("skipping credential %s: %s (%s)", path, exc.message, exc.code)
    return trust


def revoke(
    folder: Path,
    root: SigningKey,
    *,
    now: int,
    nodes: Iterable[int] = (),
    kids: Iterable[bytes] = (),
    serials: Iterable[int] = (),
) -> RevocationList:
    """Write a new ``fleet.revocations``: the one in force plus these revocations, next serial.

    ``nodes`` are looked up by their ``node-N.cred`` in ``folder`` (their key and credential
    serial are revoked). The file is replaced atomically.
    """
    trust = TrustStore([root.public])
    for path in sorted(folder.glob("*.revocations")):
        apply_revocation_file(trust, path, now)
    current = trust.revocations
    all_kids, all_serials = set(kids), set(serials)
    for node in nodes:
        path = folder / f"node-{node}.cred"
        credential = Credential.from_payload(parse_sign1(_read(path)).payload)
        all_kids.add(credential.kid)
        all_serials.add(credential.serial)
    if current is not None:
        all_kids |= current.kids
        all_serials |= current.credential_serials
    serial = 1 if current is None else current.serial + 1
    data = issue_revocations(
        root, serial=serial, issued_at=now, kids=all_kids, credential_serials=all_serials
    )
    path = folder / REVOCATIONS_NAME
    temporary = folder / f".{REVOCATIONS_NAME}.tmp"
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return trust.apply_revocations(data, now)
