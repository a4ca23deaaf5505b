"""Every PromQL expression under deploy/ (dashboards and alert rules), and the metric
names each one reads: for the tests that keep them in step with worker/metrics.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"


@dataclass(frozen=True)
class DeployQuery:
    where: str  # "overview: Panel title [A]" or "alert ConsumerLagGrowing"
    expr: str


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[DeployQuery]:
    out = []
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel["targets"]:
                out.append(
                    DeployQuery(f"{name}: {panel['title']} [{target['refId']}]", target["expr"])
                )
        for variable in board.get("templating", {}).get("list", []):
            out.append(DeployQuery(f"{name}: variable {variable['name']}", variable["query"]))
    return out


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_queries() -> list[DeployQuery]:
    return [DeployQuery(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]


def all_queries() -> list[DeployQuery]:
    return dashboard_queries() + alert_queries()


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "by",
    "without",
    "group_left",
    "group_right",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (also Grafana's label_values(m, l)).

    Strings, label matchers, ranges and grouping clauses are cut away first; what is left
    that is a name and not a function call or a keyword is a metric."""
    label_values = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,.*\)\s*", expr)
    if label_values:
        return {label_values.group(1)}
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}
