"""The timeframe grammar, in one place: ``N`` followed by ``s``, ``m``, ``h``, ``d`` or ``w``.

>>> to_ms("15m"), to_ms("1d")
(900000, 86400000)
>>> to_ms("0m")
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: timeframe '0m' is not N followed by s, m, h, d or w (N from 1 to 9999)
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from ml_processing.core.errors import BadRequest

__all__ = ["PATTERN", "Symbol", "Timeframe", "to_ms"]

UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
PATTERN = r"^[1-9]\d{0,3}[smhdw]$"
_TIMEFRAME = re.compile(r"^(\d{1,4})([smhdw])$")

#: A timeframe field of an op declaration.
Timeframe = Annotated[str, msgspec.Meta(pattern=PATTERN, description="N then s, m, h, d or w: 1m, 15m, 4h, 1d")]
#: A symbol field of an op declaration (a topic part: no dots).
Symbol = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-/:+^=$]{1,64}$", description="a symbol, e.g. EURUSD")]


def to_ms(timeframe: str) -> int:
    """``1m``, ``15m``, ``4h``, ``1d``, ``1w`` -> milliseconds; `BadRequest` for anything else."""
    match = _TIMEFRAME.match(timeframe) if isinstance(timeframe, str) else None
    if match is None or int(match.group(1)) == 0:
        raise BadRequest(f"timeframe {timeframe!r} is not N followed by s, m, h, d or w (N from 1 to 9999)",
                         field="timeframe")
    return int(match.group(1)) * UNITS[match.group(2)]
