"""Naming a registered thing in a request: ``"RSI"``, or ``{"name": "SMA", "params": {"timeperiod": 20}}``.

Indicators, patterns and any registry whose entries take parameters are asked for this way; an op declares
its list as ``list[Name | MySpec]`` with ``MySpec`` a `NamedSpec` subclass (its own docstring, its own
schema name). The entry's own `Param` declarations check the values.

>>> from ml_processing.core.ops import convert
>>> convert({"name": "SMA", "params": {"timeperiod": 20}}, NamedSpec).params
{'timeperiod': 20}
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from ml_processing.core.ops import Args

__all__ = ["Name", "NamedSpec", "Params"]

#: A registry entry's name, as the registry's `list` op names it (any case).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="a name, as op `list` names them")]
#: Parameter values by name, each checked against the entry's declared type and range.
Params = Annotated[dict[str, Any], msgspec.Meta(
    description="parameter name -> value; each is checked against the entry's declared type and range",
    extra_json_schema={"additionalProperties": {"type": "number"}})]


class NamedSpec(Args):
    """One entry of a request: its name and parameters (the defaults for those left out)."""

    name: Name
    params: Params | None = None
