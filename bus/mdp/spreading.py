"""Which process answers a stateless request, when the broker's own process and worker processes both serve
its service (``serve --processes N``).

A request is answered in the broker's process, with no socket hop, unless that process is busy: a request
of the same service is still in flight there (work handed to a thread), or its loop spent more than half of
the last window answering requests and this op has lately cost more than ``offload_after`` seconds. Then an
idle worker of another process takes it, and the broker's loop stays free for the edge and the sockets. A
lone client waiting for each answer keeps the loop mostly idle, so it is always answered here, without the
extra hop. Only ops declared stateless (``spread``) move; every other op stays with the process that owns
the state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

#: Weight of the newest measurement in an op's moving average cost.
ALPHA = 0.2
#: The loop's busy share is measured over windows this long (seconds) ...
WINDOW = 0.05
#: ... and above this share the loop counts as busy.
BUSY = 0.5


class Spreader:
    """The broker's record of what its own process costs per stateless op, and the choice it makes.

    >>> s = Spreader({("models", "predict")}, offload_after=0.001)
    >>> s.wants_worker(b"models", "predict")  # nothing known yet: answer here
    False
    >>> s.began(b"models")  # one in flight here: the next one goes to an idle worker process
    >>> s.wants_worker(b"models", "predict"), s.wants_worker(b"models", "train")
    (True, False)
    """

    def __init__(self, ops: Iterable[tuple[str, str]] = (), *, offload_after: float = 200e-6) -> None:
        self.ops = frozenset((service.encode(), op) for service, op in ops)
        self.services = frozenset(service for service, _ in self.ops)
        self.offload_after = offload_after
        self._cost: dict[tuple[bytes, str], float] = {}
        self._inflight: dict[bytes, int] = {}
        self._window_start = time.perf_counter()
        self._window_busy = 0.0  # seconds of the current window spent answering here
        self._busy_share = 0.0  # of the last complete window
        self.offloaded = 0  # requests handed to another process

    def wants_worker(self, service: bytes, op: str) -> bool:
        """Whether a request for `op` of `service` should go to an idle worker process."""
        if (service, op) not in self.ops:
            return False
        if self._inflight.get(service, 0) > 0:
            return True
        return self._cost.get((service, op), 0.0) > self.offload_after and self.busy()

    def busy(self) -> bool:
        """Whether the loop spent more than `BUSY` of the last window answering (an idle spell resets it)."""
        if time.perf_counter() - self._window_start > 4 * WINDOW:
            return False
        return self._busy_share > BUSY

    def served(self, service: bytes, op: str, seconds: float) -> None:
        """The broker's process answered `op` synchronously in `seconds` of its loop."""
        key = (service, op)
        if key in self.ops:
            last = self._cost.get(key)
            self._cost[key] = seconds if last is None else last + ALPHA * (seconds - last)
        now = time.perf_counter()
        self._window_busy += seconds
        if now - self._window_start >= WINDOW:
            self._busy_share = self._window_busy / (now - self._window_start)
            self._window_start, self._window_busy = now, 0.0

    def began(self, service: bytes) -> None:
        """A request of `service` answered in this process went on in the background (awaitable reply)."""
        self._inflight[service] = self._inflight.get(service, 0) + 1

    def ended(self, service: bytes) -> None:
        self._inflight[service] -= 1
