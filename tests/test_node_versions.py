"""Nodes of versions 1, 2 and 3 side by side on a loopback network: each writes to a peer at
the version the peer's signed capability advertisement says it reads (the oldest of the window
until then), and a node pinned to version 1 reads exactly as a version-1 node would.
Also ``[node] protocol_version`` in the config file."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    Bid,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    Digest,
    Family,
    Header,
    LeaseClaim,
    NotExpressible,
    Terms,
    Trigger,
)
from fleetwire.runtime.links.loopback import LoopbackNetwork
from fleetwire.runtime.node.config import ConfigError, parse_config
from fleetwire.runtime.node.node import Node, NodeConfig, open_node
from fleetwire.runtime.store.memory_store import MemoryBundleStore

from .fleet import DAY, T0, node_key, trust_for

V1, V2, V3 = 1, 2, 3  # node numbers, pinned at the version of the same number


def plan() -> ContactPlan:
    nodes = (V1, V2, V3)
    return ContactPlan(
        [Contact(a, b, T0, T0 + DAY, 1_000_000, 100) for a in nodes for b in nodes if a != b]
    )


@asynccontextmanager
async def fleet() -> AsyncIterator[dict[int, Node]]:
    clock = Clock(0.0, T0)
    trust = trust_for([V1, V2, V3])
    network = LoopbackNetwork(plan(), clock, random.Random(5))
    with trio.fail_after(DAY / 1000):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            nursery.start_soon(network.run)
            nodes = {}
            for number in (V1, V2, V3):
                config = NodeConfig(
                    node=number, key=node_key(number), trust=trust, contact_plan=plan(),
                    protocol_version=number,
                )  # fmt: skip
                nodes[number] = await stack.enter_async_context(
                    open_node(config, MemoryBundleStore(), links=network.links_of(number), clock=clock)
                )
            yield nodes
            nursery.cancel_scope.cancel()


def header(issuer: int, sequence: int, version: int = 1) -> Header:
    return Header(issuer=issuer, issued_at=T0, sequence=sequence, version=version, min_version=version)


def advert(issuer: int, versions: tuple[int, int], sequence: int = 1) -> CapabilityAdvertisement:
    return CapabilityAdvertisement(header(issuer, sequence), (), versions, "B")


def digest(sequence: int) -> Digest:
    return Digest(header(V3, sequence, 2), T0 - 1000, T0, Trigger.PERIODIC, (), (ContentId.of(b"c"),))


async def test_a_bid_to_a_peer_not_heard_from_arrives_as_a_lease_claim(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with fleet() as nodes:
        inbox = nodes[V1].subscribe(Family.LEASE)
        bid = Bid(header(V3, 1, 3), "dock/7", 1, 40, term_ms=60_000)
        signed = await nodes[V3].send(bid, to=V1)
        assert signed.message == LeaseClaim(header(V3, 1), "dock/7", 60_000)
        received = await inbox.receive()
        assert received.message == signed.message and received.content_id == signed.content_id
        inbox.acknowledge()


async def test_peers_are_written_to_at_the_versions_they_advertise(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with fleet() as nodes:
        v3 = nodes[V3]
        with pytest.raises(NotExpressible):  # V2 not heard from: only version 1, no digests
            await v3.send(digest(1), to=V2)
        adverts = v3.subscribe(Family.CAPABILITY)
        await nodes[V2].send(advert(V2, (1, 2)), to=V3)
        await nodes[V1].send(advert(V1, (1, 1)), to=V3)
        for _ in range(2):
            await adverts.receive()
        adverts.acknowledge()
        assert (v3.versions.versions_of(V2), v3.versions.versions_of(V1)) == ((1, 2), (1, 1))
        inbox = nodes[V2].subscribe(Family.EXCEPTION)
        sent = await v3.send(digest(2), to=V2)
        assert (await inbox.receive()).message == sent.message == digest(2)
        inbox.acknowledge()
        with pytest.raises(NotExpressible, match="no version-1 form"):
            await v3.send(digest(3), to=V1)
        # A bid to the v2 node: v2 has no bids either, so it goes as a lease claim.
        leases = nodes[V2].subscribe(Family.LEASE)
        bid = Bid(header(V3, 4, 3), "dock/7", 1, 40, term_ms=60_000)
        assert isinstance((await v3.send(bid, to=V2)).message, LeaseClaim)
        as_v2 = Header(issuer=V3, issued_at=T0, sequence=4, version=2, min_version=1)
        assert (await leases.receive()).message == LeaseClaim(as_v2, "dock/7", 60_000)
        leases.acknowledge()


async def test_a_node_pinned_at_one_refuses_what_a_v1_node_refuses(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with fleet() as nodes:
        v1, v3 = nodes[V1], nodes[V3]
        adverts = v3.subscribe(Family.CAPABILITY)
        # V1's application claims versions it does not read (a misconfiguration): V3 believes it.
        await v1.send(advert(V1, (1, 2)), to=V3)
        await nodes[V2].send(advert(V2, (1, 2)), to=V3)
        for _ in range(2):
            await adverts.receive()
        adverts.acknowledge()
        inbox = v1.subscribe(Family.EXCEPTION)
        await v3.send(digest(2), to=V1)  # written at 2, readable from 2
        await trio.sleep(5)
        assert v1.stats.rejected == 1 and v1.stats.delivered == 0  # version-unsupported
        # The same bytes are read by the v2 node.
        other = nodes[V2].subscribe(Family.EXCEPTION)
        await v3.send(digest(3), to=V2)
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(1):
                await inbox.receive()
        assert (await other.receive()).message == digest(3)
        other.acknowledge()


# --- the config file -----------------------------------------------------------------------------


def test_protocol_version_pins_a_node(tmp_path: Path) -> None:
    config = parse_config({"node": {"number": 5, "protocol_version": 1}}, tmp_path)
    assert config.protocol_version == 1
    assert parse_config({"node": {"number": 5}}, tmp_path).protocol_version == 3


@pytest.mark.parametrize("value", [0, 4, "1", 1.0, True])
def test_a_protocol_version_we_do_not_speak_is_a_one_line_error(value: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"node": {"number": 5, "protocol_version": value}}, tmp_path)
    assert "\n" not in info.value.message and "protocol_version" in info.value.message
    assert "pins" in info.value.hint


# --- a cell of mixed versions -------------------------------------------------------------------


async def test_a_cell_of_v1_v2_and_v3_nodes_grants_leases_in_turn(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Members pinned at 1 and 2, a coordinator at 3 and its standby at 2, the region at 3;
    after every node has advertised its versions, each pair writes at the newest version both
    read, the dock still goes to one member at a time, and a commitment between every ordered
    pair is offered, accepted and fulfilled at that version."""
    from .test_lease_roles import C1, C2, M1, M2, REGION, cell, granted

    mock_clock.autojump_threshold = 0
    pinned = {M1: 1, M2: 2, C1: 3, C2: 2, REGION: 3}
    async with cell(pinned) as c:
        nodes = c.nodes
        for number, node in nodes.items():
            mine = (max(1, pinned[number] - 2), pinned[number])
            for peer in nodes:
                if peer != number:
                    await node.send(advert(number, mine, sequence=1000 + peer), to=peer)
        await trio.sleep(5)
        assert nodes[C1].versions.versions_of(M1) == (1, 1)
        assert nodes[C1].versions.write_version(M2) == 2
        assert nodes[C1].versions.write_version(REGION) == 3
        assert len(c.active()) == 1
        await c.members[M1].want("dock/1", 10_000)
        await trio.sleep(2)
        first = c.members[M1].use("dock/1", 1_000)
        assert first is not None
        await c.members[M2].want("dock/1", 10_000)
        await trio.sleep(30)
        assert c.members[M2].use("dock/1") is None and granted(c.members[M2]) == []
        await c.members[M1].release("dock/1")
        await trio.sleep(2)
        second = c.members[M2].use("dock/1", 1_000)
        assert second is not None and second > first
        assert all(node.stats.rejected == 0 for node in nodes.values())

        # Commitments kept between every ordered pair: offered, accepted, fulfilled, each at
        # the newest version both ends read.
        offers: dict[ContentId, tuple[int, int]] = {}  # offer -> (promisor, promisee)
        lifecycle: dict[tuple[int, int], list[tuple[CommitmentState, int]]] = {}
        subscriptions = {number: node.subscribe(Family.COMMITMENT) for number, node in nodes.items()}

        async def keep(number: int) -> None:
            node = nodes[number]
            async for signed in subscriptions[number]:
                message = signed.message
                assert isinstance(message, Commitment)
                if message.state is CommitmentState.OFFERED:  # a step names the offer (§6.2)
                    offer = signed.content_id
                    offers[offer] = (message.header.issuer, number)
                else:
                    assert message.commitment is not None
                    offer = message.commitment
                lifecycle.setdefault(offers[offer], []).append(
                    (message.state, message.header.version)
                )
                answer = {CommitmentState.OFFERED: CommitmentState.ACCEPTED,
                          CommitmentState.ACCEPTED: CommitmentState.FULFILLED}.get(message.state)
                if answer is not None:
                    reply = Commitment(header(number, node.next_message_sequence() + 5000),
                                       answer, commitment=offer)  # fmt: skip
                    await node.send(reply, to=message.header.issuer)

        async with trio.open_nursery() as keepers:
            for number in nodes:
                keepers.start_soon(keep, number)
            for a, node in nodes.items():
                for b in nodes:
                    if a != b:
                        terms = Terms(a, b, "deliver/refined-carbon", 10, "kg", T0 + DAY)
                        offer = Commitment(header(a, node.next_message_sequence() + 5000),
                                           CommitmentState.OFFERED, terms=terms)  # fmt: skip
                        await node.send(offer, to=b)
            await trio.sleep(30)
            keepers.cancel_scope.cancel()
        pairs = [(a, b) for a in nodes for b in nodes if a != b]
        for a, b in pairs:
            both = min(pinned[a], pinned[b])
            assert lifecycle[(a, b)] == [(CommitmentState.OFFERED, both),
                                         (CommitmentState.ACCEPTED, both),
                                         (CommitmentState.FULFILLED, both)], (a, b)  # fmt: skip
        assert all(node.stats.rejected == 0 for node in nodes.values())


# --- the sans-IO agent (the simulator's, and the node's from the agent-driven node on) -----------


def test_an_agent_pinned_at_one_reads_and_writes_as_version_one() -> None:
    from fleetwire.protocol.agent.actions import Deliver, DeliveryRefused
    from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
    from fleetwire.protocol.agent.agent_store import MemoryAgentStore
    from fleetwire.protocol.agent.bundling import message_bundle
    from fleetwire.protocol.bpv7 import encode_bundle
    from fleetwire.protocol.envelope import seal

    trust = trust_for([V1, V3])
    pinned = BundleAgent(AgentConfig(node=V1, key=node_key(V1), trust=trust, protocol_version=1),
                         MemoryAgentStore())  # fmt: skip
    newest = BundleAgent(AgentConfig(node=V3, key=node_key(V3), trust=trust), MemoryAgentStore())
    for agent in (pinned, newest):
        agent.start(T0)

    def arriving(message: object, sequence: int) -> bytes:
        signed = seal(message, node_key(V3))  # type: ignore[arg-type]
        bundle = message_bundle(signed.envelope, source=V3, destination=V1, created_at=T0,
                                sequence=sequence, lifetime_ms=DAY)  # fmt: skip
        return encode_bundle(bundle)

    refused = pinned.receive(arriving(digest(1), 1), V3, T0)
    assert [a.code for a in refused if isinstance(a, DeliveryRefused)] == ["version-unsupported"]
    claim = LeaseClaim(header(V3, 2), "dock/7", 60_000)
    assert any(isinstance(a, Deliver) for a in pinned.receive(arriving(claim, 2), V3, T0))
    # The newest agent writes a bid to a peer not heard from as a lease claim, a digest not at all.
    sent = newest.send(Bid(header(V3, 3, 3), "dock/7", 1, 40, term_ms=60_000), V1, T0)
    assert isinstance(sent[0].message.message, LeaseClaim)  # type: ignore[union-attr]
    with pytest.raises(NotExpressible):
        newest.send(digest(4), V1, T0)
    newest.versions.learn(advert(V1, (1, 2)))
    assert newest.versions.write_version(V1) == 2
