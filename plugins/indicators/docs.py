"""docs/INDICATORS.md, generated from the registry (the test suite checks the file is up to date).

    python -m ml_processing.plugins.indicators.docs > docs/INDICATORS.md
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterable

from ml_processing.sdk.indicator import Indicator
from ml_processing.sdk.talib_functions import parameter_ranges

from .talib_indicators import EXCLUDED, GROUPS

HEADER = """# Indicators

Every indicator the built-in `indicators` plugin registers, generated from the registry by
`python -m ml_processing.plugins.indicators.docs` (a test fails when this file is out of date). All but two
are TA-Lib's, registered from TA-Lib's own metadata and computed by TA-Lib, in batch (`POST
/api/v1/indicators`, op `compute`) and bar by bar through TA-Lib's stream handles (the live market state);
`ICHIMOKU` and `VWAP_SESSION` are the plugin's own (`plugins/indicators/custom.py`). Plugins add more through the
`register_indicators` hook; op `list` of service `indicators` reports whatever is registered.

{groups}

Output keys are `NAME_p1_p2...` with the parameter values in the order below, plus `.output` for indicators
with several outputs: `BBANDS_20_2_2_0.upperband`. The lookback is the number of bars before the first
value, at the default parameters. The bounds in brackets are TA-Lib's own range of each parameter (read from
its C metadata); a value outside them, or an integer that does not fit a C `int`, is refused with 400 naming
it (`indicators[0].params.timeperiod`).
"""


def _groups() -> str:
    excluded = "; ".join(f"{group} ({why})" for group, why in EXCLUDED.items())
    ma_type = parameter_ranges("MA")[1]
    ma_types = ", ".join(f"{value}={label}" for value, label in (ma_type.choices if ma_type else ()))
    return (f"Every TA-Lib group is here ({', '.join(GROUPS)}) except {excluded}. The math operators that read "
            "two series (`ADD`, `SUB`, `MULT`, `DIV`) read TA-Lib's default columns for them, `high` and `low`. "
            "Index outputs (`MAXINDEX`, `MININDEX`, `MINMAXINDEX`) are bar positions from the start of the "
            "series; live, a bar with a missing (null) input is not counted. A `matype` is one of TA-Lib's "
            f"moving averages: {ma_types}.")


def render(indicators: Iterable[Indicator]) -> str:
    by_group: dict[str, list[Indicator]] = {}
    for indicator in indicators:
        by_group.setdefault(indicator.group, []).append(indicator)
    lines = [HEADER.format(groups=textwrap.fill(_groups(), 110))]
    for group in sorted(by_group):
        lines += [f"## {group}", "", "| name | description | inputs | parameters | outputs | lookback |",
                  "| --- | --- | --- | --- | --- | ---: |"]
        for ind in sorted(by_group[group], key=lambda i: i.name):
            defaults = {p.name: p.default for p in ind.params}
            lines.append(f"| `{ind.name}` | {ind.doc} | {', '.join(ind.inputs)} | "
                         f"{', '.join(p.markdown() for p in ind.params) or '-'} | {', '.join(ind.outputs)} | "
                         f"{ind.lookback(defaults)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    from ml_processing.plugins.indicators import builtin_indicators

    sys.stdout.write(render(builtin_indicators()))
