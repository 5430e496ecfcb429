"""Every TA-Lib function of the indicator groups, registered from TA-Lib's own metadata.

The functions are TA-Lib's, listed by ``talib.get_function_groups()``; the adapter that computes them in
batch and through TA-Lib's stream handles is `ml_processing.sdk.talib_functions`.
"""

from __future__ import annotations

import talib

from ml_processing.sdk.indicator import Indicator
from ml_processing.sdk.talib_functions import TalibIndicator, TalibStream

__all__ = ["GROUPS", "TalibIndicator", "TalibStream", "talib_indicators"]

#: The TA-Lib groups that are indicators (candlestick patterns and math operators are not).
GROUPS: tuple[str, ...] = ("Overlap Studies", "Momentum Indicators", "Volume Indicators", "Volatility Indicators",
                           "Cycle Indicators", "Statistic Functions", "Price Transform")


def talib_indicators() -> list[Indicator]:
    """One `TalibIndicator` per function of `GROUPS`, as TA-Lib lists them."""
    groups = talib.get_function_groups()
    return [TalibIndicator(name) for group in GROUPS for name in groups.get(group, ())]
