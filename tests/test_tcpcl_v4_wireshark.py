"""An independent reader of our bytes: Wireshark's TCPCLv4 dissector (``tshark``).

A whole session between two of our sessions (contact headers, SESS_INIT with an extension,
segmented transfers with the Transfer Length extension, acks, a refusal, a keepalive, the
SESS_TERM exchange) is written as a TCP capture; tshark must dissect every message the way our
own decoder does, and raise no malformed-packet or error-level expert finding. Skipped where
tshark is not installed (Debian: ``apt-get install tshark``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from fleetwire.protocol.tcpcl.common import NEED_DATA, BundleReceived, ConnectionClosed, Role
from fleetwire.protocol.tcpcl.v4 import SessionConfig, TcpclV4Session
from fleetwire.protocol.tcpcl.v4_messages import ExtensionItem, RefuseReason

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark (Wireshark) is not installed")

ACTIVE_ADDR, PASSIVE_ADDR = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
ACTIVE_PORT, PASSIVE_PORT = 50000, 4556  # 4556: the IANA TCPCL port (§4.1)


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Capture:
    """A minimal pcap writer: one TCP connection, sequence numbers kept per direction."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.seq = {Role.ACTIVE: 1000, Role.PASSIVE: 5000}

    def _frame(self, sender: Role, flags: int, payload: bytes = b"") -> None:
        src, dst = (
            (ACTIVE_ADDR, PASSIVE_ADDR) if sender is Role.ACTIVE else (PASSIVE_ADDR, ACTIVE_ADDR)
        )
        sport, dport = (
            (ACTIVE_PORT, PASSIVE_PORT) if sender is Role.ACTIVE else (PASSIVE_PORT, ACTIVE_PORT)
        )
        other = Role.PASSIVE if sender is Role.ACTIVE else Role.ACTIVE
        ack = self.seq[other] if flags & 0x10 else 0
        tcp = struct.pack(
            ">HHIIBBHHH", sport, dport, self.seq[sender], ack, 5 << 4, flags, 65535, 0, 0
        )
        ip = struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0, src, dst
        )
        ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
        ether = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
        self.frames.append(ether + ip + tcp + payload)
        self.seq[sender] += len(payload) + (1 if flags & 0x03 else 0)  # SYN/FIN count as one

    def handshake(self) -> None:
        self._frame(Role.ACTIVE, 0x02)  # SYN
        self._frame(Role.PASSIVE, 0x12)  # SYN-ACK
        self._frame(Role.ACTIVE, 0x10)  # ACK

    def data(self, sender: Role, payload: bytes) -> None:
        # Frames of an Ethernet MSS, as a capture on a real network has them. (The session
        # writes many small transfers at once; with every segment of a transfer inside one
        # 32 kB frame, the dissector's transfer reassembly finds nothing to reassemble.)
        for i in range(0, len(payload), 1460):
            self._frame(sender, 0x18, payload[i : i + 1460])

    def write(self, path: Path) -> None:
        with path.open("wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
            for n, frame in enumerate(self.frames):
                f.write(struct.pack("<IIII", n, 0, len(frame), len(frame)) + frame)


def run_session(capture: Capture) -> None:
    """Our two sessions talk; every write goes into the capture as one TCP segment (or more)."""
    active = TcpclV4Session(
        Role.ACTIVE,
        SessionConfig(node_id="ipn:1.0", session_extensions=(ExtensionItem(0x7F00, b"hi"),)),
        now=0.0,
    )
    passive = TcpclV4Session(
        Role.PASSIVE, SessionConfig(node_id="dtn://two/", keepalive_s=30, segment_mru=1000), now=0.0
    )

    def pump() -> None:
        moved = True
        while moved:
            moved = False
            for role, session, other in (
                (Role.ACTIVE, active, passive),
                (Role.PASSIVE, passive, active),
            ):
                while data := session.data_to_send():
                    capture.data(role, data)
                    other.receive_data(data)
                    moved = True
            for session in (active, passive):
                while (event := session.next_event()) is not NEED_DATA:
                    if isinstance(event, ConnectionClosed):
                        break
                    moved = True
                    if isinstance(event, BundleReceived):
                        if event.data[:1] == b"R":
                            session.refuse(event.transfer_id, RefuseReason.NO_RESOURCES)
                        else:
                            session.ack(event.transfer_id)
            for session in (active, passive):
                session.tick(0.0)

    pump()
    for size in (10, 2500, 999):
        active.send_bundle(bytes([65 + size % 26]) * size)
    active.send_bundle(b"R" * 50)
    pump()
    passive.tick(30.0)  # a keepalive interval without transmission (§5.1.1)
    active.tick(30.0)  # and the active's idle timer is fed by it
    pump()
    active.terminate()
    pump()
    assert active.state.value == passive.state.value == "closed"


def tshark(path: Path, *args: str) -> str:
    assert TSHARK is not None
    result = subprocess.run(
        # Two passes (-2): the dissector relates segments, acks and refusals across the file.
        [TSHARK, "-2", "-n", "-r", str(path), "-o", "tcp.check_checksum:FALSE", *args],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return result.stdout.decode()


FIELDS = {
    "port": "tcp.srcport",
    "type": "tcpcl.v4.mhdr.type",
    "node": "tcpcl.v4.sess_init.nodeid_data",
    "keepalive": "tcpcl.v4.negotiated.keepalive",
    "sessext": "tcpcl.v4.sessext.type",
    "total": "tcpcl.v4.xferext.transfer_length.total_len",
    "seglen": "tcpcl.v4.xfer_segment.data_len",
    "acklen": "tcpcl.v4.xfer_ack.ack_len",
    "refuse": "tcpcl.v4.xfer_refuse.reason",
    "term": "tcpcl.v4.ses_term.reason",
    "reply": "tcpcl.v4.sess_term.flags.reply",
    "reassembled": "tcpcl.xfer.reassembled.length",
}


def test_wireshark_dissects_a_whole_session_as_we_wrote_it(tmp_path: Path) -> None:
    capture = Capture()
    capture.handshake()
    run_session(capture)
    path = tmp_path / "tcpclv4.pcap"
    capture.write(path)

    # No malformed frame and no warning or error from the dissector, except that it does not
    # know our made-up session extension type (a warning, by design of this test).
    findings = tshark(
        path,
        "-Y",
        "_ws.malformed || (_ws.expert.severity >= 6291456 && !tcpcl.v4.unknown_sessext_type)",
    )
    assert findings.strip() == ""

    args = ["-Y", "tcpcl.v4.mhdr", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in FIELDS.values():
        args += ["-e", field]
    frames = [
        dict(zip(FIELDS, line.split("\t"), strict=True))
        for line in tshark(path, *args).splitlines()
    ]
    by = {ACTIVE_PORT: [], PASSIVE_PORT: []}  # type: dict[int, list[dict[str, str]]]
    for frame in frames:
        by[int(frame["port"])].append(frame)
    active, passive = by[ACTIVE_PORT], by[PASSIVE_PORT]

    def column(rows: list[dict[str, str]], name: str) -> list[str]:
        return [v for row in rows for v in row[name].split(",") if v]

    # Session establishment (§4.6, §4.7, §4.8).
    assert column(active, "node") == ["ipn:1.0"] and column(passive, "node") == ["dtn://two/"]
    assert column(active, "sessext") == ["0x7f00"]
    assert set(column(active + passive, "keepalive")) == {"30"}
    # Transfers: four bundles cut at the passive's 1000-octet Segment MRU (§5.2.2); only the
    # multi-segment one carries a Transfer Length extension (§5.2.5.1), and reassembles whole.
    assert column(active, "seglen") == ["10", "1000", "1000", "500", "999", "50"]
    assert column(active, "total") == ["2500"] and column(active, "reassembled") == ["2500"]
    # Acks are cumulative per transfer (§5.2.3); the "R" bundle is refused, "No Resources".
    assert column(passive, "acklen") == ["10", "1000", "2000", "2500", "999"]
    assert column(passive, "refuse") == ["2"]
    # A keepalive (type 4) from the passive, then SESS_TERM and its REPLY (§6.1).
    assert "0x04" in column(passive, "type")
    assert column(active, "term") == ["0"] and column(passive, "term") == ["0"]
    assert column(active, "reply") == ["0"] and column(passive, "reply") == ["1"]
