"""The blast radius as a picture: agent -> servers -> tools, coloured by risk tier and approval.

A tool's fill is its risk tier; its border and edge say whether it runs with no person involved (solid
red) or needs an approval (dashed grey). Denied tools are not drawn; each server says how many it has.
Self-contained SVG with presentation attributes only (no <style>, no script): the console's
Content-Security-Policy allows no inline styles, and the file opens as it is in any browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from html import escape

from gateway.privilege.blast_radius import BlastRadius
from gateway.privilege.reach import ToolReach

RISK_FILL = {"read": "#d9f2d9", "write": "#fff0c2", "privileged": "#ffd8b0", "destructive": "#f8c4c4"}
VERDICT_STROKE = {"allow": ("#b00020", "2.5", ""), "step_up": ("#555555", "1.5", "6 4")}
WIDTH = 980
ROW = 30
TOP = 70
AGENT_X, AGENT_W = 20, 200
SERVER_X, SERVER_W = 290, 230
TOOL_X, TOOL_W = 600, 360
BOX_H = 22
LEGEND_H = 80


def blast_svg(blast: BlastRadius) -> str:
    """The picture of one agent's blast radius (UTF-8 SVG text)."""
    reach = blast.reach
    reachable = [t for t in reach.tools if t.verdict in VERDICT_STROKE]
    servers: dict[str, list[ToolReach]] = {}
    for tool in sorted(reachable, key=lambda t: (t.server_id, t.tool)):
        servers.setdefault(tool.server_id, []).append(tool)
    denied: dict[str, int] = {}
    for tool in reach.by_verdict("deny"):
        denied[tool.server_id] = denied.get(tool.server_id, 0) + 1
    rows = max(len(reachable), 1)
    height = TOP + rows * ROW + LEGEND_H
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13" role="img" '
             f'aria-label="{_x(_caption(blast))}">',
             f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
             f'<text x="20" y="26" font-size="16" font-weight="bold">{_x(_title(blast))}</text>',
             f'<text x="20" y="48" fill="#333333">{_x(_caption(blast))}</text>']
    agent_y = TOP + rows * ROW / 2 - BOX_H / 2
    parts.extend(_servers_and_tools(servers, denied, agent_y))
    parts.append(_box(AGENT_X, agent_y, AGENT_W, reach.agent_id, "#e3ecff", "#1f3c88", "2", "", "agent"))
    if not reachable:
        parts.append(f'<text x="{SERVER_X}" y="{TOP + 15}" fill="#555555">nothing is reachable: every tool is '
                     "denied</text>")
    parts.extend(_legend(height - LEGEND_H + 20))
    parts.append("</svg>")
    return "\n".join(parts)


def _servers_and_tools(servers: dict[str, list[ToolReach]], denied: dict[str, int], agent_y: float) -> Iterator[str]:
    row = 0
    for server_id, tools in servers.items():
        first_y = TOP + row * ROW
        server_y = first_y + (len(tools) - 1) * ROW / 2
        yield _edge(AGENT_X + AGENT_W, agent_y + BOX_H / 2, SERVER_X, server_y + BOX_H / 2, "#1f3c88", "1.5", "")
        for tool in tools:
            y = TOP + row * ROW
            stroke, width, dash = VERDICT_STROKE[tool.verdict]
            yield _edge(SERVER_X + SERVER_W, server_y + BOX_H / 2, TOOL_X, y + BOX_H / 2, stroke, width, dash)
            yield _tool_box(tool, y)
            row += 1
        label = server_id + (f"  ({denied[server_id]} denied)" if denied.get(server_id) else "")
        yield _box(SERVER_X, server_y, SERVER_W, label, "#f0f0f0", "#444444", "1.5", "", "server")


def _tool_box(tool: ToolReach, y: float) -> str:
    stroke, width, dash = VERDICT_STROKE[tool.verdict]
    marks = [tool.risk]
    if tool.egress:
        marks.append("egress")
    if tool.verdict == "step_up":
        marks.append("needs approval")
    label = f"{tool.tool}  [{', '.join(marks)}]"
    hint = f"{tool.tool}: {tool.verdict}; policies: {', '.join(tool.policy_ids) or 'none'}"
    return (f'<g class="tool" data-tool="{_x(tool.tool)}" data-verdict="{tool.verdict}" data-risk="{_x(tool.risk)}">'
            f"<title>{_x(hint)}</title>"
            + _box(TOOL_X, y, TOOL_W, label, RISK_FILL.get(tool.risk, "#eeeeee"), stroke, width, dash, "")
            + "</g>")


def _box(x: float, y: float, width: float, label: str, fill: str, stroke: str, stroke_width: str, dash: str,
         kind: str) -> str:
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    marker = f' class="{kind}"' if kind else ""
    return (f'<g{marker}><rect x="{x}" y="{y:.1f}" width="{width}" height="{BOX_H}" rx="5" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{stroke_width}"{dashed}/>'
            f'<text x="{x + 8}" y="{y + 15.5:.1f}">{_x(_fit(label, width))}</text></g>')


def _edge(x1: float, y1: float, x2: float, y2: float, stroke: str, width: str, dash: str) -> str:
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<line x1="{x1}" y1="{y1:.1f}" x2="{x2}" y2="{y2:.1f}" stroke="{stroke}" stroke-width="{width}"'
            f"{dashed}/>")


def _legend(y: float) -> Iterator[str]:
    x = 20
    for tier, fill in RISK_FILL.items():
        yield f'<rect x="{x}" y="{y}" width="16" height="14" fill="{fill}" stroke="#444444"/>'
        yield f'<text x="{x + 22}" y="{y + 12}">{tier}</text>'
        x += 120
    yield _edge(20, y + 40, 70, y + 40, *VERDICT_STROKE["allow"])
    yield f'<text x="80" y="{y + 44}">runs with no person involved</text>'
    yield _edge(330, y + 40, 380, y + 40, *VERDICT_STROKE["step_up"])
    yield f'<text x="390" y="{y + 44}">needs a person&#8217;s approval</text>'


def _title(blast: BlastRadius) -> str:
    reach = blast.reach
    task = f" under task {reach.task_id}" if reach.task_id else ""
    return f"Blast radius of agent {reach.agent_id}{task}"


def _caption(blast: BlastRadius) -> str:
    chain = ("a sensitive read can be followed by egress without approval" if blast.possible_sensitive_then_egress
             else "no sensitive read -> egress path without approval")
    return (f"{len(blast.without_approval)} tool(s) without approval, {len(blast.approvals)} need approval, "
            f"{len(blast.egress)} egress; {chain}")


def _fit(label: str, width: float) -> str:
    most = int(width / 7.2)  # about 7 px per character at 13 px
    return label if len(label) <= most else label[: most - 1] + "\u2026"


def _x(text: str) -> str:
    return escape(text, quote=True)
