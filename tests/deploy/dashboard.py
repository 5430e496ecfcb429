"""What the Grafana dashboard asks Prometheus, read out of its JSON: every PromQL expression (panel targets,
annotations, template variables), Grafana's variables replaced, parsed into the series it selects, the
labels it matches on and the labels it groups by."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/ml-processing.json"

#: Grafana's own variables in a range or a subquery, and durations that stand in for them.
BUILTIN_DURATIONS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
#: A dashboard variable (``$actor``, ``${actor}``) in a label matcher: any value.
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
#: ``label_values(SELECTOR, label)`` of a query variable.
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # (label, op, value), op one of = != =~ !~


@dataclass
class Query:
    where: str
    expr: str
    selectors: list[Selector] = field(default_factory=list)
    groupings: list[tuple[list[str], list[str]]] = field(default_factory=list)  # (by labels, series below)


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every query the dashboard sends: targets, annotations, variables."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} target {target.get('refId')}", target.get("expr", "")
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = LABEL_VALUES.match(variable["query"]["query"])
            assert found, f"variable {variable['name']}: only label_values(SELECTOR, label) is expected"
            yield f"variable {variable['name']}", f"group by ({found['label']}) ({found['selector']})"


def interpolate(expr: str) -> str:
    """The expression as Grafana sends it: its variables replaced (dashboard variables match anything)."""
    for name, duration in BUILTIN_DURATIONS.items():
        expr = expr.replace(name, duration)
    return VARIABLE.sub(".*", expr)


def parse(where: str, expr: str) -> Query:
    """The series, matchers and groupings of one expression (promql-parser: the Rust crate's PromQL grammar)."""
    import promql_parser as promql

    ops = {int(promql.MatchOp.Equal): "=", int(promql.MatchOp.NotEqual): "!=", int(promql.MatchOp.Re): "=~",
           int(promql.MatchOp.NotRe): "!~"}
    query = Query(where, expr)

    def selectors_below(node: Any) -> list[Selector]:
        found: list[Selector] = []

        def visit(n: Any) -> None:
            if isinstance(n, promql.VectorSelector):
                found.append(Selector(n.name, [(m.name, ops[int(m.op)], m.value) for m in n.matchers.matchers]))

        promql.walk(node, visit)
        return found

    def visit(node: Any) -> None:
        if isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            query.groupings.append((list(node.modifier.labels), [s.name for s in selectors_below(node.expr)]))

    root = promql.parse(interpolate(expr))
    query.selectors = selectors_below(root)
    promql.walk(root, visit)
    return query
