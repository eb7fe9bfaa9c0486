"""Revocation reaches the fleet: files, the CLI, and lists that travel as bundles (spec §10).

A compromised node's key is revoked by a root-signed list. The list takes effect where it is
put (a file in a node's key folder), and spreads node to node as a bundle, waiting in stores
for contacts like any bundle: a cell deep in a partition refuses the revoked node's messages
from the contact that brings it the list.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.protocol.trust import issue_revocations
from fleetwire.runtime.cli.cli import main
from fleetwire.runtime.links.loopback import LoopbackNetwork
from fleetwire.runtime.node.node import Node, NodeConfig, open_node
from fleetwire.runtime.store.memory_store import MemoryBundleStore

from .fleet import DAY, ROOT, T0, node_key, trust_for
from .hostile import Fleet, attacker, bundle_of, claim, receive_until

HOUR = 3_600_000
BAD, OPERATOR, RELAY, DEEP = 1, 2, 3, 4


def plan() -> ContactPlan:
    """BAD ⇄ OPERATOR ⇄ RELAY all day; RELAY ⇄ DEEP (the partitioned cell) from 2 h to 3 h."""
    always = [(BAD, OPERATOR), (OPERATOR, RELAY)]
    contacts = [Contact(a, b, T0, T0 + DAY, 1_000_000, 500) for x, y in always
                for a, b in ((x, y), (y, x))]  # fmt: skip
    contacts += [Contact(a, b, T0 + 2 * HOUR, T0 + 3 * HOUR, 1_000_000, 500)
                 for a, b in ((RELAY, DEEP), (DEEP, RELAY))]  # fmt: skip
    return ContactPlan(contacts)


@asynccontextmanager
async def fleet_of_four() -> AsyncIterator[dict[int, Node]]:
    clock = Clock(0.0, T0)
    contact_plan = plan()
    network = LoopbackNetwork(contact_plan, clock, random.Random(7))
    routes = {BAD: {RELAY: OPERATOR, DEEP: OPERATOR}, OPERATOR: {DEEP: RELAY},
              DEEP: {BAD: RELAY, OPERATOR: RELAY}, RELAY: {BAD: OPERATOR}}  # fmt: skip
    with trio.fail_after(DAY / 1000):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            nursery.start_soon(network.run)
            nodes = {}
            for n in (BAD, OPERATOR, RELAY, DEEP):
                config = NodeConfig(
                    node=n, key=node_key(n), trust=trust_for([BAD, OPERATOR, RELAY, DEEP]),
                    contact_plan=contact_plan, static_routes=routes.get(n, {}),
                )  # fmt: skip
                nodes[n] = await stack.enter_async_context(
                    open_node(config, MemoryBundleStore(), links=network.links_of(n), clock=clock)
                )
            yield nodes
            nursery.cancel_scope.cancel()


def claim_from(issuer: int, sequence: int, now: int) -> LeaseClaim:
    return LeaseClaim(Header(issuer=issuer, issued_at=now, sequence=sequence), "dock/1", HOUR)


async def test_revocation_reaches_a_partitioned_cell_within_its_first_contact(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with fleet_of_four() as nodes:
        deep_inbox = nodes[DEEP].subscribe()
        operator_inbox = nodes[OPERATOR].subscribe()
        now = nodes[OPERATOR].now()
        revocations = issue_revocations(ROOT, serial=1, issued_at=now, kids=[node_key(BAD).public.kid])
        assert await nodes[OPERATOR].apply_revocations(revocations)
        await trio.sleep(3600)  # an hour: the list has crossed every open contact, not DEEP's
        for n in (BAD, OPERATOR, RELAY):
            assert nodes[n].config.trust.revocations is not None, n
        assert nodes[DEEP].config.trust.revocations is None

        # BAD (compromised, still running) writes to OPERATOR and DEEP after the revocation.
        to_operator = await nodes[BAD].send(claim_from(BAD, 1, nodes[BAD].now()), to=OPERATOR)
        await nodes[BAD].send(claim_from(BAD, 2, nodes[BAD].now()), to=DEEP)
        # The partition heals at 2 h: DEEP gets the list and BAD's message in that contact.
        while nodes[DEEP].config.trust.revocations is None:
            await nodes[DEEP].revocations_applied.wait()
        assert T0 + 2 * HOUR <= nodes[DEEP].now() < T0 + 3 * HOUR
        marker = await nodes[RELAY].send(claim_from(RELAY, 1, nodes[RELAY].now()), to=DEEP)
        got = await receive_until(deep_inbox, marker.content_id.raw)
        assert [s.content_id for s in got] == [marker.content_id]  # BAD's message refused
        # And OPERATOR refused its copy too: only the marker below comes through.
        marker = await nodes[RELAY].send(claim_from(RELAY, 2, nodes[RELAY].now()), to=OPERATOR)
        got = await receive_until(operator_inbox, marker.content_id.raw)
        assert to_operator.content_id not in {s.content_id for s in got}
        assert nodes[DEEP].stats.rejected >= 1 and nodes[OPERATOR].stats.rejected >= 1


async def test_forged_or_stale_revocation_lists_change_nothing(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with fleet_of_four() as nodes:
        now = nodes[OPERATOR].now()
        newer = issue_revocations(ROOT, serial=5, issued_at=now)
        older = issue_revocations(ROOT, serial=4, issued_at=now, kids=[node_key(RELAY).public.kid])
        not_root = issue_revocations(node_key(BAD), serial=9, issued_at=now,
                                     kids=[node_key(RELAY).public.kid])  # fmt: skip
        assert await nodes[OPERATOR].apply_revocations(newer)
        assert not await nodes[OPERATOR].apply_revocations(not_root)
        assert await nodes[OPERATOR].apply_revocations(older)  # ignored: older than in force
        revocations = nodes[OPERATOR].config.trust.revocations
        assert revocations is not None and revocations.serial == 5 and not revocations.kids


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    fleet = Fleet(tmp_path)
    for node in (1, 2, 3):
        fleet.add(node)
    return fleet


async def test_keys_revoke_file_is_applied_and_spread_over_tcpclv4(fleet: Fleet) -> None:
    """The operator runs ``fleetwire keys revoke`` in node 2's key folder; node 3, which
    has a key folder of its own, learns it over TCPCLv4 from node 2 and refuses node 1."""
    shutil.copytree(fleet.keys, fleet.folder / "keys-3")
    with trio.fail_after(30):
        async with fleet.running(3, keys="keys-3") as c:
            inbox = c.subscribe()
            async with fleet.running(2, peers={3: fleet.ports[3]}) as relay:
                assert main(["keys", "revoke", str(fleet.keys), "--node", "1"]) == 0
                for node in (relay, c):
                    while node.config.trust.revocations is None:
                        await node.revocations_applied.wait()
            assert (fleet.folder / "keys-3" / "fleet.revocations").exists()  # kept by node 3
            async with attacker(fleet.ports[3]) as eve:
                revoked = fleet.sign(1, claim(1, 1, issued_at=c.now()))
                marker = fleet.sign(2, claim(2, 1, issued_at=c.now()))
                await eve.send(bundle_of(revoked.envelope, source=1, destination=3))
                await eve.send(bundle_of(marker.envelope, source=2, destination=3))
                got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [marker.content_id]


async def test_a_node_starts_with_the_revocation_file_in_force(fleet: Fleet) -> None:
    assert main(["keys", "revoke", str(fleet.keys), "--node", "1"]) == 0
    with trio.fail_after(20):
        async with fleet.running(3) as c, attacker(fleet.ports[3]) as eve:
            inbox = c.subscribe()
            revoked = fleet.sign(1, claim(1, 1, issued_at=c.now()))
            marker = fleet.sign(2, claim(2, 1, issued_at=c.now()))
            await eve.send(bundle_of(revoked.envelope, source=1, destination=3))
            await eve.send(bundle_of(marker.envelope, source=2, destination=3))
            got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [marker.content_id]
