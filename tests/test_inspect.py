"""``fleetwire inspect`` shows what it can decode and marks the rule a bundle breaks."""

from __future__ import annotations

import json

import pytest
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.bpv7 import encode_bundle
from fleetwire.runtime.cli.cli import main

from .conftest import VECTORS

CASES = json.loads((VECTORS / "rfc9173" / "rfc9173_appendixA_vectors.json").read_text())
A_1_4 = next(case["hex"] for case in CASES if case["section"].startswith("A.1.4"))


def test_rfc9173_a1_is_shown_block_by_block_with_the_broken_rule_marked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", A_1_4]) == 1  # a rule is broken: scripts still see it
    out = capsys.readouterr().out
    assert "from     ipn:2.1" in out and "to       ipn:1.2" in out
    assert "bib" in out and "payload" in out
    assert "BROKEN primary-crc-missing (block 0)" in out and "RFC 9171 §4.3.1" in out


def test_rfc9173_a1_as_json_lists_blocks_and_broken_rules(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", A_1_4, "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert [b["type"] for b in info["blocks"]] == ["bib", "payload"]
    assert info["broken_rules"][0]["code"] == "primary-crc-missing"


def test_a_wrong_crc_is_marked_and_the_blocks_still_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = encode_bundle(
        message_bundle(
            b"\x00" * 32, source=1, destination=2, created_at=1, sequence=0, lifetime_ms=1000
        )
    )
    assert main(["inspect", good.hex()]) == 0
    capsys.readouterr()
    data = bytearray(good)
    data[-10] ^= 0xFF  # inside the payload block's data: its CRC no longer matches
    code = main(["inspect", data.hex(), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert code == 1
    assert info["blocks"][-1]["type"] == "payload"
    assert any("crc" in rule["code"] for rule in info["broken_rules"])


def test_garbage_is_still_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "0001"]) == 1
    assert "error" in capsys.readouterr().err
