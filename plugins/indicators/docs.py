"""docs/INDICATORS.md, generated from the registry (the test suite checks the file is up to date).

    python -m ml_processing.plugins.indicators.docs > docs/INDICATORS.md
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from ml_processing.sdk.indicator import Indicator

HEADER = """# Indicators

Every indicator the built-in `indicators` plugin registers, generated from the registry by
`python -m ml_processing.plugins.indicators.docs` (a test fails when this file is out of date). All but two
are TA-Lib's, registered from TA-Lib's own metadata and computed by TA-Lib, in batch (`POST
/api/v1/indicators`, op `compute`) and bar by bar through TA-Lib's stream handles (the live market state);
`ICHIMOKU` and `VWAP_SESSION` are the plugin's own (`plugins/indicators/custom.py`). Plugins add more through the
`register_indicators` hook; op `list` of service `indicators` reports whatever is registered.

Output keys are `NAME_p1_p2...` with the parameter values in the order below, plus `.output` for indicators
with several outputs: `BBANDS_20_2_2_0.upperband`. The lookback is the number of bars before the first
value, at the default parameters.
"""


def render(indicators: Iterable[Indicator]) -> str:
    by_group: dict[str, list[Indicator]] = {}
    for indicator in indicators:
        by_group.setdefault(indicator.group, []).append(indicator)
    lines = [HEADER]
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
