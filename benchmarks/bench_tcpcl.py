"""TCPCLv4 framing cost, as ratios against raw limits measured in the same run.

Three figures for 1 KiB and 64 KiB bundles:

* codec: encode one XFER_SEGMENT (header + data) and decode it from a receive buffer, against
  the raw limit of the same memory work without framing logic (``struct.pack`` of the header,
  one join, one buffer append, one slice copy out);
* ack: encode + decode one XFER_ACK against ``struct.pack`` + ``struct.unpack`` of its layout;
* session: a whole transfer through two back-to-back sessions (segmenting, reassembly, acks,
  events) against copying the bundle through the same number of buffers by hand.

Run: ``python benchmarks/bench_tcpcl.py`` (add ``--quick`` for a short run).
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable

from fleetwire.protocol.tcpcl.common import NEED_DATA, BundleReceived, ReceiveBuffer, Role
from fleetwire.protocol.tcpcl.v4 import SessionConfig, TcpclV4Session
from fleetwire.protocol.tcpcl.v4_messages import (
    DecodeLimits,
    SegmentFlags,
    XferAck,
    decode_message,
    encode_segment_header,
)

SIZES = {"1 KiB": 1024, "64 KiB": 65536}
HEADER = struct.Struct(">BBQQ")
ACK = struct.Struct(">BBQQ")


def timed(fn: Callable[[], None], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def best_pair(
    framed: Callable[[], None], raw: Callable[[], None], number: int, repeat: int = 7
) -> tuple[float, float]:
    """Seconds per call of each, best of ``repeat`` alternating runs (load hits both alike)."""
    best_framed = best_raw = float("inf")
    for _ in range(repeat):
        best_framed = min(best_framed, timed(framed, number))
        best_raw = min(best_raw, timed(raw, number))
    return best_framed, best_raw


def codec_pair(data: bytes) -> tuple[Callable[[], None], Callable[[], None]]:
    limits = DecodeLimits(segment_mru=len(data))
    flags = SegmentFlags.START | SegmentFlags.END
    buf = ReceiveBuffer()

    def framed() -> None:
        wire = encode_segment_header(flags, 7, len(data)) + data
        buf.extend(wire)
        message = decode_message(buf, limits)
        assert message is not None

    raw_buf = bytearray()

    def raw() -> None:
        wire = b"".join((HEADER.pack(1, flags, 7, len(data)), data))
        raw_buf.extend(wire)
        _ = bytes(raw_buf[HEADER.size :])
        del raw_buf[:]

    return framed, raw


def ack_pair() -> tuple[Callable[[], None], Callable[[], None]]:
    limits = DecodeLimits(segment_mru=0)
    buf = ReceiveBuffer()

    def framed() -> None:
        buf.extend(XferAck(SegmentFlags.END, 7, 65536).encode())
        assert decode_message(buf, limits) is not None

    def raw() -> None:
        ACK.unpack(ACK.pack(2, 1, 7, 65536))

    return framed, raw


def session_pair(data: bytes, segment_mru: int) -> tuple[Callable[[], None], Callable[[], None]]:
    config = SessionConfig(segment_mru=segment_mru, transfer_mru=1 << 20)
    a = TcpclV4Session(Role.ACTIVE, config, now=0.0)
    p = TcpclV4Session(Role.PASSIVE, config, now=0.0)

    def pump() -> None:
        moving = True
        while moving:
            moving = False
            for src, dst in ((a, p), (p, a)):
                while out := src.data_to_send():
                    dst.receive_data(out)
                    moving = True
            for s in (a, p):
                while (event := s.next_event()) is not NEED_DATA:
                    moving = True
                    if isinstance(event, BundleReceived):
                        s.ack(event.transfer_id)

    pump()

    def framed() -> None:
        a.send_bundle(data)
        pump()

    segments = max(1, -(-len(data) // segment_mru))
    view = memoryview(data)

    def raw() -> None:
        # The copies any stream framing needs: into the send buffer, through a receive
        # buffer, into reassembly, out as one bundle — per segment, no parsing, no state.
        whole = bytearray()
        for i in range(segments):
            chunk = view[i * segment_mru : (i + 1) * segment_mru]
            wire = b"".join((HEADER.pack(1, 0, 7, len(chunk)), chunk))
            received = bytearray(wire)
            whole += received[HEADER.size :]
        _ = bytes(whole)

    return framed, raw


def report(name: str, framed: Callable[[], None], raw: Callable[[], None], number: int) -> None:
    t_framed, t_raw = best_pair(framed, raw, number)
    print(f"{name:<38} {t_framed * 1e6:10.2f} us {t_raw * 1e6:10.2f} us {t_framed / t_raw:8.1f}x")


def main() -> None:
    quick = "--quick" in sys.argv
    n = 200 if quick else 2000
    print(f"{'TCPCLv4 (RFC 9174)':<38} {'framed':>13} {'raw limit':>13} {'ratio':>9}")
    for label, size in SIZES.items():
        data = bytes(range(256)) * (size // 256)
        report(f"codec: XFER_SEGMENT enc+dec, {label}", *codec_pair(data), number=n)
    report("codec: XFER_ACK enc+dec", *ack_pair(), number=n * 5)
    for label, size, mru in (
        ("1 KiB", 1024, 65536),
        ("64 KiB", 65536, 65536),
        ("64 KiB", 65536, 16384),
    ):
        data = bytes(range(256)) * (size // 256)
        segments = -(-size // mru)
        name = f"session: {label} bundle, {segments} segment(s)"
        report(name, *session_pair(data, mru), number=max(20, n // 4))


if __name__ == "__main__":
    main()
