"""The key folder: other nodes' bad or expired credentials are skipped, never fatal."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from fleetwire.protocol.trust import KeyUnknown, Role
from fleetwire.runtime.node import keyfiles

DAY = 86_400_000
NOW = 849_000_000_000


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = keyfiles.make_root(tmp_path)
    keyfiles.make_node(tmp_path, root, node=1, roles=[Role.NODE], not_before=NOW - DAY,
                       not_after=NOW + DAY)  # fmt: skip
    # Node 2's credential expired yesterday (credentials expire by design).
    keyfiles.make_node(tmp_path, root, node=2, roles=[Role.NODE], not_before=NOW - 400 * DAY,
                       not_after=NOW - DAY)  # fmt: skip
    (tmp_path / "node-3.cred").write_bytes(b"\xa0 not a credential")
    other_root = keyfiles.make_root(tmp_path / "elsewhere")
    keyfiles.make_node(tmp_path / "elsewhere", other_root, node=4, roles=[Role.NODE],
                       not_before=NOW - DAY, not_after=NOW + DAY)  # fmt: skip
    os.replace(tmp_path / "elsewhere" / "node-4.cred", tmp_path / "node-4.cred")
    return tmp_path


def test_bad_and_expired_credentials_are_skipped_with_a_warning(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fleetwire.keys"):
        trust = keyfiles.load_trust(folder, NOW)
    assert {c.node for c in trust.credentials()} == {1}
    warned = "\n".join(caplog.messages)
    assert "node-2.cred" in warned and "key-expired" in warned
    assert "node-3.cred" in warned
    assert "node-4.cred" in warned and "issuer-untrusted" in warned
    with pytest.raises(KeyUnknown):
        trust.key_for(keyfiles.load_node_key(folder, 2).kid, NOW)


def test_a_private_key_readable_by_others_gets_a_warning(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fleetwire.keys"):
        keyfiles.load_node_key(folder, 1)
    assert not caplog.messages
    os.chmod(folder / "node-1.key", 0o644)
    with caplog.at_level(logging.WARNING, logger="fleetwire.keys"):
        keyfiles.load_node_key(folder, 1)
    assert "readable by others" in caplog.text and "chmod 600" in caplog.text


def test_a_damaged_own_key_is_a_clear_error(folder: Path) -> None:
    (folder / "node-1.key").write_bytes(b"garbage")
    with pytest.raises(keyfiles.KeyFileError, match="is not a private key"):
        keyfiles.load_node_key(folder, 1)


def test_a_revocation_file_not_from_the_root_is_an_error(folder: Path) -> None:
    other = keyfiles.load_root(folder / "elsewhere")
    keyfiles.revoke(folder / "elsewhere", other, now=NOW, serials=[1])
    os.replace(folder / "elsewhere" / "fleet.revocations", folder / "fleet.revocations")
    with pytest.raises(keyfiles.KeyFileError, match="not a revocation list of this fleet"):
        keyfiles.load_trust(folder, NOW)


def test_revoke_carries_earlier_revocations_over(folder: Path) -> None:
    root = keyfiles.load_root(folder)
    first = keyfiles.revoke(folder, root, now=NOW, nodes=[1])
    second = keyfiles.revoke(folder, root, now=NOW + 1, serials=[77])
    assert second.serial == first.serial + 1
    assert first.kids <= second.kids and {77} | first.credential_serials == second.credential_serials
    trust = keyfiles.load_trust(folder, NOW + 2)
    assert trust.credentials() == []  # node 1 revoked; 2 expired; 3, 4 unusable


async def test_a_node_starts_and_works_beside_an_expired_credential(tmp_path: Path) -> None:
    import trio

    from .hostile import Fleet, attacker, bundle_of, claim, dtn_now, receive_until

    fleet = Fleet(tmp_path)
    for node in (1, 3):
        fleet.add(node)
    now = dtn_now()
    keyfiles.make_node(fleet.keys, fleet.root, node=2, roles=[Role.NODE],
                       not_before=now - 400 * DAY, not_after=now - DAY)  # fmt: skip
    with trio.fail_after(20):
        async with fleet.running(3) as c, attacker(fleet.ports[3]) as neighbour:
            inbox = c.subscribe()
            signed = fleet.sign(1, claim(1, 1, issued_at=c.now()))
            await neighbour.send(bundle_of(signed.envelope, source=1, destination=3))
            got = await receive_until(inbox, signed.content_id.raw)
    assert [s.content_id for s in got] == [signed.content_id]
