"""The progress of a replay on stderr: bars sent, predictions received, bars/s and the time left."""

from __future__ import annotations

import contextlib
import math
import time
from typing import TextIO


class Progress:
    """One ``\\r``-updated line on a terminal, otherwise one line at every 10%.

    >>> import io
    >>> out = io.StringIO()
    >>> progress = Progress(10, out, tty=False)
    >>> progress.update(5, 0); progress.finish(10, 3)
    >>> for line in out.getvalue().splitlines():
    ...     print(line.rsplit("  ", 2)[0])  # without the rate and the time left
    replay  50.0%  5/10 bars  0 predictions
    replay 100.0%  10/10 bars  3 predictions
    """

    def __init__(self, total: int, stream: TextIO, *, tty: bool | None = None) -> None:
        self.total = max(1, total)
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.start = time.perf_counter()
        self.decile = 0
        self.width = 0

    def note(self, text: str) -> None:
        """A status line of its own."""
        self._write(text + "\n")

    def begin(self) -> None:
        self.start = time.perf_counter()

    def line(self, sent: int, predictions: int) -> str:
        elapsed = max(1e-9, time.perf_counter() - self.start)
        rate = sent / elapsed
        eta = (self.total - sent) / rate if rate > 0 else math.inf
        eta_text = "--:--" if not math.isfinite(eta) else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
        percent = 100 * sent / self.total
        return (f"replay {percent:5.1f}%  {sent:,}/{self.total:,} bars  {predictions:,} predictions  "
                f"{rate:,.0f} bars/s  ETA {eta_text}")

    def update(self, sent: int, predictions: int) -> None:
        if self.tty:
            text = self.line(sent, predictions)
            self._write("\r" + text.ljust(self.width))
            self.width = len(text)
            return
        decile = 10 * sent // self.total
        if decile > self.decile:
            self.decile = decile
            if decile < 10:  # the last line is `finish`'s, with every prediction counted
                self._write(self.line(sent, predictions) + "\n")

    def finish(self, sent: int, predictions: int) -> None:
        if self.tty:
            self.update(sent, predictions)
            self._write("\n")
        else:
            self.decile = 10
            self._write(self.line(sent, predictions) + "\n")

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr never stops a replay
            self.stream.write(text)
            self.stream.flush()
