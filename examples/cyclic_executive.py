"""A flight-software style loop that embeds a fleetwire bundle agent: 10 Hz, no Trio, no threads.

Theory of operation
-------------------
Flight software runs a cyclic executive: one loop, a fixed period, every task called in turn
and none allowed to block. This program is that loop around one
:class:`fleetwire.protocol.agent.agent.BundleAgent` (the node, sans-IO) and one
:class:`fleetwire.protocol.tcpcl.v4.TcpclV4Session` (the convergence layer, sans-IO) over a
non-blocking TCP socket to a ``fleetwire node``. Each cycle (100 ms):

1. **read** whatever bytes the socket has (never waits) and feed them to the session;
2. **session events** become agent events: an established session is ``link_up``, a received
   bundle is ``receive`` (and the session acknowledges it only when the agent answered
   ``TransferAccepted``: the bundle is held), an acknowledged transfer is ``transmitted``, a
   refused or dropped one ``transmit_failed``, the end of the session ``link_down``;
3. **application**: send the message this node has to send, once the session is up;
4. **timers**: ``poll`` the agent when its last ``WakeAt`` is due, forgetting it first (the
   agent names a wake only when it is earlier than the one held, or in a poll's batch);
5. **write** what the session has to send, as far as the socket takes it (the rest waits for
   the next cycle);
6. **sleep** out the rest of the period.

Actions from the agent are carried out in one place (:func:`Executive.act`): ``Transmit``
becomes ``session.send_bundle``, ``Deliver`` prints the message as one JSON line and
acknowledges it, ``WakeAt`` sets the next poll. The agent's store here is the in-memory one;
a durable store plugs in behind the same synchronous interface.

    python examples/cyclic_executive.py --node 9 --keys KEYS --connect 127.0.0.1:4556 \
        --gateway 1 --send-to 3 --expect 1 --max-seconds 30
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

from fleetwire.protocol.agent.actions import (
    Action,
    Deliver,
    DeliveryRefused,
    TransferAccepted,
    TransferRefused,
    Transmit,
    WakeAt,
)
from fleetwire.protocol.agent.agent import AgentConfig, BundleAgent
from fleetwire.protocol.agent.agent_store import MemoryAgentStore
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.protocol.tcpcl import common
from fleetwire.protocol.tcpcl.v4 import SessionConfig, TcpclV4Session
from fleetwire.protocol.tcpcl.v4_messages import RefuseReason
from fleetwire.runtime.node.keyfiles import load_node_key, load_trust

PERIOD_S = 0.1  # 10 Hz


def dtn_now() -> int:
    """DTN time (ms since 2000-01-01Z, RFC 9171 §4.2.6): the embedder owns the clock."""
    return int((time.time() - DTN_EPOCH_UNIX) * 1000)


class Executive:
    """The loop's state: one agent, one session, one socket (module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        now = dtn_now()
        keys = Path(args.keys)
        # Everything not for this node goes up to the gateway (the hierarchical default route).
        config = AgentConfig(node=args.node, key=load_node_key(keys, args.node),
                             trust=load_trust(keys, now), parents={args.node: args.gateway})  # fmt: skip
        self.agent = BundleAgent(config, MemoryAgentStore())
        host, _, port = args.connect.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setblocking(False)
        self.session = TcpclV4Session(
            common.Role.ACTIVE, SessionConfig(node_id=f"ipn:{args.node}.0"), time.monotonic()
        )
        self.peer: int | None = None
        self.outgoing = bytearray()
        self.transfers: dict[int, bytes] = {}  # transfer id -> the agent's bundle key
        self.wake_at: int | None = None
        self.sent = False
        self.custody = False  # the neighbour acknowledged our message
        self.delivered = 0
        self.closed = False
        self.act(self.agent.start(now))

    def act(self, actions: list[Action], transfer_id: int | None = None) -> None:
        for action in actions:
            if isinstance(action, Transmit):
                self.transfers[self.session.send_bundle(action.data)] = action.bundle
            elif isinstance(action, TransferAccepted) and transfer_id is not None:
                self.session.ack(transfer_id)
            elif isinstance(action, TransferRefused) and transfer_id is not None:
                self.session.refuse(transfer_id, RefuseReason.NO_RESOURCES)
            elif isinstance(action, Deliver):
                signed = action.message
                print(json.dumps({
                    "content_id": str(signed.content_id), "issuer": signed.issuer,
                    "type": type(signed.message).__name__,
                }), flush=True)  # fmt: skip
                self.delivered += 1
                self.act(self.agent.acknowledge(action.delivery, dtn_now()))
            elif isinstance(action, DeliveryRefused):
                print(f"refused a bundle: {action.code}: {action.reason}", file=sys.stderr)
            elif isinstance(action, WakeAt):
                self.wake_at = action.at

    def cycle(self) -> None:
        now = dtn_now()
        # 1. read
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            data = None
        if data is not None and not self.closed:
            self.session.receive_data(data)  # b"" is the end of the stream
        self.session.tick(time.monotonic())
        # 2. session events
        while not self.closed:
            event = self.session.next_event()
            if event is common.NEED_DATA:
                break
            self.on_event(event, now)
        # 3. application
        if self.peer is not None and not self.sent and self.args.send_to is not None:
            self.sent = True
            header = Header(issuer=self.args.node, issued_at=now,
                            sequence=self.agent.next_message_sequence(now))  # fmt: skip
            claim = LeaseClaim(header=header, resource="dock/embedded", term_ms=60_000)
            self.act(self.agent.send(claim, self.args.send_to, now))
        # 4. timers
        if self.wake_at is not None and now >= self.wake_at:
            self.wake_at = None
            self.act(self.agent.poll(now))
        # 5. write
        while chunk := self.session.data_to_send():
            self.outgoing += chunk
        if self.outgoing:
            try:
                written = self.sock.send(self.outgoing)
            except BlockingIOError:
                written = 0
            del self.outgoing[:written]

    def on_event(self, event: object, now: int) -> None:
        if isinstance(event, common.SessionEstablished):
            peer = event.peer_node_id.removeprefix("ipn:").partition(".")[0]
            self.peer = int(peer)
            self.act(self.agent.link_up(self.peer, now))
        elif isinstance(event, common.BundleReceived):
            assert self.peer is not None
            self.act(self.agent.receive(event.data, self.peer, now), event.transfer_id)
        elif isinstance(event, common.TransferAcked) and event.complete:
            key = self.transfers.pop(event.transfer_id, None)
            if key is not None and self.peer is not None:
                self.custody = True
                self.act(self.agent.transmitted(self.peer, key, now))
        elif isinstance(event, common.TransferRefused):
            key = self.transfers.pop(event.transfer_id, None)
            if key is not None and self.peer is not None:
                self.act(self.agent.transmit_failed(self.peer, key, now))
        elif isinstance(event, common.ConnectionClosed):
            self.closed = True
            if self.peer is not None:
                self.act(self.agent.link_down(self.peer, now))

    def done(self) -> bool:
        sent_ok = self.args.send_to is None or self.custody
        return sent_ok and self.delivered >= self.args.expect

    def close(self) -> None:
        self.session.terminate()
        deadline = time.monotonic() + 1.0
        while not self.closed and time.monotonic() < deadline:  # an orderly SESS_TERM
            self.cycle()
            time.sleep(PERIOD_S / 10)
        self.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node", type=int, required=True, help="this node's number")
    parser.add_argument("--keys", required=True, help="keys folder (fleetwire keys)")
    parser.add_argument("--connect", required=True, help="HOST:PORT of a fleetwire node")
    parser.add_argument("--gateway", type=int, required=True,
                        help="node number of the node at --connect: the default route")
    parser.add_argument("--send-to", type=int, help="send one lease claim to this node")
    parser.add_argument("--expect", type=int, default=0, help="messages to receive, then exit")
    parser.add_argument("--max-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        executive = Executive(args)
    except (OSError, ValueError) as exc:
        print(f"cannot start: {exc} (hint: is the node listening, are the keys made?)",
              file=sys.stderr)  # fmt: skip
        return 2
    print(f"node {args.node} running", file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline and not executive.closed:
        started = time.monotonic()
        executive.cycle()
        if executive.done():
            executive.close()
            return 0
        time.sleep(max(0.0, PERIOD_S - (time.monotonic() - started)))
    print("stopped before it was done (no session, or nothing came)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
