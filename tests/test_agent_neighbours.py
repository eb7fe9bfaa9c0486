"""What a driver tells the agent about neighbours before their first contact, and what the
in-memory store takes back from a durable one at start (no I/O, no Trio)."""

from __future__ import annotations

from fleetwire.protocol.agent.actions import Transmit
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.bundling import DELIVERED, LOCAL
from fleetwire.protocol.agent.store import Accepted, Duplicate, Quota, Refused, StoredBundle
from fleetwire.protocol.trust import issue_revocations

from .fleet import ROOT, T0, node_key, trust_for
from .test_agent import A, B, C, agent, only


def test_a_revocation_list_waits_for_a_neighbour_whose_link_never_came_up() -> None:
    b = agent(B, trust=trust_for([A, B, C]))
    b.link_down(C, T0)  # configured, not connected yet (a partitioned cell's only link)
    b.link_up(A, T0)
    data = issue_revocations(ROOT, serial=1, issued_at=T0, kids=[node_key(A).kid])
    spread = b.apply_revocations(data, T0)
    assert [t.link for t in only(spread, Transmit)] == [A]  # C's copy waits, held
    later = b.link_up(C, T0 + 1000)
    assert [t.link for t in only(later, Transmit)] == [C]


def record(n: int, *, next_hop: str | None = None, data: bytes = b"x" * 10) -> StoredBundle:
    key = f"ipn:1.1/{n}".encode()
    return StoredBundle(key, b"cid" + key, "ipn:1.1", "ipn:2.1", T0 + 1000, T0, data, next_hop)


def test_restore_takes_back_bundles_and_tombstones_past_the_quota() -> None:
    store = MemoryAgentStore(Quota(max_bundles=1))
    store.restore(record(1, next_hop=LOCAL))
    store.restore(record(2))
    store.restore(record(3, next_hop=DELIVERED, data=b""))
    assert store.count() == 3
    assert store.pending_for(LOCAL, 10) == [record(1, next_hop=LOCAL)]
    assert store.pending_for(None, 10) == [record(2)]
    assert [r.bundle_id for r in store.pending_for(DELIVERED, 10)] == [record(3).bundle_id]
    assert store.bytes_used() == 20  # a tombstone holds no bytes
    assert isinstance(store.put(record(3)), Duplicate)  # a late copy is still known
    assert isinstance(store.put(record(4)), Refused)  # the quota holds for what comes next
    store.delete(record(1).bundle_id)
    store.delete(record(2).bundle_id)
    store.delete(record(3).bundle_id)
    assert isinstance(store.put(record(4)), Accepted)
