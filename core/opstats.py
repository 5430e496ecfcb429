"""Per-op request counts, errors and latency, kept cheaply on the request path and read at scrape time.

A Prometheus `Histogram` takes a lock and walks its buckets in Python on every observation; here an
observation is one `bisect` and three additions on plain attributes, and `/metrics` turns them into the
``mlp_op_latency_seconds`` histogram and ``mlp_op_errors`` counter when it is read.

>>> stats = OpStats()
>>> stats.observe(0.0003, failed=False); stats.observe(0.02, failed=True)
>>> stats.count, stats.errors, stats.cumulative()[:5]
(2, 1, [0, 0, 0, 1, 1])
"""

from __future__ import annotations

from bisect import bisect_left

#: Upper bounds (seconds) of the latency buckets: 50 us to 10 s.
BUCKETS = (50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1.0, 2.5, 10.0)


class OpStats:
    """One op's requests (answered or failed), the failed ones, their summed latency and its buckets."""

    __slots__ = ("buckets", "count", "errors", "total")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.total = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: above every bound

    def observe(self, seconds: float, *, failed: bool) -> None:
        self.count += 1
        self.total += seconds
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        if failed:
            self.errors += 1

    def cumulative(self) -> list[int]:
        """Requests at or below each bound of `BUCKETS`, then the total (Prometheus's ``le`` buckets)."""
        out, running = [], 0
        for n in self.buckets:
            running += n
            out.append(running)
        return out
