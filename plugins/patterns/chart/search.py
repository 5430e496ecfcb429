"""Searches over whole arrays that the chart patterns' batch detection is made of, in numpy: for every bar at
once, the next bar where the zigzag moves (`next_moves`), the extreme each bar leads to (`chains`) and the
path through such a map (`path`), the zigzag without numba; for stretches of bars, the first bar where a
condition holds (`stretches`, `first_in_stretches`); and the least float that passes a comparison
(`confirm_key`), which turns a test of two numbers into a key per bar, exactly.

`next_moves` answers, for a zigzag holding an extreme at bar p, "which later bar first either makes a new
extreme or moves a threshold back from it?", for all p together. Most answers are a few bars away, so the
next 8 bars, one offset at a time over all bars, settle most of them; matrices of the next 32 and 256 bars
most of the rest; the few left are found through blocks of 16 bars and their maxima and minima (a sparse
table over the blocks finds the first block that holds the answer, then that block is searched), so the
whole search is O(n log n) in the worst case (a long flat stretch, a long one-way trend) and about O(n) on
market data. The comparisons are the zigzag's own, term for term, so the answers are those of the
bar-by-bar rule exactly.
"""

from __future__ import annotations

import numpy as np

WINDOW = 8  # bars looked at first, one at a time, for every bar
WIDER = (32, 256)  # then these many more, for the bars still without an answer
BLOCK = 16  # bars per block, for the rest
CELLS = 1 << 20  # the most (row, bar) pairs one matrix holds


def confirm_key(bottom: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """For each bar i, the least float x with ``x - bottom[i] >= threshold[i]`` in float arithmetic (+inf where
    bottom is not finite): the subtraction rounds, so ``bottom + threshold`` may be off, mostly by an ulp (then
    the next float up is the answer); where it is still not the least, a bisection over the floats in order
    finds it.

    >>> bottom, threshold = np.array([0.1, -0.3, -1.5]), np.array([0.2, 0.2, 1.5000001])
    >>> key = confirm_key(bottom, threshold)
    >>> bool((key - bottom >= threshold).all()), bool((np.nextafter(key, -np.inf) - bottom >= threshold).any())
    (True, False)
    >>> confirm_key(np.array([np.inf]), np.array([1.0])).tolist()
    [inf]
    """
    with np.errstate(invalid="ignore", over="ignore"):
        key = bottom + threshold
        none = ~np.isfinite(bottom) | np.isnan(threshold)
        key[none] = np.inf
        short = np.flatnonzero(~none & ~(key - bottom >= threshold))  # rounded down: an ulp up
        key[short] = -_below(-key[short])
        off = np.flatnonzero(~none & ~((key - bottom >= threshold) & ~(_below(key) - bottom >= threshold)))
        if off.size:
            key[off] = _least(bottom[off], threshold[off])
    return key


def _below(x: np.ndarray) -> np.ndarray:
    """The float just below each of `x` (finite values; `np.nextafter` towards -inf, without its cost; the
    float just above is ``-_below(-x)``)."""
    bits = x.view(np.int64)
    below = np.where(x > 0, bits - 1, bits + 1).view(np.float64)
    below[x == 0] = -np.nextafter(0.0, 1.0)
    return below


SIGN = np.uint64(1 << 63)


def _least(bottom: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """`confirm_key` by bisection: over the floats as unsigned integers in the floats' order (a negative
    float's bits inverted, a positive one's sign bit set), from -inf (never enough) to +inf (always)."""
    low = np.full(len(bottom), (~np.array([-np.inf]).view(np.uint64))[0])
    high = np.full(len(bottom), (np.array([np.inf]).view(np.uint64) | SIGN)[0])
    while (high - low > 1).any():
        middle = low + (high - low) // np.uint64(2)
        value = np.where(middle & SIGN, middle & ~SIGN, ~middle).view(np.float64)
        enough = value - bottom >= threshold
        high, low = np.where(enough, middle, high), np.where(enough, low, middle)
    return np.where(high & SIGN, high & ~SIGN, ~high).view(np.float64)


def next_moves(top: np.ndarray, bottom: np.ndarray, threshold: np.ndarray, window: int = WINDOW,
               wider: tuple[int, ...] = WIDER) -> tuple[np.ndarray, np.ndarray]:
    """For a zigzag looking for a peak and holding ``top[p]`` as its extreme at bar p, for every p: the first
    later bar i that either makes a new extreme (``top[i] > top[p]``) or confirms p as the peak
    (``top[p] - bottom[i] >= threshold[i]``), or n if none; and whether that bar confirms (a bar that does
    both makes a new extreme, as in the bar-by-bar rule). Unusable bars carry top -inf and bottom +inf: they
    never move anything. For troughs, pass ``-bottom`` and ``-top``: the same comparisons, mirrored exactly.

    >>> top = np.array([10.0, 11.0, 10.5, 9.0, 12.0])
    >>> move, confirms = next_moves(top, top - 1.0, np.full(5, 2.5))
    >>> move.tolist(), confirms.tolist()
    ([1, 3, 3, 4, 5], [False, True, True, False, False])
    """
    n = len(top)
    key = confirm_key(bottom, threshold)
    tops = np.concatenate([top, np.full(window, -np.inf)])  # past the end: bars that never move anything
    keys = np.concatenate([key, np.full(window, np.inf)])
    move = np.full(n, n, dtype=np.intp)
    open_ = np.isfinite(top)  # an unusable bar is never an extreme
    bars = np.arange(n)
    for step in range(1, window + 1):  # the next bars, for every bar still open
        hit = (tops[step:step + n] > top) | (keys[step:step + n] <= top)
        hit &= open_
        np.copyto(move, bars + step, where=hit)
        open_ &= ~hit
    rows = np.flatnonzero(open_)
    start = rows + window + 1
    for width in wider:  # the few further away: the next bars of each, as one matrix (of bounded size)
        rows, start = rows[start < n], start[start < n]
        if not rows.size or rows.size * width > CELLS:
            break
        ahead = np.minimum(start[:, None] + np.arange(width), n)  # n: the inert bar past the end
        value = top[rows][:, None]
        hit = (tops[ahead] > value) | (keys[ahead] <= value)
        found = hit.any(axis=1)
        move[rows[found]] = start[found] + hit[found].argmax(axis=1)
        rows, start = rows[~found], start[~found] + width
    rows, start = rows[start < n], start[start < n]
    if rows.size:
        move[rows] = _far_moves(top, key, top[rows], start)
    confirms = move < n
    confirms[confirms] = ~(top[move[confirms]] > top[confirms])
    return move, confirms


def _far_moves(top: np.ndarray, key: np.ndarray, value: np.ndarray, start: np.ndarray) -> np.ndarray:
    """`next_moves` for the extremes `value` whose answer is not in the window: the first bar from `start` with
    ``top > value`` or ``key <= value`` (`confirm_key`), or n: the rest of the start's block, then the first
    block whose maximum or minimum holds an answer, then that block."""
    n = len(top)
    blocks = -(-n // BLOCK)
    size = blocks * BLOCK
    tops = np.concatenate([top, np.full(size - n, -np.inf)])
    keys = np.concatenate([key, np.full(size - n, np.inf)])
    level_top, level_key = [tops.reshape(blocks, BLOCK).max(axis=1)], [keys.reshape(blocks, BLOCK).min(axis=1)]
    while 1 << len(level_top) <= blocks:  # level k: the maximum and minimum of blocks b to b + 2^k - 1
        step, upper, lower = 1 << (len(level_top) - 1), level_top[-1].copy(), level_key[-1].copy()
        upper[:-step] = np.maximum(upper[:-step], level_top[-1][step:])
        lower[:-step] = np.minimum(lower[:-step], level_key[-1][step:])
        level_top.append(upper)
        level_key.append(lower)
    chunk = CELLS // BLOCK
    return np.concatenate([_in_blocks(tops, keys, level_top, level_key, n, value[i:i + chunk], start[i:i + chunk])
                           for i in range(0, len(value), chunk)])


def _in_blocks(tops: np.ndarray, keys: np.ndarray, level_top: list[np.ndarray], level_key: list[np.ndarray], n: int,
               value: np.ndarray, start: np.ndarray) -> np.ndarray:
    """`_far_moves` for one bounded chunk of rows."""
    blocks = len(level_top[0])
    out = np.full(len(value), n, dtype=np.intp)
    # 1. the rest of the block the search starts in
    base = start // BLOCK * BLOCK
    lane = np.arange(BLOCK)
    cols = base[:, None] + lane
    hit = (cols >= start[:, None]) & ((tops[cols] > value[:, None]) | (keys[cols] <= value[:, None]))
    found = hit.any(axis=1)
    out[found] = base[found] + hit[found].argmax(axis=1)
    rest = np.flatnonzero(~found & (base + BLOCK < n))
    if not rest.size:
        return out
    # 2. the first later block holding an answer: descend the sparse table of block maxima and minima
    block, v = base[rest] // BLOCK + 1, value[rest]
    for k in range(len(level_top) - 1, -1, -1):
        at = np.minimum(block, blocks - 1)
        clear = (block < blocks) & (level_top[k][at] <= v) & (level_key[k][at] > v)
        block = np.where(clear, np.minimum(block + (1 << k), blocks), block)
    # 3. the answer inside that block
    inside = block < blocks
    rest, block, v = rest[inside], block[inside], v[inside]
    cols = block[:, None] * BLOCK + lane
    hit = (tops[cols] > v[:, None]) | (keys[cols] <= v[:, None])
    out[rest] = block * BLOCK + hit.argmax(axis=1)
    return out


def chains(move: np.ndarray, confirms: np.ndarray) -> np.ndarray:
    """For every bar p: the extreme the zigzag confirms when it starts holding p (follow `move` through the new
    extremes until one is confirmed), or n if none is: pointer doubling, a few passes over the arrays."""
    n = len(move)
    follow = np.append(np.where(confirms, np.arange(n), move), n)
    while True:
        further = follow[follow]
        if np.array_equal(further, follow):
            return follow
        follow = further


def path(step: np.ndarray, start: int) -> np.ndarray:
    """``start, step[start], step[step[start]], ...`` up to the first value past the end (``len(step) - 1``, which
    `step` must map to itself), by doubling: the positions 2^k to 2^(k+1) - 1 are those 0 to 2^k - 1 moved 2^k
    steps at once.

    >>> path(np.array([2, 0, 3, 3]), 0).tolist()
    [0, 2, 3]
    """
    end = len(step) - 1
    out, jump = np.array([start]), step
    while out[-1] < end:
        out = np.concatenate([out, jump[out]])
        jump = jump[jump]
    return out[:int(np.argmax(out >= end)) + 1]


def stretches(starts: np.ndarray, n: int) -> np.ndarray:
    """For each of n bars, the number of the stretch it lies in: stretch j runs from ``starts[j]`` to the next
    start (the last to n), bars before the first start are in stretch -1. `starts` ascend.

    >>> stretches(np.array([2, 5]), 7).tolist()
    [-1, -1, 0, 0, 0, 1, 1]
    """
    return np.repeat(np.arange(-1, len(starts)), np.diff(np.concatenate([[0], starts, [n]])))


def first_in_stretches(mask: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """For each of `count` stretches (`owner` numbers each bar's, as `stretches`), the first bar where `mask`
    holds, or -1.

    >>> first_in_stretches(np.array([0, 1, 1, 0, 1, 1, 0], bool), stretches(np.array([2, 5]), 7), 2).tolist()
    [2, 5]
    """
    bars = np.flatnonzero(mask & (owner >= 0))
    out = np.full(count, -1, dtype=np.intp)
    if bars.size:
        which = owner[bars]
        lead = np.concatenate([[True], which[1:] != which[:-1]])
        out[which[lead]] = bars[lead]
    return out
