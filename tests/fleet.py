"""A small test fleet: a root key, node keys and credentials, one trust store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.trust import Role, TrustStore, issue_credential

T0 = 820_000_000_000  # DTN ms: 2025-12-26
DAY = 86_400_000


def node_key(node: int) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"test node %d" % node).digest())


ROOT = SigningKey.from_seed(hashlib.sha256(b"test fleet root").digest())


def trust_for(nodes: Iterable[int], coordinators: Iterable[int] = ()) -> TrustStore:
    """A trust store with a credential for each node, valid for a year from T0."""
    trust = TrustStore([ROOT.public])
    coordinators = set(coordinators)
    for node in nodes:
        roles = [Role.NODE, Role.CELL_COORDINATOR] if node in coordinators else [Role.NODE]
        trust.add_credential(
            issue_credential(
                ROOT,
                node=node,
                public_key=node_key(node).public,
                roles=roles,
                not_before=T0 - DAY,
                not_after=T0 + 365 * DAY,
                serial=node,
                cell=1 if node in coordinators else None,
            ),
            T0,
        )
    return trust
