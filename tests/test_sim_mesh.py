"""The parts' links: frames arrive whole and in order, two writers never deadlock, a gone
peer is an error only while it is still owed something."""

from __future__ import annotations

import multiprocessing
import socket

import pytest
from fleetwire.runtime.sim.mesh import Mesh, MeshStalled, PeerGone

#: Far more than a socket pair buffers: a blocking send of it would wait for a reader.
BIG = bytes(range(256)) * (64 * 1024)  # 16 MiB


def echo_big(link: socket.socket) -> None:
    """A peer process: post a big report first, then read ours, then answer its size."""
    mesh = Mesh({0: link})
    mesh.post(0, ("theirs", BIG))
    mesh.wait(lambda: bool(mesh.inbox[0]), lambda peer: True, 60)
    got = mesh.inbox[0].popleft()
    mesh.post(0, ("size", len(got[1])))  # type: ignore[index]
    mesh.flush(60)
    mesh.close()


def test_two_parts_writing_big_reports_at_once_do_not_deadlock() -> None:
    ours, theirs = socket.socketpair()
    process = multiprocessing.get_context("spawn").Process(target=echo_big, args=(theirs,))
    process.start()
    theirs.close()
    mesh = Mesh({1: ours})
    try:
        mesh.post(1, ("ours", BIG))  # neither side reads before both have written
        mesh.wait(lambda: len(mesh.inbox[1]) >= 2, lambda peer: True, 60)
        assert mesh.inbox[1].popleft() == ("theirs", BIG)
        assert mesh.inbox[1].popleft() == ("size", len(BIG))
    finally:
        mesh.close()
        process.join(30)
    assert process.exitcode == 0


def test_frames_arrive_whole_and_in_order_however_the_bytes_are_cut() -> None:
    a, b = socket.socketpair()
    left, right = Mesh({1: a}), Mesh({0: b})
    sent = [(step, [(step, 0, 1, 2, bytes(step % 7) * step)], None, step) for step in range(300)]
    for message in sent:
        left.post(1, message)
    while len(right.inbox[0]) < len(sent):  # one process: pump both ends in turn
        left.pump()
        right.pump()
    assert list(right.inbox[0]) == sent
    left.close()
    right.close()


def test_a_gone_peer_fails_a_wait_only_while_it_is_owed_something() -> None:
    a, b = socket.socketpair()
    mesh, peer = Mesh({1: a}), Mesh({0: b})
    peer.post(0, "last words")
    peer.close()  # what a part that finished (or died) does
    # Its last report is still read, and a wait it no longer owes anything to ends well...
    mesh.wait(lambda: bool(mesh.inbox[1]), lambda gone: True, 10)
    assert mesh.inbox[1].popleft() == "last words"
    mesh.post(1, "too late")
    mesh.flush(10)  # ...a flush to it ends (it needs nothing more)...
    # ...but waiting for more from it is an error, not a hang.
    with pytest.raises(PeerGone, match="part 1 closed its link"):
        mesh.wait(lambda: bool(mesh.inbox[1]), lambda gone: gone == 1, 10)
    mesh.close()


def test_what_a_finished_peer_sent_is_read_even_after_a_write_to_it_failed() -> None:
    # A part that finished closes its link without reading what a slower part posted it;
    # Linux then resets the slower part's next write. The reports the finished part sent
    # before closing must still be read, not lost to a "gone" taken from the failed write.
    a, b = socket.socketpair()
    slow, finished = Mesh({1: a}), Mesh({0: b})
    finished.post(0, "its last report")
    slow.post(1, "a report it will never read")
    finished.close()
    slow.post(1, "another")  # the reset: this write fails
    slow.post(1, "and one more")  # dropped at once
    assert not slow.unsent
    slow.wait(lambda: bool(slow.inbox[1]), lambda peer: True, 10)
    assert slow.inbox[1].popleft() == "its last report"
    with pytest.raises(PeerGone):
        slow.wait(lambda: bool(slow.inbox[1]), lambda peer: True, 10)
    slow.close()


def test_a_silent_peer_is_a_stall_after_the_limit() -> None:
    a, b = socket.socketpair()
    mesh = Mesh({1: a})
    with pytest.raises(MeshStalled, match=r"within 0\.2 s"):
        mesh.wait(lambda: bool(mesh.inbox[1]), lambda peer: True, 0.2)
    mesh.close()
    b.close()
