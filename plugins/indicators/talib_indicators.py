"""Every TA-Lib function but the candlestick patterns, registered from TA-Lib's own metadata.

The functions are TA-Lib's, listed by ``talib.get_function_groups()``; the adapter that computes them in
batch and through TA-Lib's stream handles is `ml_processing.sdk.talib_functions`. Every group is offered
except "Pattern Recognition": those functions answer "pattern here or not" rather than a value, and the
``patterns`` plugin offers them as candlestick patterns. The math operators that read two series (``ADD``,
``SUB``, ``MULT``, ``DIV``) read TA-Lib's default columns for them, ``high`` and ``low``.

>>> len(talib_indicators()) == sum(len(talib.get_function_groups()[g]) for g in GROUPS)
True
"""

from __future__ import annotations

import talib

from ml_processing.sdk.indicator import Indicator
from ml_processing.sdk.talib_functions import TalibIndicator, TalibStream

__all__ = ["EXCLUDED", "GROUPS", "TalibIndicator", "TalibStream", "talib_indicators"]

#: The TA-Lib groups offered as indicators.
GROUPS: tuple[str, ...] = ("Overlap Studies", "Momentum Indicators", "Volume Indicators", "Volatility Indicators",
                           "Cycle Indicators", "Statistic Functions", "Price Transform", "Math Operators",
                           "Math Transform")
#: The TA-Lib groups left out, and why.
EXCLUDED: dict[str, str] = {"Pattern Recognition": "candlestick patterns: offered by the patterns plugin"}


def talib_indicators() -> list[Indicator]:
    """One `TalibIndicator` per function of `GROUPS`, as TA-Lib lists them."""
    groups = talib.get_function_groups()
    return [TalibIndicator(name) for group in GROUPS for name in groups.get(group, ())]
