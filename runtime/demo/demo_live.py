"""The live view of a fleet run: the virtual day and what is under way, drawn by ``rich``.

Theory of operation
-------------------
An engine calls a :class:`LiveView` with each :class:`~.demo_results.Interval` it has
sampled. On a terminal the view keeps one progress bar current: virtual day of the run,
bundles in flight, dock leases held, exceptions open, and how many cells may grant. When the
output is not a terminal (a pipe, a file, CI) it draws nothing at all, so logs hold only the
report's summary. ``rich`` does the drawing, the refreshing and the terminal detection.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from .demo_results import Interval

DAY_MS = 86_400_000


class LiveView:
    """Use as a context manager around the run; pass the instance as the engine's callback."""

    def __init__(self, total_days: float, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.total_ms = round(total_days * DAY_MS)
        self.updates = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("day {task.fields[day]:>5.2f}"),
                BarColumn(),
                TextColumn(
                    "in flight {task.fields[in_flight]:>5}  leases {task.fields[leases]:>4}  "
                    "exceptions open {task.fields[exceptions]:>4}  "
                    "cells granting {task.fields[cells]}"
                ),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )

    @property
    def active(self) -> bool:
        """True when the view draws (output is a terminal)."""
        return self._progress is not None

    def __enter__(self) -> LiveView:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(
                "run", total=self.total_ms, day=0.0, in_flight=0, leases=0, exceptions=0, cells=0
            )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, interval: Interval, _scenario: object = None) -> None:
        self.updates += 1
        if self._progress is None or self._task is None:
            return
        self._progress.update(
            self._task,
            completed=min(interval.end_ms, self.total_ms),
            day=interval.end_ms / DAY_MS,
            in_flight=interval.bundles_in_flight,
            leases=interval.leases_held,
            exceptions=interval.exceptions_open,
            cells=interval.cells_with_authority,
        )
