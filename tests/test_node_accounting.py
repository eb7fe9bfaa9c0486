"""Every bundle a node accepted is accounted for: no-ack links retain, dtn: gets a report.

Real configured nodes on 127.0.0.1; the µD3TN-like TCPCLv3 peer of :mod:`tests.agents`
negotiates no acknowledgements, so "sent" can only mean "written to TCP".
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from fleetwire.protocol.agent.bundling import FORWARDED
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.bpv7 import (
    Bundle,
    BundleFlags,
    CreationTimestamp,
    IpnEid,
    PrimaryBlock,
    StatusReason,
    encode_bundle,
    parse_eid,
    payload_block,
)
from fleetwire.protocol.tcpcl.v4_messages import XferAck

from .agents import Ud3tnLikeV3Peer, send_v4, v4_handshake
from .test_node_links import LOCALHOST, A, B, C, claim, free_port, keys, node_from

__all__ = ["keys"]  # the fixture, shared


async def test_no_ack_link_retains_the_bundle_and_resends_when_the_session_dies(
    tmp_path: Path, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    peer = Ud3tnLikeV3Peer(eid=f"ipn:{C}.0", crash_after_first_bundle=True)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, peer.serve, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        config = (
            f'[node]\nnumber = {A}\nkeys = "keys"\n'
            f'[[peer]]\nnode = {C}\nport = {port}\nlayer = "tcpclv3"\n'
            "[reconnect]\ninitial_s = 0.05\nmaximum_s = 0.1\n"
        )
        with trio.fail_after(20):
            async with node_from(tmp_path, "a", config) as a:
                await a.send(claim(a, A), C)
                while len(peer.bundles) < 2:  # the crash lost the first copy: sent again
                    await trio.sleep(0.01)
                assert peer.bundles[0] == peer.bundles[1]
                assert await a.store.count() == 1  # still retained after the second send
        nursery.cancel_scope.cancel()
    assert any("event=resend" in r.message for r in caplog.records)


async def test_no_ack_retention_ends_with_a_log_line(
    tmp_path: Path, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    peer = Ud3tnLikeV3Peer(eid=f"ipn:{C}.0")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, peer.serve, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        config = (
            f'[node]\nnumber = {A}\nkeys = "keys"\n'
            f'[[peer]]\nnode = {C}\nport = {port}\nlayer = "tcpclv3"\n'
            "[links]\nretain_unconfirmed_s = 0.3\n"
        )
        with trio.fail_after(20):
            async with node_from(tmp_path, "a", config) as a:
                await a.send(claim(a, A), C)
                while not peer.bundles:
                    await trio.sleep(0.01)
                assert await a.store.count() == 1
                while await a.store.pending_ids(None, 10):  # retained, bytes and all
                    await trio.sleep(0.05)
                # Released: only the id is remembered, so a resend to us is a duplicate.
                assert len(await a.store.pending_ids(FORWARDED, 10)) == 1
                assert await a.store.bytes_used() == 0
        nursery.cancel_scope.cancel()
    assert len(peer.bundles) == 1
    assert any("event=released" in r.message for r in caplog.records)


def dtn_bundle(report_to: int) -> bytes:
    now = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    primary = PrimaryBlock(
        destination=parse_eid("dtn://elsewhere/inbox"),
        source=IpnEid(B, 1),
        report_to=IpnEid(report_to, 0),
        creation=CreationTimestamp(now, 0),
        lifetime=3_600_000,
        flags=BundleFlags.REPORT_DELETION,
    )
    return encode_bundle(Bundle(primary, (payload_block(b"hello"),)))


async def test_dtn_destination_is_reported_no_known_route_and_logged(
    tmp_path: Path, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    config = f'[node]\nnumber = {A}\nkeys = "keys"\n[[listen]]\nport = {port}\n'
    with trio.fail_after(20):
        async with node_from(tmp_path, "a", config) as a:
            reports = a.subscribe_status_reports()
            stream = await trio.open_tcp_stream(LOCALHOST, port)
            buf, _ = await v4_handshake(stream, f"ipn:{B}.0", active=True)
            data = dtn_bundle(report_to=A)
            replies = await send_v4(stream, buf, [(0, data)])
            assert isinstance(replies[0], XferAck)  # taken: then refused a route, and said so
            report = await reports.receive()
            assert report.reason == StatusReason.NO_KNOWN_ROUTE
            assert report.deleted.asserted
            held = await a.store.pending_for_destination("dtn://elsewhere/inbox", 10)
            assert held == []  # not held in silence
            await stream.aclose()
    assert any("no-known-route" in r.message and "dtn://elsewhere" in r.message
               for r in caplog.records)  # fmt: skip


async def test_a_reception_report_releases_a_retained_bundle_early(
    tmp_path: Path, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fleetwire.protocol.agent.bundling import status_report_for
    from fleetwire.protocol.bpv7 import decode_bundle

    caplog.set_level(logging.INFO)
    peer = Ud3tnLikeV3Peer(eid=f"ipn:{C}.0")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, peer.serve, 0, host=LOCALHOST))
        port = listeners[0].socket.getsockname()[1]
        config = (
            f'[node]\nnumber = {A}\nkeys = "keys"\n'
            f'[[peer]]\nnode = {C}\nport = {port}\nlayer = "tcpclv3"\n'
        )  # retention at its default, 60 s: only the report can release it this soon
        with trio.fail_after(20):
            async with node_from(tmp_path, "a", config) as a:
                await a.send(claim(a, A), C, reports=BundleFlags.REPORT_RECEPTION)
                while not peer.bundles:
                    await trio.sleep(0.01)
                assert await a.store.count() == 1
                # The next hop says it received the bundle (RFC 9171 §6.1.1).
                report = status_report_for(
                    decode_bundle(peer.bundles[0]), BundleFlags.REPORT_RECEPTION,
                    this_node=C, now=a.now(), sequence=0, lifetime_ms=60_000,
                )  # fmt: skip
                assert report is not None
                await a.accept(encode_bundle(report), C)
                while await a.store.pending_ids(None, 10):  # released: a forwarded tombstone
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert any("event=released" in r.message and "status report" in r.message
               for r in caplog.records)  # fmt: skip
