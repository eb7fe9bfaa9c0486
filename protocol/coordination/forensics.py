"""Forensic pull: a coordinator that sees an anomaly in a digest fetches the detail by content id.

Theory of operation
-------------------
Digests (:mod:`.digests`) carry statistics and the content ids of the detail each node keeps
locally. Two small sans-IO pieces finish the loop the seeds describe ("on-demand forensic pull
when an anomaly is detected"):

- on the node, a :class:`DetailKeeper` holds the detail chunks its digests named, within a byte
  budget (oldest dropped first), and answers a fetch by content id;
- on the coordinator, a :class:`ForensicPuller` reads each digest (:meth:`ForensicPuller.digest`):
  when a metric is out of control at least ``min_out_of_control`` times, or its anomaly score
  reaches ``min_anomaly_milli``, it asks the node for the digest's detail chunks
  (:class:`FetchDetail`). An answer (:meth:`ForensicPuller.answer`) is accepted only if it is
  what was asked for — a chunk requested from that node — and its bytes hash to the content id
  (:func:`.digests.check_detail`); only then is it decoded (bounded) and handed over as
  :class:`DetailReceived`. Anything else is refused without being decoded, so nobody can make the
  coordinator parse unrequested data.

A fetch not answered within ``timeout_ms`` (light time and store-and-forward delays included) is
asked again, doubling, up to ``max_attempts``; then :class:`FetchFailed`. A wrong answer counts as
an attempt. Pulls are bounded: at most ``max_outstanding`` fetches open at once and
``max_pulls_per_node`` per node per ``window_ms``, so a node whose digests are always anomalous
cannot make its coordinator pull without end. No I/O, no clock.
"""

from __future__ import annotations

import collections
import enum
from typing import Final

import attrs

from ..errors import FleetwireError, LocalProtocolError
from ..ids import ContentId
from .digests import Digest, DigestError, check_detail, decode_detail

__all__ = [
    "DRAFT_WIRE",
    "Action",
    "DetailKeeper",
    "DetailReceived",
    "DetailRefused",
    "FetchDetail",
    "FetchFailed",
    "ForensicPuller",
    "PullPolicy",
    "RefusalReason",
]


#: The proposed version-2 messages (spec/v2/faults.md, a draft): type code and body keys.
DRAFT_WIRE: Final[dict[str, tuple[int, tuple[tuple[int, str], ...]]]] = {
    "detail-request": (11, ((8, "details"),)),
    "detail-answer": (12, ((8, "detail"), (9, "data"))),
}


class DetailKeeper:
    """A node's detail chunks by content id, within ``budget_bytes`` (oldest dropped first)."""

    def __init__(self, budget_bytes: int = 64 << 20) -> None:
        self.budget_bytes = budget_bytes
        self._chunks: collections.OrderedDict[ContentId, bytes] = collections.OrderedDict()
        self._bytes = 0

    def keep(self, content_id: ContentId, data: bytes) -> None:
        if not content_id.matches(data):
            raise LocalProtocolError("detail bytes do not match their content id")
        if len(data) > self.budget_bytes or content_id in self._chunks:
            return
        self._chunks[content_id] = data
        self._bytes += len(data)
        while self._bytes > self.budget_bytes:
            _, dropped = self._chunks.popitem(last=False)
            self._bytes -= len(dropped)

    def fetch(self, content_id: ContentId) -> bytes | None:
        """The chunk, if still kept (the answer to a fetch by content id)."""
        return self._chunks.get(content_id)

    @property
    def size(self) -> int:
        return self._bytes


@attrs.frozen(slots=True)
class PullPolicy:
    min_out_of_control: int = 3
    min_anomaly_milli: int = 4_000  # four sigma
    timeout_ms: int = 600_000
    max_attempts: int = 4
    max_outstanding: int = 256
    max_pulls_per_node: int = 4
    window_ms: int = 3_600_000
    max_detail_bytes: int = 4 << 20


# --- actions -----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class FetchDetail:
    """Ask ``node`` for the chunk named ``content_id`` (a fetch-by-content-id request)."""

    node: int
    content_id: ContentId
    attempt: int


@attrs.frozen(slots=True)
class DetailReceived:
    node: int
    content_id: ContentId
    samples: dict[str, list[tuple[int, int]]] = attrs.field(eq=False)


@attrs.frozen(slots=True)
class FetchFailed:
    node: int
    content_id: ContentId


class RefusalReason(enum.Enum):
    UNREQUESTED = "no fetch of that content id from that node is open"
    MISMATCH = "the bytes do not hash to the content id"
    UNREADABLE = "the bytes match the id but are not a detail chunk"


@attrs.frozen(slots=True)
class DetailRefused:
    node: int
    content_id: ContentId
    reason: RefusalReason


Action = FetchDetail | DetailReceived | FetchFailed | DetailRefused


@attrs.define(slots=True)
class _Fetch:
    node: int
    attempts: int
    due: int
    every: int


class ForensicPuller:
    """The coordinator's side (module docstring)."""

    def __init__(self, policy: PullPolicy | None = None) -> None:
        self.policy = policy or PullPolicy()
        self._open: dict[ContentId, _Fetch] = {}
        self._pulled: dict[int, collections.deque[int]] = {}
        self._done: collections.OrderedDict[ContentId, None] = collections.OrderedDict()

    def outstanding(self) -> set[ContentId]:
        return set(self._open)

    def digest(self, digest: Digest, now: int) -> list[Action]:
        """Read a verified digest from ``digest.node``; pull its detail if it looks anomalous."""
        if not digest.details or not self._anomalous(digest):
            return []
        pulled = self._pulled.setdefault(digest.node, collections.deque())
        while pulled and now - pulled[0] >= self.policy.window_ms:
            pulled.popleft()
        actions: list[Action] = []
        for cid in digest.details:
            if cid in self._open or cid in self._done:
                continue
            if len(self._open) >= self.policy.max_outstanding:
                break
            if len(pulled) >= self.policy.max_pulls_per_node:
                break
            pulled.append(now)
            self._open[cid] = _Fetch(
                digest.node, 1, now + self.policy.timeout_ms, self.policy.timeout_ms
            )
            actions.append(FetchDetail(digest.node, cid, 1))
        return actions

    def answer(self, node: int, content_id: ContentId, data: bytes, now: int) -> list[Action]:
        """A fetch answer from ``node``: checked against the id before anything else is done."""
        fetch = self._open.get(content_id)
        if fetch is None or fetch.node != node:
            return [DetailRefused(node, content_id, RefusalReason.UNREQUESTED)]
        try:
            check_detail(content_id, data)
        except DigestError:
            return [
                DetailRefused(node, content_id, RefusalReason.MISMATCH),
                *self._retry(content_id, fetch, now),
            ]
        del self._open[content_id]
        self._remember(content_id)
        if len(data) > self.policy.max_detail_bytes:
            return [DetailRefused(node, content_id, RefusalReason.UNREADABLE)]
        try:
            samples = decode_detail(data, self.policy.max_detail_bytes)
        except FleetwireError:
            # The node signed a digest naming bytes that are not a detail chunk: the id is
            # right, so asking again would bring the same bytes.
            return [DetailRefused(node, content_id, RefusalReason.UNREADABLE)]
        return [DetailReceived(node, content_id, samples)]

    def tick(self, now: int) -> list[Action]:
        actions: list[Action] = []
        for cid, fetch in list(self._open.items()):
            if now >= fetch.due:
                actions.extend(self._retry(cid, fetch, now))
        return actions

    def next_deadline(self) -> int | None:
        return min((f.due for f in self._open.values()), default=None)

    def _anomalous(self, digest: Digest) -> bool:
        return any(
            s.out_of_control >= self.policy.min_out_of_control
            or s.anomaly_milli >= self.policy.min_anomaly_milli
            for s in digest.metrics.values()
        )

    def _retry(self, cid: ContentId, fetch: _Fetch, now: int) -> list[Action]:
        if fetch.attempts >= self.policy.max_attempts:
            del self._open[cid]
            self._remember(cid)
            return [FetchFailed(fetch.node, cid)]
        fetch.attempts += 1
        fetch.every *= 2
        fetch.due = now + fetch.every
        return [FetchDetail(fetch.node, cid, fetch.attempts)]

    def _remember(self, cid: ContentId) -> None:
        self._done[cid] = None
        while len(self._done) > 4 * self.policy.max_outstanding:
            self._done.popitem(last=False)
