"""Which process owns a symbol's live series: rendezvous (highest random weight) hashing over named members.

Every live message whose topic names a symbol is handled by exactly one member of the group, the one with
the highest weight ``blake2b(member, symbol)``. The weight depends only on the two names, so every process
computes the same owner from the same member list with no table to hand out, and when a member joins or
leaves only the symbols it gains or loses move: every other symbol keeps its owner.

The hash is fixed and part of the protocol (a C++ or Rust engine that wants to send a symbol's requests
straight to its owner computes the same): the weight of `member` for `symbol` is the first 8 bytes, read as
an unsigned big-endian integer, of ``blake2b(member UTF-8 + b"\\x00" + symbol UTF-8, digest_size=8)``; ties
(practically impossible) go to the member whose name sorts first.

>>> owner("AAPL", ["serve", "process.1"]), owner("BTC-USD", ["serve", "process.1"])
('serve', 'process.1')
>>> [owner(s, ["serve", "process.1", "process.2"]) for s in ("AAPL", "BTC-USD")]  # BTC-USD stays where it was
['process.2', 'process.1']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import blake2b

__all__ = ["Shards", "owner", "weight"]

#: The member that owns every message whose topic names no symbol (kernel events, market-wide news).
FIRST = "serve"


def weight(member: str, symbol: str) -> int:
    """The rendezvous weight of `member` for `symbol` (see the module's documentation)."""
    digest = blake2b(member.encode() + b"\x00" + symbol.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(symbol: str, members: Iterable[str]) -> str:
    """The member that owns `symbol`; raises ValueError for no members."""
    best: tuple[int, str] | None = None
    for member in sorted(members):
        scored = (weight(member, symbol), member)
        if best is None or scored[0] > best[0]:
            best = scored
    if best is None:
        raise ValueError("no members to own a symbol")
    return best[1]


class Shards:
    """One process's view of the group: the member list of an epoch, its own name, and the symbols it must
    not handle while they move between members. `owns` is asked for every live message, so answers are
    cached per symbol until the next epoch.

    >>> view = Shards("serve")
    >>> view.owns("AAPL"), view.epoch  # alone: everything is its own
    (True, 0)
    >>> view.update(1, ["serve", "process.1"])
    >>> view.owns("AAPL"), view.owns("BTC-USD"), view.owns(None)
    (True, False, True)
    >>> view.update(2, ["serve", "process.1"], frozen={"AAPL"}); view.owns("AAPL")
    False
    """

    def __init__(self, me: str, members: Sequence[str] | None = None) -> None:
        self.me = me
        self.epoch = 0
        self.members: tuple[str, ...] = tuple(sorted(members)) if members is not None else (me,)
        self.frozen: frozenset[str] = frozenset()
        self._owned: dict[str, bool] = {}

    def update(self, epoch: int, members: Iterable[str], frozen: Iterable[str] = ()) -> None:
        """Take the member list of `epoch`; the `frozen` symbols are nobody's until `thaw`."""
        self.epoch = epoch
        self.members = tuple(sorted(members))
        self.frozen = frozenset(frozen)
        self._owned = {}

    def thaw(self) -> None:
        self.frozen = frozenset()
        self._owned = {}

    def owner(self, symbol: str | None) -> str:
        """The member that owns `symbol` in this epoch (`FIRST` for no symbol, when it is a member)."""
        if symbol is None:
            return FIRST if FIRST in self.members else self.members[0]
        return owner(symbol, self.members)

    def owns(self, symbol: str | None) -> bool:
        """Whether this process handles live messages of `symbol` now."""
        key = "" if symbol is None else symbol
        known = self._owned.get(key)
        if known is None:
            known = self._owned[key] = (self.me in self.members and key not in self.frozen
                                        and self.owner(symbol) == self.me)
        return known

    def owned(self, symbols: Iterable[str]) -> list[str]:
        """The ones of `symbols` this process owns in this epoch (frozen or not)."""
        return [s for s in symbols if self.me in self.members and owner(s, self.members) == self.me]
