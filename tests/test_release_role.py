"""One node's release role across restarts: what it fetched, installed and was ordered survives
(the artifact store and its journal), and hostile release bundles are refused with a code.

The node is a real :class:`~fleetwire.runtime.node.node.Node`; its neighbour (node 2) is played by
the test, which puts release bundles in the role's inbox as the service split would."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
import trio.testing
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.agent.contacts import Clock
from fleetwire.protocol.bpv7 import Bundle, decode_bundle, encode_bundle
from fleetwire.protocol.release.authority import Mode
from fleetwire.protocol.release.carriage import (
    RELEASE_SERVICE,
    Holdings,
    Kind,
    decode_carriage,
    encode_carriage,
)
from fleetwire.protocol.release.fetch import FetchConfig, LinkKind
from fleetwire.protocol.release.manifest import Version
from fleetwire.protocol.release.messages import (
    ChunkAnswer,
    ChunkRequest,
    RolloutStage,
    StageAction,
)
from fleetwire.protocol.release.orders import RevocationOrder
from fleetwire.runtime.node.node import NodeConfig, open_node
from fleetwire.runtime.roles.release import ReleaseConfig, ReleaseRole, Verdict
from fleetwire.runtime.store.artifact_store import ArtifactStore
from fleetwire.runtime.store.memory_store import MemoryBundleStore

from .fleet import T0, node_key
from .release_support import PIPELINE, make_release, release_trust

NODE, NEIGHBOUR, CELL = 1, 2, 5
TRUST = release_trust([NODE, NEIGHBOUR])
PREVIOUS, _ = make_release(version=Version(2, 4, 1), seed=b"2.4.1")
NEW, BLOBS = make_release(version=Version(3, 0, 0), size=6000, chunk_size=1000, seed=b"3.0.0")


@attrs.define
class Life:
    role: ReleaseRole
    inbox: trio.MemorySendChannel[tuple[int, Bundle]]
    store: MemoryBundleStore
    seq: int = 0

    async def give(self, kind: Kind, body: bytes, source: int = NEIGHBOUR) -> None:
        """A release bundle from ``source`` arrives; wait until the role has acted on it."""
        self.seq += 1
        bundle = message_bundle(
            encode_carriage(kind, body), source=source, destination=NODE,
            created_at=T0, sequence=self.seq, lifetime_ms=86_400_000, service=RELEASE_SERVICE,
        )  # fmt: skip
        await self.inbox.send((source, decode_bundle(encode_bundle(bundle))))
        await trio.sleep(1)


def judge(manifest: object, artifact: bytes, canary: bool, authority: bool) -> Verdict:
    return Verdict(agreed=10)


@asynccontextmanager
async def life(path: Path) -> AsyncIterator[Life]:
    clock = Clock(trio.current_time(), T0)
    bundles = MemoryBundleStore()
    store = ArtifactStore.open(path, TRUST)
    send, receive = trio.open_memory_channel[tuple[int, Bundle]](math.inf)
    config = NodeConfig(node=NODE, key=node_key(NODE), trust=TRUST)
    try:
        async with open_node(config, bundles, clock=clock) as node, trio.open_nursery() as tasks:
            role = ReleaseRole(
                node, store,
                ReleaseConfig(authority=PIPELINE, neighbours={NEIGHBOUR: LinkKind.CELL},
                              cell=CELL, serves=frozenset({CELL}),
                              fetch=FetchConfig(request_timeout=3_600_000)),
                receive, judge=judge, preinstalled=[PREVIOUS],
            )  # fmt: skip
            await tasks.start(role.run)
            yield Life(role, send, bundles)
            tasks.cancel_scope.cancel()  # a crash: nothing is said to anyone
    finally:
        store.close()


def stage(serial: int, action: StageAction) -> bytes:
    order = RolloutStage(serial, T0, PIPELINE, NEW.release_id, 0, action, (CELL,))
    return order.sign(node_key(PIPELINE))


async def test_a_node_restarted_mid_fetch_resumes_and_keeps_what_it_was_ordered(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    path = tmp_path / "artifacts.db"
    chunks = list(BLOBS.items())
    with trio.fail_after(3600):
        async with life(path) as first:
            await first.give(Kind.MANIFEST, NEW.sign(node_key(PIPELINE)))
            await first.give(Kind.ROLLOUT_STAGE, stage(1, StageAction.INSTALL_SHADOW))
            await first.give(Kind.HOLDINGS, Holdings(frozenset(BLOBS)).to_payload())
            for cid, data in chunks[:3]:
                await first.give(Kind.CHUNK_ANSWER, ChunkAnswer(cid, data).to_payload())
            assert first.role.store.held() == {cid for cid, _ in chunks[:3]}
            assert NEW.release_id not in first.role.installed_at

        async with life(path) as second:
            # It still wants the release and holds half of it, and says so to its neighbour,
            # which answers with what it holds (a restarted node learns again whom to ask).
            assert second.role.store.held() == {cid for cid, _ in chunks[:3]}
            assert await holdings_sent(second) == [frozenset(cid for cid, _ in chunks[:3])]
            await second.give(Kind.HOLDINGS, Holdings(frozenset(BLOBS)).to_payload())
            # The neighbour's first holdings since our start get ours once in answer.
            assert len(await holdings_sent(second)) == 2
            await second.give(Kind.HOLDINGS, Holdings(frozenset(BLOBS)).to_payload())
            assert len(await holdings_sent(second)) == 2
            asked = await requests_for(second)
            assert asked == {cid for cid, _ in chunks[3:]}  # never a chunk it holds
            for cid, data in chunks[3:]:
                await second.give(Kind.CHUNK_ANSWER, ChunkAnswer(cid, data).to_payload())
            assert NEW.release_id in second.role.installed_at
            await second.give(Kind.ROLLOUT_STAGE, stage(2, StageAction.GRANT_AUTHORITY))
            assert second.role.table.active("B").version == NEW.version  # type: ignore[union-attr]
            order = RevocationOrder(1, T0, PIPELINE, "B", NEW.version)
            await second.give(Kind.AUTHORITY_REVOCATION, order.sign(node_key(PIPELINE)))
            assert second.role.table.active("B").version == PREVIOUS.version  # type: ignore[union-attr]

        async with life(path) as third:
            installed = third.role.table.installed()
            assert installed[NEW.release_id].mode is Mode.REVOKED  # the bits stay, no authority
            assert installed[PREVIOUS.release_id].mode is Mode.ACTIVE
            # The old grant, replayed by the network, is refused: the journal kept its serial.
            await third.give(Kind.ROLLOUT_STAGE, stage(2, StageAction.GRANT_AUTHORITY))
            assert third.role.table.active("B").version == PREVIOUS.version  # type: ignore[union-attr]
            for cid, data in chunks:
                assert third.role.store.get_chunk(cid) == data


async def holdings_sent(life: Life) -> list[frozenset[object]]:
    """The holdings the role handed to its node for the neighbour, oldest first."""
    out: list[frozenset[object]] = []
    for bundle_id in await life.store.pending_ids(None, 1000):
        held = await life.store.get(bundle_id)
        assert held is not None
        kind, body = decode_carriage(decode_bundle(held.data).payload)
        if kind is Kind.HOLDINGS:
            out.append(frozenset(Holdings.from_payload(body).chunks))
    return out


async def requests_for(life: Life) -> set[object]:
    """Chunk ids in the requests the role handed to its node for the neighbour."""
    asked: set[object] = set()
    for bundle_id in await life.store.pending_ids(None, 1000):
        held = await life.store.get(bundle_id)
        assert held is not None
        kind, body = decode_carriage(decode_bundle(held.data).payload)
        if kind is Kind.CHUNK_REQUEST:
            asked |= set(ChunkRequest.from_payload(body).chunks)
    return asked


async def test_hostile_release_bundles_are_refused_with_a_code_and_change_nothing(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    with trio.fail_after(3600):
        async with life(tmp_path / "artifacts.db") as one:
            await one.give(Kind.MANIFEST, b"\xa0")  # not an envelope
            await one.give(Kind.HOLDINGS, b"\xff" * 40)  # not CBOR
            await one.give(Kind.CHUNK_ANSWER, ChunkAnswer(NEW.chunks[0].id, b"x").to_payload())
            await one.give(Kind.NODE_REPORT, b"\x80")
            await one.give(Kind.ROLLOUT_STAGE, stage(1, StageAction.INSTALL_SHADOW), source=7)
            codes = [r.code for r in one.role.refusals]
            assert codes == [
                "envelope-not-sign1", "release-format", "chunk-not-wanted", "envelope-not-sign1",
            ]  # fmt: skip
            assert one.role.table.active("B").version == PREVIOUS.version  # type: ignore[union-attr]
