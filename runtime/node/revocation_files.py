"""Revocation lists dropped into a node's key folder take effect while it runs.

``fleetwire keys revoke`` writes ``fleet.revocations``; an operator copies it into any node's
key folder (or runs the command there). :func:`watch_revocations` looks at every
``*.revocations`` file in the folder every ``interval`` seconds and hands a changed one to
:meth:`.node.Node.apply_revocations`, which puts it in force and spreads it to the fleet as a
bundle (spec §10). Polling, not inotify: it is portable, and a revocation that waits a few
seconds for the next look is still far faster than the light time to the next node.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:  # the node writes revocation files with write_atomically below
    from .node import Node

log = logging.getLogger("fleetwire.keys")

#: Seconds between looks at the key folder.
DEFAULT_INTERVAL_S = 2.0


async def watch_revocations(node: Node, folder: Path, interval: float = DEFAULT_INTERVAL_S) -> None:
    """Apply every new or changed ``*.revocations`` file in ``folder``, until cancelled."""
    seen: dict[Path, tuple[int, int]] = {}
    while True:
        for path in sorted(folder.glob("*.revocations")):
            try:
                info = path.stat()
                stamp = (info.st_mtime_ns, info.st_size)
                if seen.get(path) == stamp:
                    continue
                seen[path] = stamp
                data = path.read_bytes()
            except OSError as exc:  # removed or replaced between glob and read: next round
                log.info("revocation file %s: %s", path, exc)
                continue
            if not await node.apply_revocations(data):
                log.warning("revocation file %s is not a revocation list of this fleet's root "
                            "(see the refusal above)", path)  # fmt: skip
        await trio.sleep(interval)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
