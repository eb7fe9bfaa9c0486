"""``fleetwire node`` / ``send`` / ``recv``: run a node from a config file, or use one briefly.

SIGINT and SIGTERM end each command the same way: the node's block is left, so every session
ends with its layer's orderly close (SESS_TERM, SHUTDOWN, TLS close_notify) within one second,
and the store is closed cleanly. (A service manager stops with SIGTERM; before, only Ctrl-C
got the orderly close.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.messages import Header
from fleetwire.protocol.messages.text import TYPE_NAMES, message_from_json, message_to_json

from ..node.config import __doc__ as CONFIG_SAMPLE
from ..node.config import load_config
from ..node.tcp_node import open_configured_node

NODE_HELP = f"""\
Run a node until interrupted: listen for neighbours, dial the configured peers (redialling with
backoff), hold every bundle in the store until a link takes it, and print each verified message
addressed to this node as a JSON line. A message is marked delivered once it was printed; one
printed just before the node was killed may be printed again after the restart (at least once).

configuration file:
{CONFIG_SAMPLE.split("::", 1)[1].rstrip()}

With --stdin the node also sends: each line of standard input is a JSON object
{{"to": N, "message": {{"type": ..., body fields}}}}; the node fills the header, signs and sends
it, and prints {{"sent": "<content id>", "to": N}} (or {{"error": "<why>"}} for a line it cannot
send) among the deliveries. The conformance suite's live cases drive a node this way.

examples:
  fleetwire node relay.toml
  fleetwire node relay.toml --verbose
  fleetwire node member.toml --stdin
"""

SEND_HELP = f"""\
Send one message from the node a config file describes. The message is JSON: its type and body
fields; the node fills the header (issuer, time, sequence). The command returns once the
bundle has left for the next hop, or after --wait seconds with the bundle still held durably
in the node's store (it goes the next time the node runs). Prints the message's content id.

message types: {", ".join(sorted(TYPE_NAMES))}

examples:
  fleetwire send a.toml --to 3 '{{"type": "lease-claim", "resource": "dock/7", "term_ms": 60000}}'
  echo '{{"type": "exception-report", "code": 1, "severity": 3, "scope": "node", "scope_id": 17}}' \\
      | fleetwire send a.toml --to 2 -
"""

RECV_HELP = """\
Run the node a config file describes until it has received --count verified messages, and
print each as a JSON line (exit 1 if --timeout passes first). A message is marked delivered
only after it was printed: one the command did not print (interrupted, killed) is printed by
the next run, so every message is printed at least once.

examples:
  fleetwire recv c.toml
  fleetwire recv c.toml --count 10 --timeout 60
"""


def register(subparsers: Any) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    node = subparsers.add_parser(
        "node",
        help="run a node from a config file",
        description=NODE_HELP,
        formatter_class=formatter,
    )
    node.add_argument("config", type=Path)
    node.add_argument("--verbose", action="store_true", help="log what the node does")
    node.add_argument(
        "--stdin", action="store_true", help="send the messages given as JSON lines on stdin"
    )
    node.set_defaults(run=run_node)
    send = subparsers.add_parser(
        "send", help="send one message and exit", description=SEND_HELP, formatter_class=formatter
    )
    send.add_argument("config", type=Path)
    send.add_argument("message", help="the message as JSON, or - to read it from standard input")
    send.add_argument("--to", type=int, required=True, help="destination node number")
    send.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the next hop (default 30)"
    )
    send.set_defaults(run=run_send)
    recv = subparsers.add_parser(
        "recv", help="receive messages and exit", description=RECV_HELP, formatter_class=formatter
    )
    recv.add_argument("config", type=Path)
    recv.add_argument("--count", type=int, default=1, help="messages to wait for (default 1)")
    recv.add_argument("--timeout", type=float, help="give up after this many seconds")
    recv.set_defaults(run=run_recv)


#: Exit status after a stop signal: 128 + SIGINT, as shells report an interrupted command.
STOPPED = 130


async def until_stopped(body: Callable[[], Awaitable[int]]) -> int:
    """Run ``body``; on SIGINT or SIGTERM cancel it (its cleanup runs) and return STOPPED."""
    result = STOPPED
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for received in signals:
                    logging.getLogger("fleetwire.node").info(
                        "%s: closing every session", signal.Signals(received).name
                    )
                    nursery.cancel_scope.cancel()
                    return

            async def run() -> None:
                nonlocal result
                result = await body()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(run)
    return result


def _print_delivery(signed: Any) -> None:
    line = {"content_id": str(signed.content_id), "message": message_to_json(signed.message)}
    print(json.dumps(line), flush=True)


def run_node(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s %(message)s"
    )

    async def main() -> int:
        async with open_configured_node(config) as node, trio.open_nursery() as nursery:
            print(f"node {config.node} running", file=sys.stderr, flush=True)
            if args.stdin:
                nursery.start_soon(_send_lines, node, config.node)
            if config.demo is not None:
                from ..demo.demo_process import play  # the demo's part, only for such a config

                await play(node, config)
                return 0
            async for signed in node.subscribe():
                _print_delivery(signed)
        return 0

    trio.run(until_stopped, main)
    return 0  # stopped by a signal is how a node normally ends


async def _send_lines(node: Any, number: int) -> None:
    """``--stdin``: send each JSON line of standard input (see NODE_HELP)."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    pending = b""
    async with stdin:
        while chunk := await stdin.receive_some(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    print(json.dumps(await _send_line(node, number, line)), flush=True)


async def _send_line(node: Any, number: int, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        header = Header(issuer=number, issued_at=node.now(), sequence=node.next_message_sequence())
        message = message_from_json(request["message"], header)
        to = int(request["to"])
    except (ValueError, KeyError, TypeError, FleetwireError) as exc:
        return {"error": f"cannot send this line: {exc}"}
    signed = await node.send(message, to)
    return {"sent": str(signed.content_id), "to": to}


def run_send(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    text = sys.stdin.read() if args.message == "-" else args.message
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"fleetwire send: error: the message is not JSON: {exc}") from None

    async def main() -> int:
        async with open_configured_node(config) as node:
            header = Header(
                issuer=config.node, issued_at=node.now(), sequence=node.next_message_sequence()
            )
            message = message_from_json(body, header)
            signed = await node.send(message, args.to)
            print(str(signed.content_id), flush=True)
            with trio.move_on_after(args.wait):
                while node.stats.forwarded + node.stats.delivered < 1:
                    await trio.sleep(0.05)
                return 0
            print(
                f"not yet forwarded after {args.wait:g} s; held in the store for the next run",
                file=sys.stderr,
            )
            return 3

    return trio.run(until_stopped, main)


def run_recv(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def main() -> int:
        async with open_configured_node(config) as node:
            inbox = node.subscribe()
            try:
                with trio.move_on_after(
                    args.timeout if args.timeout is not None else float("inf")
                ):
                    for _ in range(args.count):
                        _print_delivery(await inbox.receive())
                    return 0
            finally:
                # Printed is handed over: the node marks it delivered as it closes. A message
                # not printed (killed first) stays held and comes again on the next run.
                inbox.acknowledge()
            print(f"timed out after {args.timeout:g} s", file=sys.stderr)
            return 1

    return trio.run(until_stopped, main)
