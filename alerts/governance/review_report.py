"""An access review as one self-contained HTML page, with its plots inline.

Two plots (matplotlib, Agg, PNG embedded as data URIs so the page travels as one file):
tool calls per agent by tier, with the human-approved share of write and destructive
calls marked; and per agent how many approved models and tools went unused or were
used without approval. Below them, one section per agent with the lists behind the
numbers.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from agentwatch.alerts.governance.catalog import TOOL_TIERS
from agentwatch.alerts.governance.review import AgentReview, Review

_COLORS = {"read": "#8ab6d6", "write": "#f2a65a", "destructive": "#d1495b"}


def _png(fig: object) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def tier_plot(agents: list[AgentReview]) -> str:
    names = [a.agent_id for a in agents]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    left = [0.0] * len(names)
    for tier in TOOL_TIERS:
        calls = [a.tiers[tier].calls for a in agents]
        ax.barh(names, calls, left=left, color=_COLORS[tier], label=f"{tier} calls")
        left = [x + c for x, c in zip(left, calls, strict=True)]
    approved = [
        a.tiers["write"].human_approved + a.tiers["destructive"].human_approved for a in agents
    ]
    ax.scatter(approved, names, marker="|", s=200, color="black", label="human-approved writes")
    ax.set_xlabel("tool calls in the window")
    ax.set_title("Tool calls by tier")
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def privilege_plot(agents: list[AgentReview]) -> str:
    names = [a.agent_id for a in agents]
    series = {
        "approved, unused": [len(a.unused_models) + len(a.unused_tools) for a in agents],
        "used, unapproved": [len(a.unapproved_models) + len(a.unapproved_tools) for a in agents],
    }
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    height = 0.4
    for i, (label, values) in enumerate(series.items()):
        ax.barh([n + i * height for n in range(len(names))], values, height=height, label=label)
    ax.set_yticks([n + height / 2 for n in range(len(names))], names)
    ax.set_xlabel("models and tools")
    ax.set_title("Least privilege")
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def _list(items: list[str]) -> str:
    return ", ".join(html.escape(i) for i in items) or "&ndash;"


def _section(a: AgentReview) -> str:
    tiers = "".join(
        f"<tr><td>{t}</td><td>{a.tiers[t].calls}</td><td>{a.tiers[t].human_approved}</td></tr>"
        for t in TOOL_TIERS
    )
    escalations = "".join(
        f"<li>{html.escape(e.target)} ({html.escape(e.reason)}): {e.count}</li>"
        for e in a.escalations
    )
    return (
        f"<h2>{html.escape(a.agent_id)}</h2>"
        f"<p>risk {a.risk_tier}, owner {html.escape(a.owner)}, last review "
        f"{html.escape(a.last_review or 'never')}</p><ul>"
        f"<li>approved, never used: models {_list(a.unused_models)}; "
        f"tools {_list(a.unused_tools)}</li>"
        f"<li>used, not approved: models {_list(a.unapproved_models)}; "
        f"tools {_list(a.unapproved_tools)}</li></ul>"
        "<table><tr><th>tier</th><th>calls</th><th>human-approved</th></tr>"
        f"{tiers}</table><p>Escalation paths:</p><ul>{escalations or '<li>none</li>'}</ul>"
    )


def render_html(review: Review) -> str:
    agents = review.agents
    plots = (
        f'<img alt="tool calls by tier" src="{tier_plot(agents)}">'
        f'<img alt="least privilege" src="{privilege_plot(agents)}">'
        if agents
        else "<p>No agents to review.</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Access review</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "td,th{padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>Access review</h1><p>Events from {review.start:%Y-%m-%d %H:%M} to "
        f"{review.end:%Y-%m-%d %H:%M} UTC, {len(agents)} agents.</p>{plots}"
        + "".join(_section(a) for a in agents)
        + "</body></html>"
    )


def write_html(review: Review, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(review), encoding="utf-8")
