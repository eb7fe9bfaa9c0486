"""The ``fleetwire`` command: keys, inspect and demo, run in-process as a user would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fleetwire.protocol.agent import bundling
from fleetwire.protocol.agent.contacts import DTN_EPOCH_UNIX
from fleetwire.protocol.bpv7 import encode_bundle
from fleetwire.protocol.envelope import seal
from fleetwire.protocol.messages import Header, LeaseClaim
from fleetwire.runtime.cli.cli import COMMANDS, main
from fleetwire.runtime.node import keyfiles


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("demo", "keys", "inspect"):
        assert command in text
    for module in COMMANDS:
        name = module.removeprefix("cmd_")
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "example" in capsys.readouterr().out


def make_bundle(folder: Path) -> Path:
    key = keyfiles.load_node_key(folder, 17)
    now = round((time.time() - DTN_EPOCH_UNIX) * 1000)
    claim = LeaseClaim(
        header=Header(issuer=17, issued_at=now, sequence=1), resource="dock/7", term_ms=60_000
    )
    bundle = bundling.message_bundle(
        seal(claim, key).envelope,
        source=17,
        destination=2,
        created_at=now,
        sequence=0,
        lifetime_ms=3_600_000,
    )
    path = folder / "claim.bundle"
    path.write_bytes(encode_bundle(bundle))
    return path


def test_keys_then_inspect_checks_the_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "root", str(tmp_path)]) == 0
    assert main(["keys", "node", str(tmp_path), "--node", "17"]) == 0
    assert (
        main(
            [
                "keys",
                "node",
                str(tmp_path),
                "--node",
                "2",
                "--role",
                "cell-coordinator",
                "--cell",
                "1",
            ]
        )
        == 0
    )
    assert (tmp_path / "node-17.key").stat().st_mode & 0o077 == 0  # private keys are private
    assert main(["keys", "show", str(tmp_path / "node-2.cred")]) == 0
    assert "cell_coordinator" in capsys.readouterr().out

    bundle = make_bundle(tmp_path)
    assert main(["inspect", str(bundle), "--keys", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ipn:17.7" in out and "lease-claim" in out and "valid, signer trusted" in out

    assert main(["inspect", bundle.read_bytes().hex(), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["payload"]["message"]["resource"] == "dock/7"
    assert info["payload"]["signature"].startswith("not checked")


def test_inspect_reports_a_forged_signer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "root", str(tmp_path)])
    main(["keys", "node", str(tmp_path), "--node", "17"])
    bundle = make_bundle(tmp_path)
    other = tmp_path / "other"
    main(["keys", "root", str(other)])  # a different fleet: node 17 is unknown to it
    assert main(["inspect", str(bundle), "--keys", str(other)]) == 0
    assert "REFUSED key-unknown" in capsys.readouterr().out


def test_errors_are_clear_and_exit_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(tmp_path / "missing.bundle")]) == 1
    assert "No such file" in capsys.readouterr().err
    assert main(["keys", "node", str(tmp_path), "--node", "3"]) == 1
    err = capsys.readouterr().err
    assert "fleet-root.key not found" in err and "hint:" in err
    (tmp_path / "junk").write_bytes(b"\x00\x01")
    assert main(["inspect", str(tmp_path / "junk")]) == 1
    assert "error" in capsys.readouterr().err


def test_demo_runs_a_small_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "report"
    code = main(
        ["demo", "--nodes", "12", "--regions", "1", "--cells", "2", "--days", "0.5",
         "--out", str(out_dir)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads((out_dir / "summary.json").read_text())
    for f in data["families"]:
        assert f["sent"] == f["delivered"], f["family"]
    assert data["leases"]["grants"] > 0
    assert (out_dir / "index.html").read_text().startswith("<!doctype html>")
    assert "latency p50" in out


@pytest.mark.soak
def test_demo_at_a_thousand_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "report"
    args = ["demo", "--nodes", "1000", "--cells", "7", "--days", "1", "--out", str(out_dir)]
    assert main(args) == 0
    data = json.loads((out_dir / "summary.json").read_text())
    assert all(f["sent"] == f["delivered"] > 0 for f in data["families"])
