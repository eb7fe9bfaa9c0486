"""The fault roles on real nodes: digests and forensic pull, hostile version-2 input, re-homing.

A cell of members on the loopback fleet (tests/fault_fleet.py) in virtual time: members sample
a metric and send digests (runtime/roles/faults.py, ``FaultMember(digests=...)``); the cell
coordinator pulls the detail of an anomalous digest by content id and checks it.
"""

from __future__ import annotations

import trio
from fleetwire.protocol.coordination.digests import Digest, MetricSpec, MetricStats
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    Commitment,
    CommitmentState,
    ExceptionCode,
    ExceptionReport,
    Header,
    Scope,
    Terms,
    decode_message,
    encode_message,
    v2,
)
from fleetwire.protocol.messages.versions import encode_at
from fleetwire.runtime.roles.fault_messages import digest_from_message, digest_message
from fleetwire.runtime.roles.faults import (
    CellFaults,
    FaultMember,
    RegionFaults,
    rehome_of,
    rehome_step,
)

from .fault_fleet import HOUR, MINUTE, START, Shape, carried, open_fleet
from .test_fault_scenarios import LIFETIME, advert, run

SPEC = {"feedstock-moisture": MetricSpec(edges=(970, 980, 990, 1000, 1010, 1020, 1030),
                                         center=1000, sigma=10)}  # fmt: skip


@run
async def test_members_send_digests_and_the_coordinator_pulls_only_the_anomalous_detail() -> None:
    shape = Shape(regions=1, cells_per_region=1, members_per_cell=4, b_per_cell=0)
    coordinator = shape.cell_coordinator(0)
    async with open_fleet(shape) as fleet, trio.open_nursery() as nursery:
        cell = CellFaults(
            fleet.nodes[coordinator], cell=0, region_coordinator=1, lifetime_ms=LIFETIME
        )
        await nursery.start(cell.run)
        members = {}
        for m in shape.members(0):
            members[m] = FaultMember(
                fleet.nodes[m], coordinator, "A", lifetime_ms=LIFETIME, digests=SPEC,
                digest_period_ms=10 * MINUTE,
            )  # fmt: skip
            await nursery.start(members[m].run)
        sick = shape.members(0)[2]

        async def sample(node: int) -> None:
            t = 0
            while fleet.now() < START + 2 * HOUR:
                drifting = node == sick and START + HOUR <= fleet.now() < START + HOUR + 5 * MINUTE
                value = 1000 + (t * 7919 % 21) - 10 + (80 if drifting else 0)  # within ±1 sigma
                await members[node].observe("feedstock-moisture", value)
                t += 1
                await trio.sleep(10)

        async with trio.open_nursery() as sampling:
            for m in members:
                sampling.start_soon(sample, m)
        await fleet.until(START + 3 * HOUR)

        # Periodic digests from everyone; event-driven ones from the drifting node.
        by_node = {m: [d for d in cell.digests if d.node == m] for m in members}
        assert all(len(ds) >= 11 for ds in by_node.values())
        assert any(d.trigger == 1 for d in by_node[sick])
        assert not any(d.trigger == 1 for m, ds in by_node.items() if m != sick for d in ds)
        # The coordinator pulled the anomalous detail, checked against its id, and only that.
        assert {d.node for d in cell.details} == {sick}
        drifted = [v for d in cell.details for _, v in d.samples["feedstock-moisture"]]
        assert max(drifted) >= 1060
        assert not cell.pull_failures
        assert members[sick].details_answered == len(cell.details)
        # Digest traffic member → coordinator on the links, in bits per member per second
        # (the seeds' budget for all steady coordination traffic is 500).
        seconds = (fleet.now() - START) / 1000
        healthy = [m for m in members if m != sick]
        bits = sum(8 * len(b) for _, a, to, b in fleet.tap if a in healthy and to == coordinator)
        assert bits / len(healthy) / seconds < 50
        # Digests, detail requests and answers travel as the version-2 messages themselves.
        kinds = {type(carried(b)).__name__ for _, a, to, b in fleet.tap if coordinator in (a, to)}
        assert {"Digest", "DetailRequest", "DetailAnswer"} <= kinds
        assert "ExceptionReport" not in kinds
        nursery.cancel_scope.cancel()


def test_a_rehome_order_is_a_v1_offer_that_its_issuer_does_not_promise() -> None:
    old = ContentId.of(b"the old offer")
    terms = Terms(8, 9, "refine/carbonaceous", 100, "kg", START + HOUR)
    step = rehome_step(Header(7, START, 1), old, terms)
    assert rehome_of(step) == old and step.terms == terms
    back = decode_message(encode_message(step))
    assert isinstance(back, Commitment) and rehome_of(back) == old
    own = Commitment(Header(8, START, 1, references=(old,)), CommitmentState.OFFERED, terms)
    assert rehome_of(own) is None  # the promisor offering in its own name: an ordinary offer


def test_a_digest_reads_back_through_its_v2_message() -> None:
    digest = Digest(7, START, START + 1, 1, {"m": MetricStats(3, 1000, 5, 990, 1010, (1, 2), 0, 7)},
                    (ContentId.of(b"d"),))  # fmt: skip
    message = digest_message(Header(7, START + 2, 1), digest)
    back = decode_message(encode_at(message, 2))
    assert isinstance(back, v2.Digest) and digest_from_message(back) == digest


@run
async def test_a_coordinator_refuses_hostile_fault_messages_and_keeps_serving() -> None:
    shape = Shape(regions=1, cells_per_region=1, members_per_cell=2, b_per_cell=0)
    coordinator = shape.cell_coordinator(0)
    async with open_fleet(shape) as fleet, trio.open_nursery() as nursery:
        cell = CellFaults(
            fleet.nodes[coordinator], cell=0, region_coordinator=1, lifetime_ms=LIFETIME
        )
        await nursery.start(cell.run)
        liar = shape.members(0)[0]
        node = fleet.nodes[liar]
        await node.send(advert(fleet, liar), coordinator)  # it reads version 2; the answer:
        await fleet.until(START + MINUTE)  # the coordinator's versions have reached it

        def header() -> Header:
            return Header(liar, fleet.now(), node.next_message_sequence())

        hostile = [
            v2.DetailAnswer(header(), ContentId.of(b"x"), b"x"),  # unasked
            v2.EscalationAck(header(), ContentId.of(b"y")),  # not from its region coordinator
            v2.EscalationClose(header(), ContentId.of(b"y"), v2.Resolution.RESOLVED),
        ]
        for message in hostile:
            await node.send(message, coordinator)
        await node.send(digest_message(header(), Digest(liar, START, START + 1, 0, {})), coordinator)  # fmt: skip
        await fleet.until(START + 10 * MINUTE)
        assert [d.node for d in cell.digests] == [liar]  # only the honest digest was taken
        assert [f.reason.name for f in cell.pull_failures] == ["UNREQUESTED"]
        assert cell.incidents.acknowledged == cell.incidents.closed == 0
        assert all(carried(b) is not None for _, a, _, b in fleet.tap if a == liar)
        nursery.cancel_scope.cancel()


@run
async def test_a_region_takes_cell_reports_only_from_the_coordinator_of_that_cell() -> None:
    shape = Shape(regions=2, cells_per_region=2, members_per_cell=1, b_per_cell=0)
    async with open_fleet(shape) as fleet, trio.open_nursery() as nursery:
        region = RegionFaults(fleet.nodes[1], region=0, lifetime_ms=LIFETIME)
        await nursery.start(region.run)

        async def report(issuer: int, cell: int) -> None:
            node = fleet.nodes[issuer]
            header = Header(issuer, fleet.now(), node.next_message_sequence())
            message = ExceptionReport(header, ExceptionCode.POWER, 4, Scope.CELL, cell)
            await node.send(message, 1)

        await report(shape.members(0)[0], 0)  # a member speaking for its cell
        await report(shape.cell_coordinator(1), 0)  # the coordinator of another cell
        await report(shape.cell_coordinator(2), 2)  # a cell of another region
        await report(shape.cell_coordinator(0), 0)  # the one that may
        await fleet.until(START + 10 * MINUTE)
        assert region.refused == 3
        assert [issuer for _, issuer in region.received] == [shape.cell_coordinator(0)]
        assert [i.nodes for i in region.incidents.opened] == [[0]]
        nursery.cancel_scope.cancel()


@run
async def test_a_digest_due_before_the_coordinator_said_its_versions_waits_then_goes() -> None:
    shape = Shape(regions=1, cells_per_region=1, members_per_cell=1, b_per_cell=0)
    coordinator, member_node = shape.cell_coordinator(0), shape.members(0)[0]
    async with open_fleet(shape) as fleet, trio.open_nursery() as nursery:
        member = FaultMember(fleet.nodes[member_node], coordinator, "A", lifetime_ms=LIFETIME)
        await nursery.start(member.run)
        digest = Digest(member_node, START, START + 1, 1,
                        {"m": MetricStats(3, 1000, 5, 990, 1010, (1, 2), 0, 7)}, ())  # fmt: skip
        # The coordinator has not said what it reads: a v2 digest cannot go yet, nor fail.
        assert await member.send(digest_message(member.header(fleet.now()), digest),
                                 coordinator) is None  # fmt: skip
        assert len(member.deferred) == 1
        cell = CellFaults(
            fleet.nodes[coordinator], cell=0, region_coordinator=1, lifetime_ms=LIFETIME
        )
        await nursery.start(cell.run)  # answers the member's advertisement with its own
        await fleet.until(fleet.now() + 10 * MINUTE)
        assert fleet.nodes[member_node].versions.versions_of(coordinator) is not None
        await member.report(ExceptionCode.SOFTWARE, 1, detail="the next send takes it along")
        await fleet.until(fleet.now() + 10 * MINUTE)
        assert not member.deferred
        assert [d.node for d in cell.digests] == [member_node]
        nursery.cancel_scope.cancel()
