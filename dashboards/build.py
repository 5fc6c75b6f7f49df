"""Dashboard specs to Grafana JSON, through grafanalib.

Layout is computed, never written by hand: each ``Row`` becomes a row header and its
panels flow left to right, wrapping at the grid width, so positions can neither overlap
nor leave the grid. Panel ids are assigned in order, so they are unique and stable from
one build to the next (the output is deterministic and diffs cleanly).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
    Dashboard,
    DashboardLink,
    GridPos,
    RowPanel,
    Stat,
    Table,
    TableSortByField,
    Template,
    Templating,
    Time,
    TimeSeries,
)

from agentwatch.dashboards.boards import DASHBOARDS
from agentwatch.dashboards.panels import (
    DATASOURCE,
    GRID_WIDTH,
    DashboardSpec,
    PanelSpec,
    Row,
    Variable,
    label_title,
)

TAG: Final = "agentwatch"
# Grafana 10.4/11: field-config panels, "range"/"instant" Prometheus targets.
SCHEMA_VERSION: Final = 39
REFRESH_ON_TIME_RANGE_CHANGE: Final = 2
SORT_ALPHABETICAL: Final = 1

JSON = dict[str, Any]


def render(spec: DashboardSpec) -> JSON:
    """The dashboard as Grafana's JSON model (plain dicts and lists)."""
    dashboard = Dashboard(
        title=spec.title,
        uid=spec.uid,
        description=spec.description,
        tags=[TAG, *spec.tags],
        panels=list(_layout(spec.rows)),
        templating=Templating(list=[_variable(v) for v in spec.variables]),
        time=Time(spec.time_from, "now"),
        timezone="utc",
        refresh="1m",
        graphTooltip=GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        schemaVersion=SCHEMA_VERSION,
        links=[
            DashboardLink(title="agentwatch dashboards", tags=[TAG], asDropdown=True,
                          includeVars=True, keepTime=True),
        ],
    )  # fmt: skip
    model: JSON = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    return model


def write_all(out: Path) -> list[Path]:
    """Write every dashboard of the catalog as ``<uid>.json`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in DASHBOARDS:
        path = out / f"{spec.uid}.json"
        path.write_text(json.dumps(render(spec), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


# --------------------------------------------------------------------------- layout


def _layout(rows: tuple[Row, ...]) -> Iterator[Any]:
    ids = itertools.count(1)
    y = 0
    for row in rows:
        yield RowPanel(title=row.title, id=next(ids), gridPos=GridPos(h=1, w=GRID_WIDTH, x=0, y=y))
        y += 1
        x = line_height = 0
        for spec in row.panels:
            if spec.width > GRID_WIDTH:
                raise ValueError(f"{spec.title}: wider than the grid ({spec.width})")
            if x + spec.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            yield _panel(spec, next(ids), GridPos(h=spec.height, w=spec.width, x=x, y=y))
            x += spec.width
            line_height = max(line_height, spec.height)
        y += line_height


# --------------------------------------------------------------------------- panels


def _panel(spec: PanelSpec, panel_id: int, grid: GridPos) -> Any:
    common: JSON = {
        "id": panel_id,
        "gridPos": grid,
        "title": spec.title,
        "description": spec.description,
        "dataSource": DATASOURCE,
        "targets": _targets(spec),
        "thresholds": spec.thresholds.to_json(),
        "links": [{"title": link.title, "url": link.url} for link in spec.links if not link.label],
    }
    if spec.kind == "stat":
        return Stat(
            **common,
            format=spec.unit,
            decimals=spec.decimals,
            color={"mode": "thresholds"},
            # Judged numbers fill their tile with the verdict; informational ones do not.
            colorMode="background" if spec.thresholds.graded else "value",
            graphMode="none",
            reduceCalc="lastNotNull",
            textMode="value",
            noValue=spec.no_value,
            timeFrom="now/d" if spec.today else None,
        )
    if spec.kind == "timeseries":
        return TimeSeries(
            **common,
            unit=spec.unit,
            thresholdsStyleMode="dashed" if spec.thresholds.graded else "off",
            stacking={"mode": "normal", "group": "A"} if spec.stack else {},
            fillOpacity=40 if spec.stack else 10,
            showPoints="never",
            tooltipMode="multi",
            tooltipSort="desc",
            axisSoftMin=0,
            legendCalcs=["mean", "max"],
            legendDisplayMode="table" if len(spec.queries) > 1 or spec.stack else "list",
            legendPlacement="right" if spec.width >= 12 else "bottom",
        )
    return Table(
        **common,
        unit=spec.unit,
        transformations=_table_transformations(spec),
        overrides=_table_overrides(spec),
        sortBy=[TableSortByField(displayName=spec.queries[0].column, desc=True)],
        filterable=False,
    )


def _targets(spec: PanelSpec) -> list[JSON]:
    return [
        {
            "refId": _ref(i),
            "datasource": DATASOURCE,
            "expr": query.expr,
            "legendFormat": query.legend,
            "instant": spec.instant,
            "range": not spec.instant,
            "format": "table" if spec.kind == "table" else "time_series",
            "editorMode": "code",
        }
        for i, query in enumerate(spec.queries)
    ]


def _ref(index: int) -> str:
    return chr(ord("A") + index)


def _table_transformations(spec: PanelSpec) -> list[JSON]:
    """Join the per-column instant queries on the row labels; title every column."""
    values = {f"Value #{_ref(i)}": q.column for i, q in enumerate(spec.queries)}
    labels = {label: label_title(label) for label in spec.row_labels}
    # Grafana orders by the original field names, then renames.
    order = [*labels, *values]
    return [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True},
                "renameByName": {**labels, **values},
                "indexByName": {name: i for i, name in enumerate(order)},
            },
        },
    ]


def _table_overrides(spec: PanelSpec) -> list[JSON]:
    overrides = []
    for query in spec.queries:
        properties: list[JSON] = [{"id": "unit", "value": query.unit or spec.unit}]
        if query.decimals is not None:
            properties.append({"id": "decimals", "value": query.decimals})
        if query.thresholds is not None:
            properties += [
                {"id": "thresholds",
                 "value": {"mode": "absolute", "steps": query.thresholds.to_json()}},
                {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            ]  # fmt: skip
        overrides.append({"matcher": {"id": "byName", "options": query.column},
                          "properties": properties})  # fmt: skip
    for label in dict.fromkeys(link.label for link in spec.links if link.label):
        links = [{"title": link.title, "url": link.url} for link in spec.links
                 if link.label == label]  # fmt: skip
        overrides.append({
            "matcher": {"id": "byName", "options": label_title(label)},
            "properties": [{"id": "links", "value": links}],
        })  # fmt: skip
    return overrides


# --------------------------------------------------------------------------- variables


def _variable(variable: Variable) -> JSON:
    if variable.textbox:
        template = Template(name=variable.name, label=variable.label, query=variable.query,
                            default=variable.query, type="textbox")  # fmt: skip
        current: JSON = {"selected": False, "text": variable.query, "value": variable.query}
    else:
        template = Template(
            name=variable.name, label=variable.label, query=variable.query,
            dataSource=DATASOURCE, includeAll=variable.include_all, multi=variable.multi,
            allValue=".*" if variable.include_all else None,
            refresh=REFRESH_ON_TIME_RANGE_CHANGE, sort=SORT_ALPHABETICAL,
        )  # fmt: skip
        # All by default; a single-agent picker starts on the first agent Grafana finds.
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
        if not variable.include_all:
            current = {}
    model: JSON = template.to_json_data()
    return {**model, "current": current, "description": variable.description,
            "definition": variable.query}  # fmt: skip
