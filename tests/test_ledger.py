"""The accounting ledger CRDT: lattice laws, convergence under any delivery, a 30-day partition, and
its hostile-input reader."""

from __future__ import annotations

import random
from typing import Any

import cbor2
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.coordination.ledger import Counts, Ledger, LedgerError, LedgerLimits
from fleetwire.protocol.errors import DecodeError, FleetwireError, LocalProtocolError
from hypothesis import given
from hypothesis import strategies as st

RESOURCES = ["feedstock/carbonaceous", "power/kWh", "thermal/slot", "dock/3"]
NODES = range(5)

records = st.tuples(
    st.sampled_from(NODES),
    st.sampled_from(RESOURCES),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
)


def ledger_of(recs: list[tuple[int, str, int, int]]) -> Ledger:
    """An aggregate of what each node recorded in its own replica."""
    replicas = {n: Ledger(owner=n) for n in NODES}
    for node, resource, produced, consumed in recs:
        replicas[node].record(node, resource, produced=produced, consumed=consumed)
    out = Ledger()
    for replica in replicas.values():
        out.merge(replica)
    return out


def merged(*ledgers: Ledger) -> Ledger:
    out = Ledger()
    for ledger in ledgers:
        out.merge(ledger)
    return out


ledgers = st.lists(records, max_size=20).map(ledger_of)


def test_only_the_node_records_itself() -> None:
    ledger = Ledger(owner=3)
    with pytest.raises(LocalProtocolError, match="cannot record for node 4"):
        ledger.record(4, "power/kWh", produced=1)
    with pytest.raises(LocalProtocolError, match="only grow"):
        ledger.record(3, "power/kWh", consumed=-1)
    with pytest.raises(LocalProtocolError, match="resource name"):
        ledger.record(3, "", produced=1)
    ledger.record(3, "power/kWh", produced=2**64 - 1)
    with pytest.raises(LocalProtocolError, match="2\\^64"):
        ledger.record(3, "power/kWh", produced=1)
    ledger.record(3, "power/kWh", consumed=5)
    assert ledger.counts(3, "power/kWh") == Counts(2**64 - 1, 5)
    assert Ledger().merge(ledger) and not Ledger(3).merge(Ledger())


@given(ledgers, ledgers)
def test_merge_is_commutative(a: Ledger, b: Ledger) -> None:
    assert merged(a, b) == merged(b, a)


@given(ledgers, ledgers, ledgers)
def test_merge_is_associative(a: Ledger, b: Ledger, c: Ledger) -> None:
    ab_c = merged(merged(a, b), c)
    a_bc = merged(a, merged(b, c))
    assert ab_c == a_bc


@given(ledgers, ledgers)
def test_merge_is_idempotent_and_an_upper_bound(a: Ledger, b: Ledger) -> None:
    ab = merged(a, b)
    again = ab.copy()
    assert not again.merge(a) and not again.merge(b) and again == ab
    assert a <= ab and b <= ab


@given(ledgers, ledgers, ledgers)
def test_a_delta_carries_exactly_what_the_peer_lacks(
    mine: Ledger, known: Ledger, extra: Ledger
) -> None:
    peer = merged(known, extra)  # the peer has seen at least what we know it has
    delta = mine.delta(known)
    assert merged(peer, delta) == merged(peer, mine)
    assert delta <= mine and len(delta) <= len(mine)
    assert mine.delta(mine) == Ledger() and mine.delta(Ledger()) == mine


# --- convergence for any interleaving, duplication and partition -------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("record"), records),
        st.tuples(st.just("send"), st.sampled_from(NODES), st.sampled_from(NODES)),
        st.tuples(st.just("snapshot"), st.sampled_from(NODES)),
        st.tuples(st.just("replay"), st.integers(0, 100), st.sampled_from(NODES)),
        st.tuples(st.just("partition"), st.sets(st.sampled_from(NODES))),
    ),
    max_size=120,
)


@given(ops)
def test_replicas_converge_for_any_delivery(script: list[tuple[Any, ...]]) -> None:
    replicas = {n: Ledger(owner=n) for n in NODES}
    expected: dict[tuple[int, str], Counts] = {}
    snapshots: list[Ledger] = []
    cut: set[int] = set()  # nodes on the far side of a partition
    for op in script:
        if op[0] == "record":
            node, resource, produced, consumed = op[1]
            replicas[node].record(node, resource, produced=produced, consumed=consumed)
            old = expected.get((node, resource), Counts())
            expected[node, resource] = Counts(old.produced + produced, old.consumed + consumed)
        elif op[0] == "send":
            src, dst = op[1], op[2]
            if (src in cut) == (dst in cut):
                replicas[dst].merge(replicas[src])
        elif op[0] == "snapshot":
            snapshots.append(replicas[op[1]].copy())  # a copy that may arrive late, or twice
        elif op[0] == "replay" and snapshots:
            replicas[op[2]].merge(snapshots[op[1] % len(snapshots)])
        elif op[0] == "partition":
            cut = op[1]
    # The partition heals; every replica hears from every other (in a random order).
    order = [(s, d) for s in NODES for d in NODES]
    random.Random(len(script)).shuffle(order)
    for src, dst in order + order:
        replicas[dst].merge(replicas[src])
    first = replicas[0]
    assert all(replica == first for replica in replicas.values())
    for node, resource, counts in first.entries():
        assert expected[node, resource] == counts  # exactly: nothing lost, nothing twice
    assert len(first) == sum(1 for c in expected.values() if c != Counts())


def test_a_cell_cut_off_for_30_days_reconciles_exactly() -> None:
    rng = random.Random(30)
    cell_nodes, other_nodes = range(100, 120), range(200, 240)
    nodes = {n: Ledger(owner=n) for n in [*cell_nodes, *other_nodes]}
    cell, region = Ledger(), Ledger()  # the cell coordinator's and the region's copies
    truth: dict[str, Counts] = {}

    def work(node: int) -> None:
        resource = rng.choice(RESOURCES)
        produced, consumed = rng.randrange(0, 50), rng.randrange(0, 50)
        nodes[node].record(node, resource, produced=produced, consumed=consumed)
        old = truth.get(resource, Counts())
        truth[resource] = Counts(old.produced + produced, old.consumed + consumed)

    for _hour in range(24):  # a day of normal contact
        for n in nodes:
            work(n)
        for n in cell_nodes:
            cell.merge(nodes[n])
        for n in other_nodes:
            region.merge(nodes[n])
        region.merge(cell)
        cell.merge(region)  # each side holds the region's whole books
    before_cut = cell.copy()
    for _hour in range(30 * 24):  # 30 days apart: each side keeps its books
        for n in nodes:
            work(n)
        for n in rng.sample(list(cell_nodes), 5):  # intermittent, duplicated collection
            cell.merge(nodes[n])
            cell.merge(nodes[n])
        for n in rng.sample(list(other_nodes), 10):
            region.merge(nodes[n])
    for n in cell_nodes:
        cell.merge(nodes[n])
    for n in other_nodes:
        region.merge(nodes[n])
    # Reconnection: the cell sends what the region lacks as of the cut (a delta: the 30 days),
    # it arrives three times, then its whole books, then a pre-partition copy arrives last.
    delta = cell.delta(before_cut)
    assert {node for node, _, _ in delta.entries()} == set(cell_nodes)
    assert len(delta.to_cbor()) < len(cell.to_cbor()) / 2
    for copy in (delta, delta, delta, cell, before_cut):
        region.merge(Ledger.from_cbor(copy.to_cbor()))
    assert region.totals() == truth
    cell.merge(Ledger.from_cbor(region.to_cbor()))
    assert cell == region
    assert region.totals(dict.fromkeys(cell_nodes)) != truth  # the cell alone is a part


# --- wire form ---------------------------------------------------------------------------


@given(st.lists(records, max_size=30))
def test_one_state_one_encoding(recs: list[tuple[int, str, int, int]]) -> None:
    forward, backward = ledger_of(recs), ledger_of(list(reversed(recs)))
    assert forward == backward and forward.to_cbor() == backward.to_cbor()
    assert Ledger.from_cbor(forward.to_cbor()) == forward


def test_the_encoding_is_the_documented_map() -> None:
    ledger = Ledger(owner=7)
    ledger.record(7, "power/kWh", produced=3, consumed=1)
    assert cbor2.loads(ledger.to_cbor()) == {1: {7: {"power/kWh": [3, 1]}}}
    assert Ledger().to_cbor() == bytes.fromhex("a101a0")


BAD: list[tuple[Any, str]] = [
    ([], "map \\{1: entries\\}"),
    ({1: {}, 2: 0}, "map \\{1: entries\\}"),
    ({1: []}, "entries: must be a map"),
    ({1: {"7": {"r": [1, 0]}}}, "unsigned integer"),
    ({1: {7: {}}}, "non-empty map"),
    ({1: {7: {"": [1, 0]}}}, "1..256 bytes"),
    ({1: {7: {b"r": [1, 0]}}}, "1..256 bytes"),
    ({1: {7: {"r": [1]}}}, "\\[produced, consumed\\]"),
    ({1: {7: {"r": [1, -1]}}}, "\\[produced, consumed\\]"),
    ({1: {7: {"r": [1, True]}}}, "\\[produced, consumed\\]"),
    ({1: {7: {"r": [0, 0]}}}, "leaving it out"),
]


@pytest.mark.parametrize(("value", "match"), BAD)
def test_refused_states_name_the_fault(value: Any, match: str) -> None:
    with pytest.raises(LedgerError, match=match) as info:
        Ledger.from_cbor(cbor.encode(value))
    assert info.value.code == "ledger-invalid"


def test_bounds_are_enforced_before_building() -> None:
    big = Ledger()
    for node in range(10):
        part = Ledger(owner=node)
        for r in RESOURCES:
            part.record(node, r, produced=1)
        big.merge(part)
    data = big.to_cbor()
    with pytest.raises(LedgerError, match="nodes"):
        Ledger.from_cbor(data, LedgerLimits(max_nodes=9))
    with pytest.raises(LedgerError, match="entries"):
        Ledger.from_cbor(data, LedgerLimits(max_entries=39))
    with pytest.raises(LedgerError, match="bytes of ledger"):
        Ledger.from_cbor(data, LedgerLimits(max_bytes=len(data) - 1))
    with pytest.raises(DecodeError):
        Ledger.from_cbor(data, LedgerLimits(max_resources_per_node=2, max_nodes=2))
    Ledger.from_cbor(data, LedgerLimits(max_nodes=10, max_entries=40))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa1\x01",  # truncated
        bytes.fromhex("a101a0") + b"\x00",  # trailing
        bytes.fromhex("a101a1071b00000000000000ffa0"),  # non-shortest
        bytes.fromhex("c1a101a0"),  # a tag
        bytes.fromhex("a101a107a16172fa3f800000"),  # a float where counts go
    ],
)
def test_malformed_bytes_are_typed_errors(data: bytes) -> None:
    with pytest.raises(FleetwireError):
        Ledger.from_cbor(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_typed_errors(data: bytes) -> None:
    try:
        Ledger.from_cbor(data)
    except FleetwireError:
        pass


@given(st.lists(records, min_size=1, max_size=10), st.data())
def test_any_edit_of_an_encoding_is_refused_or_reencodes_to_itself(recs: Any, data: Any) -> None:
    raw = bytearray(ledger_of(recs).to_cbor())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    try:
        ledger = Ledger.from_cbor(bytes(raw))
    except FleetwireError:
        return
    assert ledger.to_cbor() == bytes(raw)
