"""TCPCLv3 and MTCP: small bundles leave together, large ones alone.

One ``data_to_send`` call hands the runtime many whole small bundles (up to 64 KiB), so a
burst of small bundles costs one socket write, not one each; a bundle longer than a segment
still goes a segment per call, so acks and keepalives queued meanwhile are not held behind it.
"""

from __future__ import annotations

from fleetwire.protocol.tcpcl.common import Role
from fleetwire.protocol.tcpcl.mtcp import MtcpSession, frame
from fleetwire.protocol.tcpcl.v3 import TcpclV3Config, encode_data_segment

from tests.test_mtcp import bundles_of
from tests.test_mtcp import drain as mtcp_drain
from tests.test_tcpcl_v3 import established, feed


def test_v3_small_bundles_leave_in_one_call_and_a_long_one_a_segment_at_a_time() -> None:
    s = established(TcpclV3Config(local_eid="dtn://a/", keepalive_s=0, segment_size=1000))
    for i in range(300):
        s.send_bundle(bytes([i % 256]) * 300)
    first = s.data_to_send()
    # 300-byte bundles: 1 flag byte + 2 SDNV bytes + 300 each; as many as fit 64 KiB.
    assert len(first) == (65_536 // 303) * 303
    assert first[:303] == encode_data_segment(bytes(300), start=True, end=True)
    rest = s.data_to_send()
    assert len(first) + len(rest) == 300 * 303 and s.data_to_send() == b""
    s.send_bundle(bytes(2500))  # three segments
    s.send_bundle(b"tail")
    calls = []
    while data := s.data_to_send():
        calls.append(data)
    assert len(calls) == 3  # 1000, 1000, then the last 500 with the small one after it
    assert calls[-1].endswith(encode_data_segment(b"tail", start=True, end=True))
    # And a peer reads it all back bundle by bundle.
    peer = established()
    events = feed(peer, first + rest + b"".join(calls))
    received = [e.data for e in events if type(e).__name__ == "BundleReceived"]
    assert received == [bytes([i % 256]) * 300 for i in range(300)] + [bytes(2500), b"tail"]


def test_mtcp_joins_small_frames_up_to_64_kib_and_sends_a_large_one_alone() -> None:
    s = MtcpSession(Role.ACTIVE)
    mtcp_drain(s)
    small = [bytes([i]) * 1000 for i in range(100)]
    for bundle in small:
        s.send_bundle(bundle)
    s.send_bundle(bytes(100_000))
    s.send_bundle(b"after")
    writes = []
    while data := s.data_to_send():
        writes.append(data)
    assert [len(w) for w in writes] == [65 * 1003, 35 * 1003, len(frame(bytes(100_000))), 6]
    r = MtcpSession(Role.PASSIVE)
    r.receive_data(b"".join(writes))
    assert bundles_of(mtcp_drain(r)) == [*small, bytes(100_000), b"after"]
