"""Merging what several actors or processes answered into one answer: the health and metrics fragments of
every actor (`merge_fragments`), the replies of every shard member to an op over every series
(`merge_replies`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def merge_fragments(into: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    """Merge an actor's health/metrics fragment: numbers add up, maps merge, lists extend.

    >>> merge_fragments({"a": {"n": 1}, "l": [1]}, {"a": {"n": 2, "m": True}, "l": [2]})
    {'a': {'n': 3, 'm': True}, 'l': [1, 2]}
    """
    for key, value in fragment.items():
        current = into.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merge_fragments(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            current.extend(value)
        elif (isinstance(current, (int, float)) and isinstance(value, (int, float))
              and not isinstance(current, bool) and not isinstance(value, bool)):
            into[key] = current + value
        elif isinstance(value, dict):
            into[key] = merge_fragments({}, value)
        elif isinstance(value, list):
            into[key] = list(value)
        else:
            into[key] = value
    return into


def merge_replies(replies: Sequence[Any]) -> Any:
    """The replies of every member to an op over every series, as one: lists are joined, maps merged
    (numbers add up, lists of names are joined without repeats), anything else is the first.

    >>> merge_replies([[1], [2, 3]]), merge_replies([{"series": 2, "keys": ["a"]}, {"series": 1, "keys": ["a"]}])
    ([1, 2, 3], {'series': 3, 'keys': ['a']})
    """
    if all(isinstance(r, list) for r in replies):
        return [item for reply in replies for item in reply]
    if all(isinstance(r, dict) for r in replies):
        merged: dict[str, Any] = {}
        for reply in replies:
            merge_fragments(merged, reply)
        for key, value in merged.items():  # a name every member lists is listed once
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                merged[key] = list(dict.fromkeys(value))
        return merged
    return replies[0]
