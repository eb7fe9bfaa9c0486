"""The links between the parts of a fleet run across processes: framed, never blocking.

Theory of operation
-------------------
Every two parts of a parallel run (:mod:`.parallel`) share one stream socket (a
``socketpair`` made by the caller before the workers start). Each part posts a report to
every other part after each step and reads theirs before the steps that need them; parts
run ahead of each other by up to a few steps, so at any moment either side may have
several reports in flight.

A blocking ``send`` could deadlock there: two parts each writing a report larger than the
socket's buffer, neither reading. So nothing here blocks on a write. :meth:`Mesh.post`
appends a frame (4-byte big-endian length, then a pickle) to the peer's outgoing buffer and
writes what the socket takes at once; the rest goes out whenever the part next waits
(:meth:`Mesh.wait`, :meth:`Mesh.flush`) or pumps (:meth:`Mesh.pump`), and every wait reads
as well as writes, so two waiting parts always drain each other. A part's outgoing buffer
holds at most the reports of the steps it is ahead by.

A peer that closes its end (it finished, or its process ended) is *gone* once everything it
sent before closing has been read: an error only for a part that still needs something from
it (:class:`PeerGone`, raised by :meth:`Mesh.wait`). A peer that finished sent everything
first, so its reports are read before its end is — even when our write to it has already
failed (Linux resets a socket closed with unread data in it, and a part that finished does
not read what a slower part still posts to it): a failed write only drops what was queued
for that peer.

The frames come from the caller's own worker processes, started with the caller's
arguments: they are trusted as the pipes of ``multiprocessing`` are (a pickle each).
"""

from __future__ import annotations

import collections
import pickle
import select
import socket
import time
from collections.abc import Callable

__all__ = ["Mesh", "MeshStalled", "PeerGone"]

_HEADER = 4
_READ = 1 << 20


class PeerGone(ConnectionError):
    """A part closed its link while this one still needed its reports."""

    def __init__(self, peer: int) -> None:
        super().__init__(f"part {peer} closed its link")
        self.peer = peer


class MeshStalled(TimeoutError):
    """Nothing arrived from the other parts within the stall limit."""


class Mesh:
    """This part's links to every other part (module docstring), keyed by part index."""

    def __init__(self, links: dict[int, socket.socket]) -> None:
        self._links = links
        self._peer_of = {link.fileno(): peer for peer, link in links.items()}
        self._out: dict[int, bytearray] = {peer: bytearray() for peer in links}
        self._in: dict[int, bytearray] = {peer: bytearray() for peer in links}
        #: Messages read, per peer, oldest first.
        self.inbox: dict[int, collections.deque[object]] = {
            peer: collections.deque() for peer in links
        }
        #: Peers whose end has closed and whose every byte has been read: nothing more comes.
        self.gone: set[int] = set()
        #: Peers that take no more (a write failed): what is queued for them is dropped.
        self._deaf: set[int] = set()
        for link in links.values():
            link.setblocking(False)

    def post(self, peer: int, message: object) -> None:
        """Queue ``message`` for ``peer`` and write what its socket takes now."""
        if peer in self._deaf:
            return
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        out = self._out[peer]
        out += len(data).to_bytes(_HEADER, "big")
        out += data
        self._write(peer)

    @property
    def unsent(self) -> bool:
        """Whether some report is still waiting for its socket to take it."""
        return any(self._out.values())

    def pump(self, timeout: float | None = 0.0) -> bool:
        """Read and write what the sockets allow, waiting up to ``timeout`` for any of it;
        whether anything moved."""
        readers = [self._links[peer] for peer in self._links if peer not in self.gone]
        writers = [self._links[peer] for peer, out in self._out.items() if out]
        if not readers and not writers:
            return False
        readable, writable, _ = select.select(readers, writers, [], timeout)
        for link in writable:
            self._write(self._peer_of[link.fileno()])
        for link in readable:
            self._read(self._peer_of[link.fileno()])
        return bool(readable or writable)

    def wait(
        self, ready: Callable[[], bool], needs: Callable[[int], bool], stall_s: float | None
    ) -> None:
        """Pump until ``ready()``; :class:`PeerGone` if a peer that ``needs(peer)`` says is
        still owed something has closed, :class:`MeshStalled` after ``stall_s`` without a
        byte moving."""
        while not ready():
            for peer in self.gone:
                if needs(peer):
                    raise PeerGone(peer)
            self._pump_within(stall_s, "no part was heard from")

    def flush(self, stall_s: float | None) -> None:
        """Write everything queued (reading meanwhile, so a peer flushing too is drained);
        a peer that has gone needs none of it."""
        while self.unsent:
            self._pump_within(stall_s, "no part took its reports")

    def _pump_within(self, stall_s: float | None, what: str) -> None:
        started = time.monotonic()
        moved = self.pump(stall_s)
        if not moved and stall_s is not None and time.monotonic() - started >= stall_s:
            raise MeshStalled(f"{what} within {stall_s:g} s")

    def close(self) -> None:
        for link in self._links.values():
            link.close()

    def _write(self, peer: int) -> None:
        out = self._out[peer]
        if not out:
            return
        try:
            sent = self._links[peer].send(out)
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):
            # It closed. What it sent before closing may still wait in our socket: only the
            # read side says when it has all been read (gone).
            self._deaf.add(peer)
            out.clear()
            return
        del out[:sent]

    def _read(self, peer: int) -> None:
        buffer = self._in[peer]
        link = self._links[peer]
        while True:
            try:
                chunk = link.recv(_READ)
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.gone.add(peer)
                break
            buffer += chunk
            if len(chunk) < _READ:  # drained (a read more would only say so)
                break
        inbox = self.inbox[peer]
        start = 0
        while len(buffer) - start >= _HEADER:
            size = int.from_bytes(buffer[start : start + _HEADER], "big")
            if len(buffer) - start - _HEADER < size:
                break
            begin = start + _HEADER
            inbox.append(pickle.loads(buffer[begin : begin + size]))
            start = begin + size
        del buffer[:start]
