"""Small-bundle cost of the convergence-layer sessions: CPU per bundle, as ratios.

Two sans-IO sessions back to back, driven as the runtime's link drives them (batched events;
``send_bundles`` and ``ack_many`` where a session has them, one call per bundle otherwise):
the sender queues a window of bundles and writes them, the receiver parses the bytes into
events and acks the run at once, the sender reads the acks. Measured as CPU time
(``time.process_time``) per bundle for TCPCLv3 (RFC 7242, with acks), MTCP (no acks) and
TCPCLv4 (RFC 9174), and as ratios against the raw work of the same run: the bundles joined
into one buffer and sliced back out, which no framing can beat.

Run: ``python benchmarks/bench_tcpcl_small.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from fleetwire.protocol.tcpcl import mtcp, v3, v4
from fleetwire.protocol.tcpcl.common import (
    NEED_DATA,
    BundleReceived,
    BundlesReceived,
    ConnectionClosed,
    Role,
    TransferAcked,
    TransfersAcked,
)

SIZES = {"fcp 229": 229, "1 KiB": 1024}
WINDOW = 256


def drain(session: Any) -> tuple[list[int], int]:
    """Received transfer ids, and the count of our transfers completely acked."""
    tids: list[int] = []
    acked = 0
    while True:
        event = session.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return tids, acked
        if isinstance(event, BundlesReceived):
            tids += event.transfer_ids
        elif isinstance(event, BundleReceived):
            tids.append(event.transfer_id)
        elif isinstance(event, TransfersAcked):
            acked += len(event.transfer_ids)
        elif isinstance(event, TransferAcked) and event.complete:
            acked += 1


def move(a: Any, b: Any) -> None:
    while chunk := a.data_to_send():
        b.receive_data(chunk)


def pair(kind: str) -> tuple[Any, Any, bool]:
    """(sender, receiver, acks) established, nothing left to say."""
    if kind == "tcpclv3":
        config = v3.TcpclV3Config(local_eid="ipn:1.0", keepalive_s=0)
        a: Any = v3.TcpclV3Session(Role.ACTIVE, config, batch_events=True)
        b: Any = v3.TcpclV3Session(Role.PASSIVE, config, batch_events=True)
        acks = True
    elif kind == "mtcp":
        a = mtcp.MtcpSession(Role.ACTIVE, batch_events=True)
        b = mtcp.MtcpSession(Role.PASSIVE, batch_events=True)
        acks = False
    else:
        a = v4.TcpclV4Session(
            Role.ACTIVE, v4.SessionConfig(node_id="ipn:1.0"), 0.0, batch_events=True
        )
        b = v4.TcpclV4Session(
            Role.PASSIVE, v4.SessionConfig(node_id="ipn:2.0"), 0.0, batch_events=True
        )
        acks = True
    for _ in range(4):
        move(a, b)
        drain(b)
        move(b, a)
        drain(a)
    return a, b, acks


def session_round(a: Any, b: Any, acks: bool, bundles: Sequence[bytes]) -> None:
    """One window: queue, write, parse, ack the run, read the acks."""
    send_bundles = getattr(a, "send_bundles", None)
    if send_bundles is not None and acks:
        send_bundles(bundles)
    else:
        for bundle in bundles:
            a.send_bundle(bundle)
    move(a, b)
    tids, _ = drain(b)
    assert len(tids) == len(bundles)
    ack_many = getattr(b, "ack_many", None)
    if ack_many is not None:
        ack_many(tids)
    else:
        for tid in tids:
            b.ack(tid)
    if acks:
        move(b, a)
        _, acked = drain(a)
        assert acked == len(bundles)


def raw_round(bundles: Sequence[bytes]) -> None:
    """The same bytes moved without framing: one join, one buffer, a slice per bundle."""
    wire = bytearray(b"".join(bundles))
    at = 0
    out = []
    for bundle in bundles:
        n = len(bundle)
        out.append(bytes(wire[at : at + n]))
        at += n


def cpu_per_bundle(fn: Callable[[], None], bundles: int, rounds: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(rounds):
            fn()
        best = min(best, (time.process_time() - start) / (rounds * bundles))
    return best


def main() -> None:
    quick = "--quick" in sys.argv
    rounds, repeat = (20, 3) if quick else (100, 5)
    print(f"{'size':>8} {'session':>8} {'µs/bundle':>10} {'raw µs':>8} {'vs raw':>7} {'vs v4':>6}")
    for name, size in SIZES.items():
        bundles = [bytes([i % 251]) * size for i in range(WINDOW)]
        raw = cpu_per_bundle(lambda bundles=bundles: raw_round(bundles), WINDOW, rounds, repeat)
        figures: dict[str, float] = {}
        for kind in ("tcpclv4", "tcpclv3", "mtcp"):
            a, b, acks = pair(kind)
            figures[kind] = cpu_per_bundle(
                lambda a=a, b=b, acks=acks, bundles=bundles: session_round(a, b, acks, bundles),
                WINDOW,
                rounds,
                repeat,
            )
        for kind, cost in figures.items():
            print(
                f"{name:>8} {kind:>8} {cost * 1e6:>10.2f} {raw * 1e6:>8.2f} "
                f"{cost / raw:>7.1f} {cost / figures['tcpclv4']:>6.2f}"
            )


if __name__ == "__main__":
    main()
