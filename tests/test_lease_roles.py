"""Lease roles on real nodes (signed messages, bundles, stores, routing) in simulated time:
grants through the cell authority, standby takeover, and replays that change nothing."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import attrs
import pytest
import trio
import trio.testing
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
from fleetwire.protocol.bpv7 import encode_bundle
from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig
from fleetwire.protocol.coordination.lease_holder import HolderConfig, HolderState, NoticeKind
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import Header, LeaseClaim, LeaseGrant, LeaseRenew, LeaseRevoke
from fleetwire.protocol.roles import check_role
from fleetwire.protocol.trust import Credential, Role, TrustStore, WrongRole, issue_credential
from fleetwire.runtime.links.loopback import LoopbackNetwork
from fleetwire.runtime.node.node import Node, NodeConfig, open_node
from fleetwire.runtime.roles.lease import CellCoordinator, Member, RegionCoordinator
from fleetwire.runtime.store.memory_store import MemoryBundleStore

from .fleet import DAY, ROOT, T0, node_key

REGION, C1, C2, M1, M2 = 1, 2, 3, 10, 11
NODES = (REGION, C1, C2, M1, M2)
DRIFT = 500
WINDOW = FreshnessWindow(max_age_ms=DAY, max_skew_ms=DRIFT)
AUTHORITY_TERM = 60_000
LIFETIME = 10 * 60_000  # bundle lifetime: ten minutes
CLAIM_ID = ContentId.of(b"a claim")


def trust() -> TrustStore:
    """Node 1 is the region coordinator, 2 and 3 the coordinators of cell 1, 10 and 11 members."""
    store = TrustStore([ROOT.public])
    for node in NODES:
        roles, cell, region = [Role.NODE], None, None
        if node == REGION:
            roles, region = [Role.NODE, Role.REGION_COORDINATOR], 0
        elif node in (C1, C2):
            roles, cell = [Role.NODE, Role.CELL_COORDINATOR], 1
        credential = issue_credential(
            ROOT, node=node, public_key=node_key(node).public, roles=roles,
            not_before=T0 - DAY, not_after=T0 + 365 * DAY, serial=node, cell=cell, region=region,
        )  # fmt: skip
        store.add_credential(credential, T0)
    return store


def plan() -> ContactPlan:
    contacts = []
    for a in NODES:
        for b in NODES:
            if a != b:
                contacts.append(Contact(a, b, T0, T0 + DAY, 10_000_000, 100))
    return ContactPlan(contacts)


@attrs.define
class Cell:
    clock: Clock
    nodes: dict[int, Node]
    region: RegionCoordinator
    coordinators: dict[int, CellCoordinator]
    members: dict[int, Member]
    scopes: dict[int, trio.CancelScope]

    def now(self) -> int:
        return self.clock.to_dtn(trio.current_time())

    def active(self) -> list[int]:
        return [
            c
            for c, role in self.coordinators.items()
            if role.active() and not self.scopes[c].cancel_called
        ]


@asynccontextmanager
async def cell(versions: dict[int, int] | None = None) -> AsyncIterator[Cell]:
    """The cell, each node at the protocol version ``versions`` gives it (else the newest)."""
    versions = versions or {}
    clock = Clock(0.0, T0)
    contact_plan = plan()
    network = LoopbackNetwork(contact_plan, clock, random.Random(5))
    authority_config = AuthorityConfig(max_drift_ms=DRIFT, max_term_ms=20_000, freshness=WINDOW)
    region_config = AuthorityConfig(
        max_drift_ms=DRIFT, max_term_ms=AUTHORITY_TERM, freshness=WINDOW
    )
    holder_config = HolderConfig(
        max_drift_ms=DRIFT, renew_lead_ms=5_000, retry_ms=2_000, freshness=WINDOW
    )
    coordinator_holder = HolderConfig(
        max_drift_ms=DRIFT, renew_lead_ms=20_000, retry_ms=2_000, freshness=WINDOW
    )
    with trio.fail_after(DAY / 1000):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            nursery.start_soon(network.run)
            nodes = {
                n: await stack.enter_async_context(
                    open_node(
                        NodeConfig(
                            node=n, key=node_key(n), trust=trust(), contact_plan=contact_plan,
                            **({"protocol_version": versions[n]} if n in versions else {}),
                        ),
                        MemoryBundleStore(),
                        links=network.links_of(n),
                        clock=clock,
                    )
                )
                for n in NODES
            }
            region = RegionCoordinator(nodes[REGION], region_config, lifetime_ms=LIFETIME)
            coordinators = {
                c: CellCoordinator(
                    nodes[c],
                    cell=1,
                    region=REGION,
                    authority_config=authority_config,
                    holder_config=coordinator_holder,
                    lifetime_ms=LIFETIME,
                    authority_term_ms=AUTHORITY_TERM,
                    last_epoch=0,  # a first start: it never acted in any epoch
                )
                for c in (C1, C2)
            }
            members = {
                m: Member(nodes[m], (C1, C2), holder_config, lifetime_ms=LIFETIME) for m in (M1, M2)
            }
            scopes: dict[int, trio.CancelScope] = {}

            async def run(node: int, role, *, task_status=trio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
                with trio.CancelScope() as scope:
                    scopes[node] = scope
                    await role.run(task_status=task_status)

            await nursery.start(run, REGION, region)
            for c, role in coordinators.items():
                await nursery.start(run, c, role)
            for m, role in members.items():
                await nursery.start(run, m, role)
            yield Cell(clock, nodes, region, coordinators, members, scopes)
            nursery.cancel_scope.cancel()


def granted(member: Member) -> list[int]:
    return [n.fencing_token for n in member.notices if n.kind is NoticeKind.GRANTED]


async def test_members_get_the_dock_in_turn_through_the_cell_authority(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with cell() as c:
        await trio.sleep(5)
        assert len(c.active()) == 1
        await c.members[M1].want("dock/1", 10_000)
        await trio.sleep(2)
        first = c.members[M1].use("dock/1", 1_000)
        assert first is not None
        await c.members[M2].want("dock/1", 10_000)
        await trio.sleep(30)  # M1 renews; M2 waits in the queue
        assert c.members[M1].use("dock/1", 1_000) == first
        assert c.members[M2].use("dock/1") is None and granted(c.members[M2]) == []
        await c.members[M1].release("dock/1")
        await trio.sleep(2)
        second = c.members[M2].use("dock/1", 1_000)
        assert second is not None and second > first


async def test_standby_takes_over_when_the_active_coordinator_falls_silent(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with cell() as c:
        await trio.sleep(5)
        (active,) = c.active()
        standby = C2 if active == C1 else C1
        await c.members[M1].want("dock/1", 10_000)
        await trio.sleep(2)
        before = c.members[M1].use("dock/1")
        assert before is not None
        c.scopes[active].cancel()  # the active coordinator falls silent
        await trio.sleep(AUTHORITY_TERM / 1000 + 10)
        assert c.active() == [standby]
        (epoch, _), *_ = c.coordinators[standby].terms
        assert epoch > c.coordinators[active].authority.epoch
        # M1's lease lapsed with the old authority; it claims again and the standby grants.
        await trio.sleep(5)
        after = c.members[M1].use("dock/1")
        assert after is not None and after > before and after >> 32 == epoch


async def test_replayed_claim_and_grant_in_new_bundles_change_nothing(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A replay after the original bundle is gone: the same signed envelope in a new bundle,
    which bundle-level deduplication cannot recognise."""
    mock_clock.autojump_threshold = 0
    async with cell() as c:
        await trio.sleep(5)
        (active,) = c.active()
        m1 = c.members[M1]
        await m1.want("dock/1", 10_000)
        await trio.sleep(2)
        authority_role = c.coordinators[active]
        grant = next(s for s, _ in authority_role.sent if isinstance(s.message, LeaseGrant))
        claims = [(s, to) for s, to in m1.sent if isinstance(s.message, LeaseClaim)]
        # The claim the active authority granted, and its twin sent to the standby, which the
        # active node never saw (its own replay memory cannot know it).
        acted = next(s for s, _ in claims if s.content_id == grant.message.claim)
        unseen = next(s for s, to in claims if to != active)
        await m1.release("dock/1")
        await trio.sleep(LIFETIME / 1000 + 120)  # the original bundles have expired
        assert m1.holder.state("dock/1") is HolderState.IDLE
        assert authority_role.authority.holder("dock/1") is None
        sequence = authority_role.authority.sequence
        grants_before = sum(1 for s, _ in authority_role.sent if isinstance(s.message, LeaseGrant))

        async def replay(envelope: bytes, source: int, to: int) -> None:
            bundle = message_bundle(
                envelope, source=source, destination=to, created_at=c.now(), sequence=0,
                lifetime_ms=LIFETIME,
            )  # fmt: skip
            await c.nodes[to].accept(encode_bundle(bundle), from_peer=source)

        delivered = c.nodes[active].stats.delivered
        await replay(acted.envelope, M1, active)
        await replay(grant.envelope, active, M1)
        await trio.sleep(1)
        # Copies of what the nodes accepted before: their replay memory refuses them.
        assert c.nodes[active].stats.delivered == delivered
        await replay(unseen.envelope, M1, active)
        await trio.sleep(1)
        # The twin is new to the node and reaches the authority, whose lease replay marks
        # refuse it: nothing granted, nothing queued, nothing written.
        assert c.nodes[active].stats.delivered == delivered + 1
        assert authority_role.authority.holder("dock/1") is None
        assert authority_role.authority.queue_length("dock/1") == 0
        assert (
            sum(1 for s, _ in authority_role.sent if isinstance(s.message, LeaseGrant))
            == grants_before
        )
        assert authority_role.authority.sequence == sequence
        # The replayed grant is not used, and no release answers it.
        assert m1.holder.state("dock/1") is HolderState.IDLE and m1.use("dock/1") is None


async def test_replayed_renew_and_revoke_in_new_bundles_change_nothing(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    async with cell() as c:
        await trio.sleep(5)
        (active,) = c.active()
        role = c.coordinators[active]
        m1 = c.members[M1]
        await m1.want("dock/1", 10_000)
        await trio.sleep(12)  # granted, then renewed at least once
        renew = next(s for s, _ in m1.sent if isinstance(s.message, LeaseRenew))
        holder, token, expires_at = role.authority.holder("dock/1")
        assert holder == M1 and expires_at > renew.message.header.issued_at

        async def replay(envelope: bytes, source: int, to: int) -> None:
            bundle = message_bundle(
                envelope, source=source, destination=to, created_at=c.now(), sequence=1,
                lifetime_ms=LIFETIME,
            )  # fmt: skip
            await c.nodes[to].accept(encode_bundle(bundle), from_peer=source)

        # A replayed renew does not move the expiry the later renewals set.
        current = role.authority.holder("dock/1")
        await replay(renew.envelope, M1, active)
        await trio.sleep(0.5)
        assert role.authority.holder("dock/1") == current

        # The authority revokes M1's grant; M1 stops and releases, then claims again.
        await role.revoke("dock/1", c.now() + 1_000, reason="maintenance")
        await trio.sleep(5)
        revoke = next(s for s, _ in role.sent if isinstance(s.message, LeaseRevoke))
        assert m1.use("dock/1") is None
        await m1.want("dock/1", 10_000)
        await trio.sleep(5)
        again = m1.use("dock/1")
        assert again is not None and again > token
        await replay(revoke.envelope, active, M1)
        await trio.sleep(0.5)
        assert m1.use("dock/1") == again  # the old revoke changed nothing
        assert m1.holder.state("dock/1") in (HolderState.HOLDING, HolderState.RENEWING)


def test_region_coordinator_signs_authority_leases_and_nothing_else_of_a_cell() -> None:
    def credential(
        node: int, roles: list[Role], cell: int | None, region: int | None
    ) -> Credential:
        return Credential(
            node, node_key(node).public, frozenset(roles), T0 - DAY, T0 + DAY, node,
            ROOT.public.kid, cell=cell, region=region,
        )  # fmt: skip

    credentials = {
        REGION: credential(REGION, [Role.NODE, Role.REGION_COORDINATOR], None, 0),
        C1: credential(C1, [Role.NODE, Role.CELL_COORDINATOR], 1, None),
        M1: credential(M1, [Role.NODE], None, None),
    }

    def grant(resource: str, issuer: int) -> LeaseGrant:
        return LeaseGrant(Header(issuer, T0, 1), resource, C1, CLAIM_ID, 1, 1_000, T0 + 1_000)

    check_role(grant("authority/cell-1", REGION), credentials[REGION], reader_cell=1)
    with pytest.raises(WrongRole):
        check_role(grant("dock/1", REGION), credentials[REGION], reader_cell=1)
    with pytest.raises(WrongRole):
        check_role(grant("authority/cell-1", M1), credentials[M1], reader_cell=1)
    check_role(grant("dock/1", C1), credentials[C1], reader_cell=1)


def test_role_sends_are_what_the_agent_outgoing_finds() -> None:
    """handlers.outgoing, which the lease roles hand their machines' actions to, picks from
    the mixed actions exactly their Sends, in order, never a Notice or a Refused."""
    from fleetwire.protocol.agent.handlers import Outgoing, outgoing
    from fleetwire.protocol.coordination import lease_authority, lease_holder

    header = Header(issuer=C1, issued_at=T0, sequence=1)
    claim = LeaseClaim(header=header, resource="dock/1", term_ms=1_000)
    grant = LeaseGrant(
        header=header, resource="dock/1", holder=M1, claim=CLAIM_ID, fencing_token=5,
        term_ms=1_000, expires_at=T0 + 1_000,
    )  # fmt: skip
    actions = [
        lease_holder.Send(claim, C1),
        lease_holder.Notice(NoticeKind.GRANTED, "dock/1", 5, T0 + 500),
        lease_authority.Send(grant, M1),
        lease_authority.Refused(claim, lease_authority.Refusal.STALE),
        lease_holder.Send(claim, C2),
    ]
    expected = [Outgoing(claim, C1), Outgoing(grant, M1), Outgoing(claim, C2)]
    assert outgoing(actions) == expected and len(outgoing(actions)) == 3
    assert outgoing([]) == []
