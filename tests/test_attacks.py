"""Attacks on a real node over a real TCPCLv4 session on 127.0.0.1 (spec §10).

Each test is one attack from the security review: forged copies that try to suppress the
genuine message (directly and through a relay), replays (another service number, a later
copy, after a restart), absurd ``issued_at``, and a lease grant from a plain member. Every
test ends with a *marker*: a genuine message sent after the attack, so "nothing more was
delivered" is checked without waiting on a timer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import Header, LeaseGrant
from fleetwire.protocol.trust import Role

from .hostile import DAY, Fleet, attacker, bundle_of, claim, dtn_now, receive_until, zero_signature

A, RELAY, C, EVE = 1, 2, 3, 99
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    fleet = Fleet(tmp_path)
    for node in (A, RELAY, C):
        fleet.add(node)
    fleet.add(5, roles=(Role.NODE, Role.CELL_COORDINATOR), cell=1)
    return fleet


async def test_forged_copy_first_does_not_suppress_the_genuine_message(fleet: Fleet) -> None:
    genuine = fleet.sign(A, claim(A, 1))
    marker = fleet.sign(A, claim(A, 2, resource="marker"))
    with trio.fail_after(20):
        async with fleet.running(C) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            await eve.send(bundle_of(zero_signature(genuine.envelope), source=A, destination=C))
            await eve.send(bundle_of(genuine.envelope, source=A, destination=C))
            await eve.send(bundle_of(marker.envelope, source=A, destination=C))
            got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [genuine.content_id, marker.content_id]
    assert c.stats.rejected == 1


async def test_forged_copy_with_the_genuine_bundle_id_does_not_suppress_it(fleet: Fleet) -> None:
    # Bundle ids (source, creation time, sequence) are predictable: the forger reuses one.
    genuine = fleet.sign(A, claim(A, 1))
    marker = fleet.sign(A, claim(A, 2, resource="marker"))
    created = dtn_now()
    same_id = {"source": A, "destination": C, "created_at": created, "sequence": 0}
    forged = bundle_of(zero_signature(genuine.envelope), **same_id)
    real = bundle_of(genuine.envelope, **same_id)
    with trio.fail_after(20):
        async with fleet.running(C) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            await eve.send(forged)
            await eve.send(real)
            await eve.send(bundle_of(marker.envelope, source=A, destination=C))
            got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [genuine.content_id, marker.content_id]


async def test_forged_copy_does_not_poison_a_relay(fleet: Fleet) -> None:
    genuine = fleet.sign(A, claim(A, 1))
    marker = fleet.sign(A, claim(A, 2, resource="marker"))
    with trio.fail_after(30):
        async with fleet.running(C) as c:
            inbox = c.subscribe()
            async with fleet.running(RELAY, peers={C: fleet.ports[C]}), attacker(
                fleet.ports[RELAY]
            ) as eve:
                for envelope in (zero_signature(genuine.envelope), genuine.envelope,
                                 marker.envelope):  # fmt: skip
                    await eve.send(bundle_of(envelope, source=A, destination=C))
                got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [genuine.content_id, marker.content_id]


async def test_replay_to_another_service_number_is_not_delivered(fleet: Fleet) -> None:
    genuine = fleet.sign(A, claim(A, 1))
    marker = fleet.sign(A, claim(A, 2, resource="marker"))
    with trio.fail_after(20):
        async with fleet.running(C) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            await eve.send(bundle_of(genuine.envelope, source=A, destination=C))
            await eve.send(bundle_of(genuine.envelope, source=A, destination=C, service=42))
            await eve.send(bundle_of(marker.envelope, source=A, destination=C))
            got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [genuine.content_id, marker.content_id]


async def test_replay_in_a_new_bundle_after_the_first_expired(fleet: Fleet) -> None:
    genuine = fleet.sign(A, claim(A, 1))
    marker = fleet.sign(A, claim(A, 2, resource="marker"))
    with trio.fail_after(20):
        async with fleet.running(C) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            await eve.send(bundle_of(genuine.envelope, source=A, destination=C, lifetime_ms=60_000))
            assert (await inbox.receive()).content_id == genuine.content_id
            await c.store.expire(dtn_now() + DAY)  # the tombstone is gone
            await eve.send(bundle_of(genuine.envelope, source=A, destination=C))
            await eve.send(bundle_of(marker.envelope, source=A, destination=C))
            got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [marker.content_id]


@pytest.mark.parametrize("durable", [True, False], ids=["store", "no-store"])
async def test_replay_after_a_restart_is_not_delivered(fleet: Fleet, durable: bool) -> None:
    with trio.fail_after(30):
        async with fleet.running(C, store=durable) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            genuine = fleet.sign(A, claim(A, 1, issued_at=c.now()))
            await eve.send(bundle_of(genuine.envelope, source=A, destination=C))
            assert (await inbox.receive()).content_id == genuine.content_id
        async with fleet.running(C, store=durable) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            marker = fleet.sign(A, claim(A, 2, resource="marker", issued_at=c.now()))  # after restart
            await eve.send(bundle_of(genuine.envelope, source=A, destination=C))
            await eve.send(bundle_of(marker.envelope, source=A, destination=C))
            got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [marker.content_id]


@pytest.mark.parametrize(
    ("offset", "absolute"),
    [(10 * 365 * DAY, None), (-5 * 365 * DAY, None), (0, 0), (0, (1 << 64) - 1)],
    ids=["+10y", "-5y", "0", "2^64-1"],
)
async def test_absurd_issued_at_is_refused(fleet: Fleet, offset: int, absolute: int | None) -> None:
    issued_at = dtn_now() + offset if absolute is None else absolute
    odd = fleet.sign(A, claim(A, 1, issued_at=issued_at))
    marker = fleet.sign(A, claim(A, 2, resource="marker"))
    with trio.fail_after(20):
        async with fleet.running(C) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            await eve.send(bundle_of(odd.envelope, source=A, destination=C))
            await eve.send(bundle_of(marker.envelope, source=A, destination=C))
            got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [marker.content_id]


async def test_same_sequence_from_one_issuer_acts_once(fleet: Fleet) -> None:
    # Two different messages under one (issuer, sequence): the second is refused.
    first = fleet.sign(A, claim(A, 7, resource="dock/1"))
    second = fleet.sign(A, claim(A, 7, resource="dock/2"))
    marker = fleet.sign(A, claim(A, 8, resource="marker"))
    with trio.fail_after(20):
        async with fleet.running(C) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            for signed in (first, second, marker):
                await eve.send(bundle_of(signed.envelope, source=A, destination=C))
            got = await receive_until(inbox, marker.content_id.raw)
    assert [s.content_id for s in got] == [first.content_id, marker.content_id]


def grant(issuer: int, sequence: int) -> LeaseGrant:
    return LeaseGrant(
        header=Header(issuer=issuer, issued_at=dtn_now(), sequence=sequence),
        resource="dock/7", holder=C, claim=ContentId.of(b"claim"), fencing_token=1,
        term_ms=60_000, expires_at=dtn_now() + 60_000,
    )  # fmt: skip


async def test_lease_grant_from_a_plain_member_is_refused(fleet: Fleet) -> None:
    forged_authority = fleet.sign(A, grant(A, 1))  # node 1 has no coordinator role
    real_authority = fleet.sign(5, grant(5, 1))
    with trio.fail_after(20):
        async with fleet.running(C) as c, attacker(fleet.ports[C]) as eve:
            inbox = c.subscribe()
            await eve.send(bundle_of(forged_authority.envelope, source=A, destination=C))
            await eve.send(bundle_of(real_authority.envelope, source=5, destination=C))
            got = await receive_until(inbox, real_authority.content_id.raw)
    assert [s.content_id for s in got] == [real_authority.content_id]
    assert c.stats.rejected == 1
