"""Real processes on 127.0.0.1: A → relay → C over TCPCLv4, with the relay killed (SIGKILL).

The relay's link to C is down (C is not running) while A hands it five messages; the relay is
killed with SIGKILL holding them, restarted, and only then does C come up: every message A
handed over arrives at C, exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fleetwire.runtime.cli.cli import main

A, RELAY, C = 1, 2, 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_configs(folder: Path, relay_port: int, c_port: int) -> None:
    (folder / "a.toml").write_text(
        f'[node]\nnumber = {A}\nkeys = "keys"\nstore = "a.sqlite3"\n'
        f"[[peer]]\nnode = {RELAY}\nport = {relay_port}\n"
        f"[routes]\nstatic = {{ {C} = {RELAY} }}\n"
    )
    (folder / "relay.toml").write_text(
        f'[node]\nnumber = {RELAY}\nkeys = "keys"\nstore = "relay.sqlite3"\n'
        f"[[listen]]\nport = {relay_port}\n"
        f"[[peer]]\nnode = {C}\nport = {c_port}\n"
        "[reconnect]\ninitial_s = 0.1\nmaximum_s = 0.3\n"
    )
    (folder / "c.toml").write_text(
        f'[node]\nnumber = {C}\nkeys = "keys"\nstore = "c.sqlite3"\n[[listen]]\nport = {c_port}\n'
    )


def fleetwire(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetwire.runtime.cli.cli", *args]


def start_relay(folder: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(fleetwire("node", "relay.toml"), cwd=folder, stderr=subprocess.PIPE)
    assert process.stderr is not None
    line = process.stderr.readline()  # "node 2 running": listening, store open
    assert b"running" in line, line
    return process


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_relay_killed_while_holding_bundles_loses_none(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    main(["keys", "root", str(keys)])
    for node in (A, RELAY, C):
        main(["keys", "node", str(keys), "--node", str(node)])
    relay_port, c_port = free_port(), free_port()
    write_configs(tmp_path, relay_port, c_port)

    relay = start_relay(tmp_path)
    sent = []
    try:
        for n in range(5):
            message = json.dumps(
                {"type": "lease-claim", "resource": f"dock/{n}", "term_ms": 60_000}
            )
            result = subprocess.run(
                fleetwire("send", "a.toml", "--to", str(C), "--wait", "20", message),
                cwd=tmp_path, capture_output=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr.decode()
            sent.append(result.stdout.decode().strip())
        # Every send returned: the relay acknowledged custody, so the bundles are on its disk.
        os.kill(relay.pid, signal.SIGKILL)
        relay.wait(timeout=10)
        relay = start_relay(tmp_path)
        received = subprocess.run(
            fleetwire("recv", "c.toml", "--count", "5", "--timeout", "30"),
            cwd=tmp_path, capture_output=True, timeout=60,
        )  # fmt: skip
        assert received.returncode == 0, received.stderr.decode()
        lines = [json.loads(line) for line in received.stdout.decode().splitlines()]
        assert sorted(line["content_id"] for line in lines) == sorted(sent)
        assert {line["message"]["resource"] for line in lines} == {f"dock/{n}" for n in range(5)}
        # Nothing more arrives: no duplicate was delivered, none is still on its way.
        again = subprocess.run(
            fleetwire("recv", "c.toml", "--count", "1", "--timeout", "2"),
            cwd=tmp_path, capture_output=True, timeout=60,
        )  # fmt: skip
        assert again.returncode == 1 and again.stdout == b""
    finally:
        relay.kill()
        relay.wait(timeout=10)
