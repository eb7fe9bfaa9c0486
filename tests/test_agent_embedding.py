"""The embedding example against real ``fleetwire node`` processes, both directions.

Node 9 is ``examples/cyclic_executive.py`` (a 10 Hz loop owning one bundle agent and a
non-blocking socket, no Trio). It dials node 1 (a ``fleetwire node``) over TCPCLv4:

* node 2 (``fleetwire send``) hands node 1 a message for 9; node 1 forwards it over the
  session the loop opened, and the loop prints it;
* the loop sends a lease claim to node 3; node 1 takes custody and forwards it to node 3
  (``fleetwire recv``), which prints it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fleetwire.runtime.cli.cli import main

from .test_processes import fleetwire, free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cyclic_executive.py"
HUB, SENDER, RECEIVER, EMBEDDED = 1, 2, 3, 9


def test_cyclic_executive_exchanges_signed_messages_with_a_node_both_ways(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    main(["keys", "root", str(keys)])
    for node in (HUB, SENDER, RECEIVER, EMBEDDED):
        main(["keys", "node", str(keys), "--node", str(node)])
    hub_port, receiver_port = free_port(), free_port()
    (tmp_path / "hub.toml").write_text(
        f'[node]\nnumber = {HUB}\nkeys = "keys"\nstore = "hub.sqlite3"\n'
        f"[[listen]]\nport = {hub_port}\n"
        f"[[peer]]\nnode = {RECEIVER}\nport = {receiver_port}\n"
        "[reconnect]\ninitial_s = 0.1\nmaximum_s = 0.3\n"
    )
    (tmp_path / "sender.toml").write_text(
        f'[node]\nnumber = {SENDER}\nkeys = "keys"\nstore = "sender.sqlite3"\n'
        f"[[peer]]\nnode = {HUB}\nport = {hub_port}\n"
        f"[routes]\nstatic = {{ {EMBEDDED} = {HUB} }}\n"
    )
    (tmp_path / "receiver.toml").write_text(
        f'[node]\nnumber = {RECEIVER}\nkeys = "keys"\nstore = "receiver.sqlite3"\n'
        f"[[listen]]\nport = {receiver_port}\n"
    )
    hub = subprocess.Popen(fleetwire("node", "hub.toml"), cwd=tmp_path, stderr=subprocess.PIPE)
    embedded = None
    try:
        assert hub.stderr is not None
        assert b"running" in hub.stderr.readline()
        embedded = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--node", str(EMBEDDED), "--keys", str(keys),
             "--connect", f"127.0.0.1:{hub_port}", "--gateway", str(HUB), "--send-to", str(RECEIVER), "--expect", "1",
             "--max-seconds", "40"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert embedded.stderr is not None
        assert b"running" in embedded.stderr.readline()
        message = json.dumps({"type": "lease-claim", "resource": "dock/1", "term_ms": 60_000})
        sent = subprocess.run(
            fleetwire("send", "sender.toml", "--to", str(EMBEDDED), "--wait", "20", message),
            cwd=tmp_path, capture_output=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr.decode()
        received = subprocess.run(
            fleetwire("recv", "receiver.toml", "--count", "1", "--timeout", "30"),
            cwd=tmp_path, capture_output=True, timeout=60,
        )  # fmt: skip
        assert received.returncode == 0, received.stderr.decode()
        line = json.loads(received.stdout.decode().splitlines()[0])
        assert line["message"]["resource"] == "dock/embedded"
        out, err = embedded.communicate(timeout=60)
        assert embedded.returncode == 0, err.decode()
        delivered = json.loads(out.decode().splitlines()[0])
        assert delivered["content_id"] == sent.stdout.decode().strip()
        assert delivered["issuer"] == SENDER and delivered["type"] == "LeaseClaim"
    finally:
        for process in (embedded, hub):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
